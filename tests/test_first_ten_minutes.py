"""What a new user meets first: tiers in any case, help that is not cut when piped, a plan that
starts no Prefect server and says "unknown" rather than 0, the bundled emulator reused across runs,
a create the service refused every time reported as the service's own error, times in UTC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prefect.settings import PREFECT_API_URL

from prefect_wan.client import KeyframeVideoRequest
from prefect_wan.client.errors import ServerError
from prefect_wan.flows import GenerationOptions, KeyframePair
from tests.test_flows import FIRST, LAST, generate

CLI = [sys.executable, "-m", "prefect_wan.cli"]


def _quiet_env(**extra: str) -> dict[str, str]:
    """The environment of a new user's shell: no Prefect server configured."""
    return {**{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}, **extra}


def test_resolution_tiers_are_read_in_any_case():
    assert GenerationOptions(resolution="720p").resolution == "720P"
    assert KeyframePair(first_frame="a.png", resolution=" 1080p ").resolution == "1080P"
    assert KeyframeVideoRequest(first_frame="a.png", resolution="480p").resolution == "480P"


def test_help_is_not_cut_when_piped():
    done = subprocess.run(CLI + ["generate", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "wan2.2-kf2v-flash," in done.stdout and "…" not in done.stdout


def test_plan_starts_no_server_says_unknown_and_exits_2_when_a_pair_is_refused(tmp_path):
    manifest = tmp_path / "m.yaml"
    pairs = [{"first_frame": FIRST, "last_frame": LAST, "label": "ok", "seed": 1}, {"first_frame": FIRST, "last_frame": LAST, "label": "bad", "seed": -1}]
    manifest.write_text(yaml.safe_dump({"pairs": pairs}))
    started = time.monotonic()
    done = subprocess.run(CLI + ["plan", str(manifest), "--dest", str(tmp_path / "a")], env=_quiet_env(), capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    assert "temporary server" not in (done.stdout + done.stderr).lower() and elapsed < 20
    summary = " ".join(done.stdout.split())
    # wan2.2-kf2v-flash has no published Singapore price: its cost is unknown, never 0.
    assert "estimated cost unknown (1 pair(s) with no published price)" in summary and "1 refused" in summary


def test_unknown_spend_reads_as_not_estimated():
    from prefect_wan.archive.record import CostEstimate
    from prefect_wan.spend import SpendLedger

    ledger = SpendLedger()
    ledger.commit("a", CostEstimate(billed_seconds=5))
    assert ledger.describe() == "not estimated"  # the command said which price is not published, once
    ledger.commit("b", CostEstimate(amount=0.5, currency="USD"))
    assert ledger.describe() == "0.5 USD committed (nothing billed), 1 submission(s) with no published price left out"


def test_the_emulator_command_prints_the_key_it_takes():
    process = subprocess.Popen(CLI + ["emulator", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(3)] if process.stdout else []
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert any("api_key='sk-emulator-" in line for line in lines), lines


def test_two_emulator_runs_in_one_folder_reuse_the_video(prefect_harness, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    frames = Path(FIRST).parent
    args = CLI + ["generate", str(frames / "first.png"), str(frames / "last.png"), "--emulator", "--resolution", "480p", "--seed", "7"]
    first = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    second = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    assert "already archived" in second.stdout
    listed = subprocess.run(CLI + ["ls", "wan-archive", "--json"], cwd=tmp_path, env=_quiet_env(), capture_output=True, text=True, timeout=60)
    assert len(json.loads(listed.stdout)["entries"]) == 1


async def test_a_create_refused_every_time_raises_the_services_own_error(prefect_harness, emulator, frames):
    from prefect_wan.tasks import submit_video

    emulator.inject(op="submit", status=503, code="ServiceUnavailable", message="The service is busy.", count=3)
    request = KeyframeVideoRequest(first_frame=str(frames[0]), last_frame=str(frames[1]), resolution="480P", seed=2301)
    with pytest.raises(ServerError) as info:
        await submit_video.with_options(retries=0)(request, emulator.credentials())
    error = info.value
    assert error.code == "ServiceUnavailable" and error.status_code == 503 and error.request_id and error.retryable
    assert "was answered HTTP 503" in str(error) and "nothing was paid" in str(error)
    # One create per try: the task's own retries (after their backoff) send the next ones, and an
    # outage stops them (tests/test_review_money.py).
    assert emulator.counters().submissions_accepted == 0 and emulator.counters().submissions_rejected == 1


async def test_sidecar_times_are_all_utc(prefect_harness, emulator, tmp_path):
    video = await generate(emulator, 2311, str(tmp_path))
    sidecar = json.loads(Path(video.sidecar_url.removeprefix("file://")).read_text())
    times = [sidecar[k] for k in ("submitted_at", "scheduled_at", "finished_at", "archived_at") if sidecar.get(k)]
    assert len(times) == 4 and all(t.endswith("Z") for t in times), times


def _foreign_database(home: Path) -> Path:
    """A Prefect home whose database a newer Prefect migrated (a revision this one does not know)."""
    import sqlite3

    home.mkdir(parents=True, exist_ok=True)
    database = home / "prefect.db"
    with sqlite3.connect(database) as connection:
        connection.execute("create table alembic_version (version_num varchar(32) not null)")
        connection.execute("insert into alembic_version values ('0000feedf00d')")  # a revision no Prefect has
    return database


def test_a_database_of_another_prefect_version_is_named_in_one_line(tmp_path):
    database = _foreign_database(tmp_path / "home")
    env = _quiet_env(PREFECT_HOME=str(tmp_path / "home"))
    env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    done = subprocess.run(CLI + ["generate", FIRST, LAST, "--emulator", "--dest", str(tmp_path / "a")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("Using the local emulator") and "no published price" not in line]
    assert len(lines) <= 2 and str(database) in " ".join(lines) and "PREFECT_HOME" in " ".join(lines), lines


def test_a_temporary_server_that_cannot_start_is_one_line_that_names_why(tmp_path):
    # The database's folder does not exist: the command's temporary server dies while it starts.
    env = _quiet_env(PREFECT_HOME=str(tmp_path / "home"), PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path}/missing/prefect.db")
    done = subprocess.run(CLI + ["generate", FIRST, LAST, "--emulator", "--dest", str(tmp_path / "a")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("Using the local emulator") and "no published price" not in line]
    assert "TemporaryServerError" in lines[0] and "unable to open database file" in lines[0], lines
    assert "PREFECT_API_URL" in lines[0] and "^^^" not in lines[0], lines
    # The pair the command sent while Prefect loaded: what became of it, in one more line.
    assert len(lines) == 2 and lines[1].startswith("Not taken by the run: the first pair, sent before the run started"), lines


def test_the_demo_runs_beside_a_database_of_another_prefect_version(tmp_path):
    database = _foreign_database(tmp_path / "user" / ".prefect")
    before = database.read_bytes()
    env = _quiet_env(HOME=str(tmp_path / "user"))
    env.pop("PREFECT_HOME", None)
    work = tmp_path / "checkout"
    work.mkdir()
    done = subprocess.run([sys.executable, "-m", "prefect_wan.demo"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Archived" in done.stdout and database.read_bytes() == before and (work / ".prefect-demo").is_dir()
    assert "temporary server" not in done.stdout + done.stderr  # its own server, started and stopped without a word
