"""The shipped deployments: scheduled runs really get created by a real Prefect server, and
``serve.py`` deploys exactly what ``prefect.yaml`` says."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import stop_process

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _prefect(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([PREFECT, "--no-prompt", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def scheduling_server(tmp_path_factory):
    """``prefect server start`` with its services (the test harness runs none), on loopback."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, (home / "server.log").read_text()[-3000:]
        time.sleep(0.5)
    yield api, env, home / "server.log"
    stop_process(server)
    log.close()


def test_deploying_prefect_yaml_gives_scheduled_runs(scheduling_server):
    api, env, server_log = scheduling_server

    _prefect(env, "work-pool", "create", "local-process", "--type", "process")
    _prefect(env, "gcl", "create", "wan-account", "--limit", "6")
    _prefect(env, "deploy", "--prefect-file", str(PREFECT_YAML), "--all")

    deployments = httpx.post(f"{api}/deployments/filter", json={}).raise_for_status().json()
    nightly = next(d for d in deployments if d["name"] == "nightly-keyframes")
    assert nightly["schedules"][0]["schedule"]["timezone"] == "Asia/Singapore"
    deadline = time.monotonic() + 90
    runs: list = []
    while time.monotonic() < deadline:
        runs = httpx.post(f"{api}/flow_runs/filter", json={"deployments": {"id": {"any_": [nightly["id"]]}}}).raise_for_status().json()
        if runs:
            break
        time.sleep(1)
    log = server_log.read_text()
    assert "Can't evaluate bulk DML" not in log, log[-3000:]
    assert runs and all(run["state_type"] == "SCHEDULED" for run in runs), log[-3000:]
    assert all(run["expected_start_time"][11:16] == "18:00" for run in runs)  # 02:00 in Singapore

    # serve.py after `prefect deploy` of the same prefect.yaml, on the same server: taken, not refused (422).
    log_path = server_log.parent / "serve.log"
    with log_path.open("wb") as log:
        serving = subprocess.Popen([sys.executable, "deployments/serve.py"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while "being served" not in log_path.read_text() and serving.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            assert serving.poll() is None and "being served" in log_path.read_text(), log_path.read_text()[-3000:]
        finally:
            stop_process(serving)
    assert "422" not in log_path.read_text() and "slug" not in log_path.read_text()
    deployments = httpx.post(f"{api}/deployments/filter", json={}).raise_for_status().json()
    nightly = next(d for d in deployments if d["name"] == "nightly-keyframes")
    assert [s["slug"] for s in nightly["schedules"]] == ["nightly"]


@pytest.mark.parametrize("where", [".", "deployments"])
def test_serve_py_starts_from_the_root_and_from_its_folder(where):
    script = "deployments/serve.py" if where == "." else "serve.py"
    done = subprocess.run([sys.executable, script, "--list"], cwd=ROOT / where, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["keyframes-batch/nightly-keyframes", "keyframes-to-video/keyframes-pair", "storyboard-published/storyboard-published"]


def test_serve_builds_what_prefect_yaml_declares():
    sys.path.insert(0, str(ROOT / "deployments"))
    try:
        from serve import build_deployments
    finally:
        sys.path.remove(str(ROOT / "deployments"))
    declared = {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    built = {d.name: d for d in build_deployments()}
    assert built.keys() == declared.keys()
    for name, spec in declared.items():
        deployment = built[name]
        assert deployment.parameters == spec.get("parameters", {})
        assert set(deployment.tags) == set(spec.get("tags", []))
        assert deployment.description == spec.get("description")
        crons = [(s.schedule.cron, s.schedule.timezone, s.slug) for s in deployment.schedules or []]
        assert crons == [(s["cron"], s.get("timezone"), s.get("slug")) for s in spec.get("schedules", [])]
        limit = deployment.concurrency_limit
        assert (getattr(limit, "limit", limit)) == spec.get("concurrency_limit")
        assert [t.expect for t in deployment.triggers] == [set(t["expect"]) for t in spec.get("triggers", [])]


def test_a_worker_of_the_pool_runs_the_deployed_pair_flow_against_the_emulator(scheduling_server, tmp_path):
    """From a fresh Prefect home: `prefect deploy` of the shipped prefect.yaml, the emulator's
    credentials saved under the block name the yaml uses (one command), and a process worker of the
    yaml's pool runs the pair deployment's flow run to an archived video."""
    api, env, server_log = scheduling_server

    for setup in (("work-pool", "create", "local-process", "--type", "process", "--overwrite"), ("gcl", "create", "wan-account", "--limit", "6")):
        subprocess.run([PREFECT, "--no-prompt", *setup], env=env, cwd=ROOT, capture_output=True, timeout=120)  # made by the test before, or now
    _prefect(env, "deploy", "--prefect-file", str(PREFECT_YAML), "--all")
    examples = ROOT / "prefect_wan" / "examples"
    port = _free_port()
    emulator_log = (tmp_path / "emulator.log").open("wb")
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect_wan.cli",
            "emulator",
            "--port",
            str(port),
            "--save-block",
            "wan-singapore",
            "--pending-seconds",
            "0.05",
            "--running-seconds",
            "0.3",
        ],
        env=env,
        stdout=emulator_log,
        stderr=subprocess.STDOUT,
    )
    worker_log = (tmp_path / "worker.log").open("wb")
    worker = None
    try:
        deadline = time.monotonic() + 60
        while httpx.get(f"{api}/block_types/slug/wan-credentials/block_documents/name/wan-singapore").status_code != 200:
            assert emulator.poll() is None and time.monotonic() < deadline, (tmp_path / "emulator.log").read_text()[-3000:]
            time.sleep(0.3)
        deployments = httpx.post(f"{api}/deployments/filter", json={}).raise_for_status().json()
        pair = next(d for d in deployments if d["name"] == "keyframes-pair")
        archive = tmp_path / "archive"
        parameters = {
            "first_frame": str(examples / "first.png"),
            "last_frame": str(examples / "last.png"),
            "destination": str(archive),
            "label": "from-the-pool",
        }
        run = httpx.post(f"{api}/deployments/{pair['id']}/create_flow_run", json={"parameters": parameters}).raise_for_status().json()
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "local-process", "--run-once"], env=env, cwd=ROOT, stdout=worker_log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 240
        state = None
        while time.monotonic() < deadline:
            state = httpx.get(f"{api}/flow_runs/{run['id']}").raise_for_status().json()["state"]["type"]
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(1)
        assert state == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
        assert len(list(archive.glob("*.mp4"))) == 1 and len(list(archive.glob("*.json"))) == 1
    finally:
        for process in (worker, emulator):
            if process is not None:
                stop_process(process)
        emulator_log.close()
        worker_log.close()
