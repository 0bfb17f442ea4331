"""Shared fixtures: keyframe images, a fake key, and (lazily) the Prefect harness, the emulator and S3."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
# A home of our own: result storage, cache records and submit locks must not leak between sessions.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-wan-tests-")

from prefect.testing.fixtures import asserting_events_worker, reset_worker_events  # noqa: E402,F401

from tests.helpers import FAKE_KEY, make_image  # noqa: E402,F401


def pytest_sessionstart(session) -> None:
    """Say which end of the supported range this run is on (CI runs the newest and the floor), quiet or not."""
    from importlib.metadata import version

    names = ("prefect", "fastapi", "pydantic", "sqlalchemy", "prefect-redis")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("prefect-wan tested on " + ", ".join(f"{name} {version(name)}" for name in names))


@pytest.fixture
def fake_key() -> str:
    return FAKE_KEY


@pytest.fixture
def frames(tmp_path):
    """A first and last frame on disk (3:4, like the reference's 750x1000 example)."""
    first = tmp_path / "first.png"
    last = tmp_path / "last.jpg"
    first.write_bytes(make_image(480, 640, (220, 60, 30)))
    last.write_bytes(make_image(480, 640, (30, 60, 220), fmt="JPEG"))
    return first, last


@pytest.fixture(scope="session")
def prefect_harness():
    """One real temporary Prefect server (SQLite) for the whole session, started on first use."""
    from prefect.settings import PREFECT_API_SERVICES_TRIGGERS_ENABLED, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_API_SERVICES_TRIGGERS_ENABLED: False}):
        with prefect_test_harness(server_startup_timeout=120):
            yield


FAST = {"pending_seconds": 0.05, "running_seconds": 0.2, "submit_rps": 1000.0, "tick_seconds": 0.02}


@pytest.fixture(scope="session")
def emulator_server():
    from prefect_wan.emulator import run_emulator

    with run_emulator(**FAST) as emu:
        yield emu


@pytest.fixture
def emulator(emulator_server):
    """The session's emulator, reset to fast defaults with no faults armed (and no outage remembered)."""
    from prefect_wan.client.outage import forget_outages

    forget_outages()
    emulator_server.reset()
    emulator_server.configure(**FAST, max_running=None, queue_limit=500, task_ttl_seconds=86400, video_ttl_seconds=86400, video_file=None)
    yield emulator_server
    emulator_server.clear_faults()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server on loopback (moto), not a mock of s3fs."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, request):
    """A fresh bucket and the fsspec storage options that reach it."""
    import boto3

    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_server, "region_name": "us-east-1"}}
    bucket = "wan-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(
        Bucket=bucket
    )
    yield bucket, options


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real Redis server for the session (the distributed submit lock), not a fake."""
    from tests.helpers import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def runner(prefect_harness, tmp_path):
    """A real Prefect runner serving the batch flow (deployment ``keyframes-batch/cancel-test``), in
    its own process, as a deployment would run; yielded once the deployment exists."""
    import subprocess
    import sys
    import textwrap
    import time

    import httpx
    from prefect.settings import PREFECT_API_URL

    from tests.helpers import stop_process

    script = textwrap.dedent("""
        from prefect_wan.flows import keyframes_batch
        keyframes_batch.serve(name="cancel-test")
    """)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = (tmp_path / "runner.log").open("w+")
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while httpx.get(f"{PREFECT_API_URL.value()}/deployments/name/keyframes-batch/cancel-test").status_code != 200:
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "runner.log").read_text()[-3000:]
        time.sleep(0.5)
    yield process, tmp_path / "runner.log"
    stop_process(process)
    log.close()
