"""Prefect where its users are: a run's link printed when a server is configured, and a failing
pair's whole reason on its one line."""

from __future__ import annotations

import json
import os
import subprocess

import yaml
from prefect.settings import PREFECT_API_URL

from tests.test_first_ten_minutes import CLI
from tests.test_flows import FIRST, LAST, read_artifacts


def test_a_run_on_a_configured_server_says_its_name_and_a_failing_pair_its_whole_reason(prefect_harness, emulator, tmp_path):
    manifest = tmp_path / "linked.yaml"
    (tmp_path / "broken.png").write_bytes(b"not a picture\nat all")  # there, so only reading it finds it wrong
    pairs = [
        {"first_frame": FIRST, "last_frame": LAST, "prompt": "fine", "label": "fine", "seed": 5300},
        {"first_frame": str(tmp_path / "broken.png"), "last_frame": LAST, "prompt": "broken", "label": "broken", "seed": 5301},
    ]
    manifest.write_text(yaml.safe_dump({"pairs": pairs}))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "DASHSCOPE_API_KEY": emulator.api_key}
    region = emulator.credentials().region
    args = ["batch", str(manifest), "--base-url", emulator.base_url, "--region", region, "--resolution", "480P", "--dest", str(tmp_path / "a")]
    done = subprocess.run(CLI + args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert "Run wan-batch-linked" in done.stderr, done.stderr[-3000:]
    broken = next(line for line in done.stderr.splitlines() if line.startswith("broken: failed"))
    assert "first_frame=" in broken and "not a readable image" in broken, broken  # the reason, not only "1 problem(s):"


def test_a_missing_frame_and_a_wrong_option_in_a_manifest_are_refused_together_before_anything_starts(tmp_path):
    manifest = tmp_path / "two.yaml"
    manifest.write_text(yaml.safe_dump({"pairs": [{"first_frame": FIRST, "last_frame": str(tmp_path / "gone.png"), "resolution": "999P"}]}))
    done = _refused(["batch", str(manifest), "--emulator"], tmp_path)
    assert done.returncode == 2 and "last_frame=" in done.stderr and ": no such file" in done.stderr and "999P" in done.stderr, done.stderr
    assert "emulator" not in done.stderr.lower()


async def test_the_emulator_saves_its_block_and_a_deployment_runs_the_example_manifest_against_it(prefect_harness, runner, tmp_path):
    """One command sets up the deployments against the emulator; a served deployment (a real runner
    process) runs the shipped example manifest, unedited, through it."""
    import asyncio
    import socket
    import time
    from pathlib import Path

    from prefect.client.orchestration import get_client
    from prefect.deployments import arun_deployment

    from prefect_wan.blocks import WanCredentials
    from tests.helpers import stop_process

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    args = ["emulator", "--port", str(port), "--save-block", "wan-emulated", "--pending-seconds", "0.05", "--running-seconds", "0.3"]
    server = subprocess.Popen(CLI + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                block = await WanCredentials.aload("wan-emulated")
                break
            except ValueError:
                assert server.poll() is None and time.monotonic() < deadline
                await asyncio.sleep(0.3)
        assert block.base_url is not None and str(port) in str(block.base_url)
        manifest = Path(__file__).resolve().parent.parent / "deployments" / "manifests" / "example.yaml"
        run = await arun_deployment(
            "keyframes-batch/cancel-test",
            timeout=0,
            parameters={"manifest": str(manifest), "credentials": "wan-emulated", "destination": str(tmp_path / "archive"), "options": {"resolution": "480P"}},
        )
        async with get_client() as client:
            deadline = time.monotonic() + 180
            while not (state := (await client.read_flow_run(run.id)).state) or not state.is_final():
                assert time.monotonic() < deadline, state
                await asyncio.sleep(0.5)
        assert state.is_completed(), state
        assert len(list((tmp_path / "archive").glob("*.mp4"))) == 2  # sunrise and sunset
    finally:
        stop_process(server)


def test_every_name_the_readme_imports_is_importable_where_it_says():
    import importlib
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    imports = [
        (m, n) for block in blocks for m, names in re.findall(r"^\s*from (prefect_wan[\w.]*) import ([^\n(]+)$", block, re.MULTILINE) for n in names.split(",")
    ]
    assert len(imports) >= 5
    missing = [f"{module}.{name.strip()}" for module, name in imports if not hasattr(importlib.import_module(module), name.strip().split(" as ")[0])]
    assert missing == [], missing


def _refused(args: list[str], tmp_path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), "DASHSCOPE_API_KEY": "sk-never-sent"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(CLI + args, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def test_what_a_new_user_gets_wrong_is_refused_in_one_line_before_anything_starts(tmp_path):
    """A broken manifest, a budget in another currency than the region's prices, an archive that
    cannot be made and a protocol whose package is missing: each one line, exit 2, no server and no
    emulator announced (nothing was started for them)."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("pairs:\n  - first_frame: a.png\n    last_frame: [b.png\n")
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"pairs": [{"first_frame": FIRST, "last_frame": LAST}]}))
    cases = {
        "not valid YAML: line 4, column 1: expected ',' or ']'": ["batch", str(broken), "--emulator"],
        "wan2.2-kf2v-flash in beijing is priced in CNY: give the budget in CNY": [
            "batch",
            str(good),
            "--emulator",
            "--region",
            "beijing",
            "--max-cost",
            "5 EUR",
        ],
        "cannot write to the archive /proc/x: no such folder, and it cannot be made there": ["generate", FIRST, LAST, "--emulator", "--dest", "/proc/x"],
        "Please install gcsfs to access Google Storage (pip install gcsfs, beside prefect-wan)": ["generate", FIRST, LAST, "--emulator", "--dest", "gs://b/x"],
    }
    for says, args in cases.items():
        done = _refused(args, tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.strip().splitlines() == [f"Refused before sending: {done.stderr.split(': ', 1)[1].strip()}"], done.stderr
        assert says in done.stderr and "emulator" not in done.stderr.lower() and "Traceback" not in done.stderr, done.stderr


def test_no_storage_credentials_never_suggests_keys_in_storage_options():
    from prefect_wan.archive.destination import explain_storage_error

    class NoCredentialsError(Exception):
        pass

    said = explain_storage_error(NoCredentialsError("Unable to locate credentials"))
    assert "profile" in said and "RemoteFileSystem" in said and "never keys in storage_options" in said
    assert "storage_options (key, secret)" not in said


async def test_links_the_ui_cannot_open_are_shown_as_paths_and_the_batch_table_keeps_manifest_order(prefect_harness):
    from prefect_wan.flows.models import BatchResult, PairFailure, PairSkip
    from prefect_wan.flows.reporting import link, report_batch

    assert link("video", "/data/a.mp4") == "`/data/a.mp4` (on the machine that archived it)"
    assert link("video", "file:///data/a.mp4") == "`file:///data/a.mp4` (on the machine that archived it)"
    assert link("video", "s3://b/a.mp4", "https://b.s3/a.mp4?sig") == "[video](https://b.s3/a.mp4?sig)"
    assert link("video", "s3://b/a.mp4") == "[video](s3://b/a.mp4)"
    reason = "PreflightError: request refused before sending (1 problem(s)):\n  - first_frame: no such file " + "x" * 400
    result = BatchResult(
        failures=[PairFailure(label="c", error="PreflightError", message=reason)],
        skipped=[PairSkip(label="a", reason="over budget")],
        dropped=["b"],
        unsubmitted=["d"],
        outage="503 since 12:00",
    )
    await report_batch(result, key="wan-batch-ordered", order=["d", "c", "b", "a"])
    data = (await read_artifacts())["wan-batch-ordered"].data
    rows = json.loads(data) if isinstance(data, str) else data
    assert [row["label"] for row in rows] == ["d", "c", "b", "a"]
    assert [row["status"] for row in rows] == ["not sent", "failed", "dropped in review", "skipped for budget"]
    assert "\n" not in rows[1]["detail"] and rows[1]["detail"].endswith("x" * 400)  # the whole reason, on one line


def test_the_model_parameter_names_every_model_in_the_ui():
    from prefect_wan.client.catalog import lookup_model
    from prefect_wan.flows.models import GenerationOptions

    described = GenerationOptions.model_fields["model"].description or ""
    for model in ("wan2.2-kf2v-flash", "wanx2.1-kf2v-plus", "wan2.1-kf2v-plus", "wan2.7-i2v", "wan3.0-video", "wan3.0-video-prime"):
        assert lookup_model(model) is not None and model in described


def test_an_emulator_run_says_an_unpublished_price_once_and_plan_finds_what_it_archived(tmp_path):
    manifest = tmp_path / "one.yaml"
    manifest.write_text(yaml.safe_dump({"pairs": [{"first_frame": FIRST, "last_frame": LAST, "label": "one", "seed": 5400}]}))
    dest = ["--dest", str(tmp_path / "archive")]
    done = _refused(["batch", str(manifest), "--emulator", *dest], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line for line in done.stderr.splitlines() if "no published price" in line]
    assert said == ["wan2.2-kf2v-flash has no published price in singapore (beijing has one): its costs are not estimated"], done.stderr
    assert "unknown committed" not in done.stderr + done.stdout
    planned = _refused(["plan", str(manifest), "--emulator", "--json", *dest], tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert [p["action"] for p in json.loads(planned.stdout)["pairs"]] == ["archived"]


def test_a_prefect_server_that_cannot_serve_on_its_fastapi_is_named_in_one_line(monkeypatch):
    import importlib.metadata

    from prefect_wan.cli.server import TemporaryServer, TemporaryServerError, server_conflict

    real = importlib.metadata.version
    installed = {"prefect": "3.7.4", "fastapi": "0.150.0"}
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed.get(name) or real(name))
    assert server_conflict() == (
        "Prefect 3.7.4's server does not run on fastapi 0.150.0: pip install 'fastapi<0.137' beside it, or set PREFECT_API_URL to a running server"
    )
    try:
        TemporaryServer()
    except TemporaryServerError as error:
        assert str(error) == server_conflict()
    else:
        raise AssertionError("a server that cannot serve was started")
    installed.update(fastapi="0.136.3")
    assert server_conflict() is None
    installed.update(prefect="3.9.0", fastapi="0.150.0")
    assert server_conflict() is None


def test_pairs_waiting_for_review_have_not_ended_in_the_progress_shown():
    from rich.console import Console

    from prefect_wan.cli.display import render
    from prefect_wan.flows.pipeline import PairProgress
    from prefect_wan.flows.progress import RunProgress
    from prefect_wan.spend.budget import SpendLedger

    progress = RunProgress(
        "batch of 3", [PairProgress(label=name, stage=stage) for name, stage in (("a", "review"), ("b", "review"), ("c", "done"))], SpendLedger()
    )
    assert progress.fraction_done == 1 / 3
    assert "1/3 done, 0 generating, 0 queued, 2 waiting for review" in progress.line()
    console = Console(width=160, record=True)
    console.print(render(progress))
    shown = console.export_text()
    assert "1/3 ended" in shown and "in review" in shown, shown


async def test_a_stopped_run_counts_what_it_archived_as_done_not_as_work_for_the_next_run():
    from prefect_wan.flows.cancellation import StoppedTasks, _stop, note_archived

    note_archived("task-archived")
    report = StoppedTasks()
    assert await _stop(None, "task-archived", report) == "archived"  # type: ignore[arg-type]  # not even queried
    said = report.describe()
    assert "1 already archived" in said and "next run" not in said and "task-archived" not in said


async def test_an_emulator_rendering_says_so_in_its_sidecar_its_artifact_and_ls(prefect_harness, emulator, tmp_path):
    from tests.test_flows import generate

    video = await generate(emulator, 5500, str(tmp_path / "archive"), label="emulated")
    sidecar = json.loads((tmp_path / "archive" / video.sidecar_url.rsplit("/", 1)[1]).read_text())
    assert sidecar["probe"]["rendered_by"] == "the prefect-wan emulator"
    assert "**rendered by the prefect-wan emulator**, not by the Wan model" in (await read_artifacts())["wan-emulated-prompts"].data
    listed = subprocess.run(CLI + ["ls", str(tmp_path / "archive"), "--json"], capture_output=True, text=True, timeout=120)
    assert json.loads(listed.stdout)["entries"][0]["rendered_by"] == "the prefect-wan emulator"
    table = subprocess.run(CLI + ["ls", str(tmp_path / "archive")], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert "(emulator)" in table.stdout, table.stdout


def test_tasks_waiting_at_the_service_count_as_queued_not_generating(monkeypatch):
    from prefect_wan.flows import progress as progress_module
    from prefect_wan.flows.pipeline import PairProgress
    from prefect_wan.flows.progress import RunProgress
    from prefect_wan.spend.budget import SpendLedger

    seen = {"t1": "RUNNING", "t2": "RUNNING", "t3": "PENDING", "t4": "PENDING"}
    monkeypatch.setattr(progress_module, "service_status", seen.get)
    pairs = [PairProgress(label=f"p{i}", task_id=f"t{i}", stage="generating") for i in range(1, 5)]
    assert RunProgress("batch of 4", pairs, SpendLedger()).line().startswith("0/4 done, 2 generating, 2 queued")
