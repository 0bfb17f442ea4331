"""A run that stops early cancels its queued tasks at the service and keeps the running ones for
the next run: cancelled through the Prefect API (under a real runner) or interrupted with Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelling

from prefect_wan.client.wire import TaskStatus
from prefect_wan.ledger.journal import AttemptState, SubmissionJournal
from tests.test_flows import FIRST, LAST

PAIRS = 6
SLOW = {"max_running": 2, "running_seconds": 120.0}


def _statuses(emulator) -> dict[TaskStatus, int]:
    counts: dict[TaskStatus, int] = {}
    for task in list(emulator.state.tasks.values()):
        counts[task.status] = counts.get(task.status, 0) + 1
    return counts


async def _wait_for(condition, what: str, timeout: float = 120.0, process=None, log=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"the process ended (exit {process.returncode}) before {what}: {out[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (f": {log.read_text()[-4000:]}" if log else "")
        await asyncio.sleep(0.2)


def _pair_dicts(seed: int) -> list[dict]:
    return [{"first_frame": FIRST, "last_frame": LAST, "prompt": f"shot {i}", "seed": seed + i, "label": f"c{seed}-{i}"} for i in range(PAIRS)]


async def _assert_queued_ones_canceled_and_nothing_sent_after(emulator) -> None:
    await _wait_for(lambda: _statuses(emulator).get(TaskStatus.CANCELED, 0) == PAIRS - 2, "the queued tasks to be canceled", 60)
    statuses = _statuses(emulator)
    assert statuses == {TaskStatus.CANCELED: PAIRS - 2, TaskStatus.RUNNING: 2}, statuses
    accepted = emulator.counters().submissions_accepted
    await asyncio.sleep(3)
    assert emulator.counters().submissions_accepted == accepted == PAIRS
    # The running tasks stay recorded for the next run to adopt; the canceled ones are not offered again.
    running = {t.task_id for t in emulator.state.tasks.values() if t.status is TaskStatus.RUNNING}
    ours = set(emulator.state.tasks)  # the session's journal also holds other tests' records
    journal = SubmissionJournal()
    records = [r for r in [await journal.read(name) for name in _record_keys(journal)] if r is not None and r.task_ids() & ours]
    current = {r.current.task_id for r in records if r.current is not None}
    canceled = {a.task_id for r in records for a in r.attempts if a.state is AttemptState.CANCELED}
    assert running <= current and len(canceled) == PAIRS - 2 and not canceled & current


def _record_keys(journal: SubmissionJournal) -> list[str]:
    return [name.rsplit("/", 1)[-1][: -len(".json")] for name in journal.fs.ls(journal.root, detail=False) if name.endswith(".json")]


async def test_cancelling_a_batch_cancels_its_queued_tasks(prefect_harness, emulator, tmp_path, runner):
    from prefect.deployments import arun_deployment

    process, log = runner
    emulator.configure(**SLOW)
    await emulator.credentials().save("wan-cancel-test", overwrite=True)
    async with get_client() as client:
        run = await arun_deployment(
            "keyframes-batch/cancel-test",
            timeout=0,
            parameters={
                "pairs": _pair_dicts(8100),
                "options": {"resolution": "480P"},
                "credentials": "wan-cancel-test",
                "destination": str(tmp_path / "archive"),
                "max_in_flight": PAIRS,
                "poll": {"initial_delay": 0.05, "interval": 0.2, "max_interval": 0.5, "jitter": 0},
            },
        )
        await _wait_for(
            lambda: emulator.counters().submissions_accepted == PAIRS and _statuses(emulator).get(TaskStatus.PENDING) == PAIRS - 2,
            "every pair to be submitted",
            120,
            log=log,
        )

        await client.set_flow_run_state(run.id, Cancelling(message="stop paying"), force=True)

        await _assert_queued_ones_canceled_and_nothing_sent_after(emulator)
        deadline = time.monotonic() + 60
        while not (state := (await client.read_flow_run(run.id)).state).is_final():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.5)
        assert state.is_cancelled(), state
        # This run's logs: the session's other runs can fill a first page of them all.
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        assert any("canceled 4 queued task(s) at the service" in entry.message and "2 already running will finish" in entry.message for entry in logs)


async def test_ctrl_c_cancels_the_queued_tasks_of_the_cli_run(prefect_harness, emulator, tmp_path):
    emulator.configure(**SLOW)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "DASHSCOPE_API_KEY": emulator.api_key}
    process = _cli_batch(emulator, tmp_path, 8200, env)
    try:
        await _wait_for(
            lambda: emulator.counters().submissions_accepted == PAIRS and _statuses(emulator).get(TaskStatus.PENDING) == PAIRS - 2,
            "every pair to be submitted",
            120,
            process,
        )
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, output[-3000:]
    assert "Interrupted" in output and "canceled 4 queued task(s) at the service" in output, output[-3000:]
    await _assert_queued_ones_canceled_and_nothing_sent_after(emulator)


def _own_server_of(pid: int) -> int | None:
    """The pid of the temporary Prefect server a command (``pid``) started, if it runs."""
    for proc in os.listdir("/proc"):
        if not proc.isdigit():
            continue
        try:
            argv = open(f"/proc/{proc}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 2 and argv[1].endswith(b"server_process.py") and argv[2] == str(pid).encode():
            return int(proc)
    return None


def _cli_batch(emulator, tmp_path, seed: int, env: dict[str, str], *, own_session: bool = False) -> subprocess.Popen:
    """``prefect-wan batch`` over PAIRS new pairs against the emulator, output piped; with
    ``own_session``, in a process group of its own, as a terminal starts it."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"pairs": _pair_dicts(seed)}))
    command = [sys.executable, "-m", "prefect_wan.cli", "batch", str(manifest), "--base-url", emulator.base_url, "--region", "singapore"]
    command += ["--resolution", "480P", "--dest", str(tmp_path / "archive"), "--max-in-flight", str(PAIRS)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=own_session)


def _cli_on_its_own_server(emulator, tmp_path, seed: int) -> subprocess.Popen:
    """``prefect-wan batch`` with no Prefect server configured, as a terminal starts it."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path / "home"), "DASHSCOPE_API_KEY": emulator.api_key}
    return _cli_batch(emulator, tmp_path, seed, env, own_session=True)


async def test_ctrl_c_at_a_terminal_leaves_the_commands_own_server_up_for_the_crash_hook(emulator, tmp_path):
    """A terminal's Ctrl-C reaches its whole foreground group: the command's temporary server must
    not die of it before the run's crash hook and last logs have used it."""
    emulator.configure(**SLOW)
    process = _cli_on_its_own_server(emulator, tmp_path, 8300)
    try:
        await _wait_for(lambda: emulator.counters().submissions_accepted == PAIRS, "every pair to be submitted", 120, process)
        server = _own_server_of(process.pid)
        assert server is not None
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, output[-3000:]
    assert "Interrupted: canceled 4 queued task(s) at the service" in output, output[-3000:]
    assert "Unable to connect" not in output and "EventsWorker" not in output and "Traceback" not in output, output[-3000:]
    await _wait_for(lambda: _statuses(emulator).get(TaskStatus.CANCELED, 0) == PAIRS - 2, "the queued tasks to be canceled", 30)
    await _wait_for(lambda: not os.path.exists(f"/proc/{server}"), "the temporary server to end with the command", 15)


async def test_the_commands_own_server_ends_when_the_command_is_killed(emulator, tmp_path):
    emulator.configure(**SLOW)
    process = _cli_on_its_own_server(emulator, tmp_path, 8400)
    try:
        await _wait_for(lambda: _own_server_of(process.pid) is not None, "the temporary server to start", 60, process)
        server = _own_server_of(process.pid)
        process.kill()  # no chance to stop it
        process.wait(timeout=10)
        await _wait_for(
            lambda: not os.path.exists(f"/proc/{server}") or open(f"/proc/{server}/stat").read().split()[2] == "Z", "the orphaned server to end", 15
        )
    finally:
        if process.poll() is None:
            process.kill()
