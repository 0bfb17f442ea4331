"""What the CLI shows: a live progress display on a terminal (checked in a pseudo-terminal), plain
lines when piped, and ``prefect-wan ls`` over an archive's sidecars."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest
import yaml
from prefect.settings import PREFECT_API_URL

from tests.test_flows import FIRST, LAST

CLI = [sys.executable, "-m", "prefect_wan.cli"]


def _manifest(path, seed: int, count: int = 3):
    pairs = [{"first_frame": FIRST, "last_frame": LAST, "prompt": f"shot {i}", "seed": seed + i, "label": f"view-{seed}-{i}"} for i in range(count)]
    path.write_text(yaml.safe_dump({"pairs": pairs}))
    return path


def _batch_args(emulator, manifest, dest) -> list[str]:
    return CLI + ["batch", str(manifest), "--base-url", emulator.base_url, "--region", "singapore", "--resolution", "480P", "--dest", str(dest)]


def _env(emulator) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "DASHSCOPE_API_KEY": emulator.api_key}


def _run_in_pty(args: list[str], env: dict[str, str], timeout: float = 180.0) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as its stdin, stdout and stderr; all it wrote, and its exit code."""
    master, slave = pty.openpty()
    process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm-256color", "COLUMNS": "120"}, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the other side closed: the process ended
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    return process.returncode, b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_live_display(prefect_harness, emulator, tmp_path):
    emulator.configure(running_seconds=1.5)
    code, output = _run_in_pty(_batch_args(emulator, _manifest(tmp_path / "m.yaml", 9100), tmp_path / "out"), _env(emulator))
    assert code == 0, output[-3000:]
    # rich redraws in place: cursor movement and line erasure, and the table's columns.
    assert "\x1b[1A" in output or "\x1b[2K" in output, output[-2000:]
    for column in ("done", "generating", "queued", "failed", "skipped", "ETA", "spend"):
        assert column in output
    assert "3/3" in output and "progress:" not in output


def test_piped_output_gets_plain_progress_lines(prefect_harness, emulator, tmp_path):
    emulator.configure(running_seconds=1.5)
    done = subprocess.run(
        _batch_args(emulator, _manifest(tmp_path / "m.yaml", 9200), tmp_path / "out"), env=_env(emulator), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("progress: ")]
    assert lines and lines[-1].startswith("progress: 3/3 done, 0 generating, 0 queued, 0 failed, 0 skipped")
    assert "\x1b[" not in done.stderr and "\x1b[" not in done.stdout


@pytest.fixture
def archive(prefect_harness, emulator, tmp_path):
    dest = tmp_path / "out"
    done = subprocess.run(
        _batch_args(emulator, _manifest(tmp_path / "m.yaml", 9300, count=2), dest), env=_env(emulator), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dest


def test_ls_lists_the_archive_from_its_sidecars(archive):
    listed = subprocess.run(CLI + ["ls", str(archive), "--json"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)["entries"]
    assert sorted(e["label"] for e in entries) == ["view-9300-0", "view-9300-1"]
    first = entries[0]
    assert first["kind"] == "video" and first["model"] == "wan2.2-kf2v-flash" and first["seconds"] == pytest.approx(5, abs=0.2)
    assert first["width"] > 0 and first["video_url"].endswith(".mp4") and first["prompt"].startswith("shot ")
    table = subprocess.run(CLI + ["ls", str(archive)], capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert table.returncode == 0 and "view-9300-1" in table.stdout and "2 archived in" in table.stdout

    # A damaged sidecar is named, never skipped in silence; files that are not ours are ignored.
    (archive / "broken.json").write_text('{"producer": "prefect-wan", "fingerprint": 3}')
    (archive / "other.json").write_text('{"hello": "world"}')
    damaged = subprocess.run(CLI + ["ls", str(archive), "--json"], capture_output=True, text=True, timeout=60)
    report = json.loads(damaged.stdout)
    assert damaged.returncode == 1 and len(report["entries"]) == 2 and report["unreadable"][0]["path"].endswith("broken.json")


def test_ls_of_a_missing_archive_says_so(tmp_path):
    missing = subprocess.run(CLI + ["ls", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no archive at" in missing.stderr
