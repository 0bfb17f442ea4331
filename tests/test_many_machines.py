"""Exactly once across machines: each "machine" is a process with its own PREFECT_HOME; they share
a real Prefect server, a real Redis server (the submit lock) and S3 on loopback (moto's server)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fsspec
import pytest
import yaml
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL

from prefect_wan.archive.record import ArchiveRecord
from prefect_wan.blocks import WanCoordination
from prefect_wan.blocks.coordination import CoordinationError
from prefect_wan.client.polling import PollSchedule
from prefect_wan.flows import GenerationOptions, KeyframePair, keyframes_batch
from tests.helpers import RedisServer, stop_process
from tests.test_flows import FIRST, LAST

ROOT = Path(__file__).resolve().parent.parent
POLL = {"initial_delay": 0.05, "interval": 0.2, "max_interval": 0.5, "jitter": 0}


async def _shared(emulator, s3, redis_server, name: str) -> tuple[str, dict]:
    """Saved credentials and coordination blocks, as a deployment's workers would load them."""
    bucket, storage = s3
    await emulator.credentials().asave(f"{name}-credentials", overwrite=True)
    await WanCoordination(
        submissions_url=f"s3://{bucket}/prefect-wan/submissions",
        submissions_storage_options=storage,
        redis_url=redis_server.url,
        many_machines=True,
        lock_hold_seconds=60,
    ).asave(f"{name}-coordination", overwrite=True)
    return bucket, storage


def _machine(home, code: str) -> subprocess.Popen:
    """A process with a PREFECT_HOME of its own, as a container or another host would have."""
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _redis_set_calls(server: RedisServer) -> int:
    import redis

    return int(redis.Redis.from_url(server.url).info("commandstats").get("cmdstat_set", {}).get("calls", 0))


def _held_locks(server: RedisServer) -> list[bytes]:
    import redis

    return redis.Redis.from_url(server.url).keys("lock:prefect-wan-submit-*")


def _valid_archives(bucket: str, storage: dict, prefix: str) -> list[ArchiveRecord]:
    fs = fsspec.filesystem("s3", **storage)
    fs.invalidate_cache()
    records = [ArchiveRecord.model_validate(json.loads(fs.cat_file(path))) for path in fs.glob(f"{bucket}/{prefix}/*.json")]
    for record in records:
        assert fs.size(record.video.path) == record.video.bytes
    return records


async def test_two_machines_given_one_manifest_pay_for_each_pair_once(prefect_harness, emulator, s3, redis_server, tmp_path):
    bucket, storage = await _shared(emulator, s3, redis_server, "two")
    emulator.configure(running_seconds=1.0)
    manifest = tmp_path / "manifest.yaml"
    pairs = [{"first_frame": FIRST, "last_frame": LAST, "prompt": f"shot {i}", "seed": 9600 + i, "label": f"m{i}"} for i in range(6)]
    manifest.write_text(yaml.safe_dump({"pairs": pairs}))
    code = f"""
        import asyncio
        from prefect_wan.flows import GenerationOptions, keyframes_batch
        asyncio.run(keyframes_batch(manifest={str(manifest)!r}, options=GenerationOptions(resolution="480P"), credentials="two-credentials",
                    destination="s3://{bucket}/archive", storage_options={storage!r}, coordination="two-coordination", poll={POLL!r}))
    """
    lock_calls = _redis_set_calls(redis_server)
    machines = [_machine(tmp_path / f"home-{n}", code) for n in (1, 2)]
    outputs = [m.communicate(timeout=300)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    assert emulator.counters().submissions_accepted == 6
    records = _valid_archives(bucket, storage, "archive")
    assert sorted(r.label for r in records) == [f"m{i}" for i in range(6)]
    assert len({r.task_id for r in records}) == 6
    assert _redis_set_calls(redis_server) - lock_calls >= 6  # every submission took the Redis lock...
    assert _held_locks(redis_server) == []  # ...and gave it back (not left to its hold timeout)
    # Neither machine kept anything of it at home: the records are in the shared store.
    assert not any((tmp_path / f"home-{n}" / "prefect-wan" / "submissions").exists() for n in (1, 2))
    assert len(fsspec.filesystem("s3", **storage).glob(f"{bucket}/prefect-wan/submissions/*.json")) == 6


async def test_a_pair_killed_mid_poll_resumes_on_another_machine(prefect_harness, emulator, s3, redis_server, tmp_path):
    bucket, storage = await _shared(emulator, s3, redis_server, "moved")
    emulator.configure(running_seconds=120)
    code = f"""
        import asyncio
        from prefect_wan.flows import GenerationOptions, keyframes_to_video
        asyncio.run(keyframes_to_video({FIRST!r}, {LAST!r}, prompt="evicted", options=GenerationOptions(resolution="480P", seed=9700),
                    credentials="moved-credentials", destination="s3://{bucket}/archive", storage_options={storage!r},
                    coordination="moved-coordination", poll={POLL!r}))
    """
    first = _machine(tmp_path / "home-a", code)
    deadline = time.monotonic() + 120
    while not (emulator.counters().submissions_accepted == 1 and emulator.counters().queries + emulator.counters().lists >= 2):
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()[-3000:] if first.stdout else ""
        await asyncio.sleep(0.2)
    first.kill()  # the pod is evicted...
    first.wait()
    shutil.rmtree(tmp_path / "home-a")  # ...and its disk is gone with it
    emulator.configure(running_seconds=0.2)

    second = _machine(tmp_path / "home-b", code)
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output[-3000:]
    assert emulator.counters().submissions_accepted == 1
    (record,) = _valid_archives(bucket, storage, "archive")
    assert record.task_id == next(iter(emulator.state.tasks))


async def test_with_redis_down_a_run_is_refused_before_submitting(prefect_harness, emulator, tmp_path, s3):
    bucket, storage = s3
    stopped = RedisServer(tmp_path).start()
    stopped.stop()
    coordination = WanCoordination(
        submissions_url=f"s3://{bucket}/subs", submissions_storage_options=storage, redis_url=f"redis://:hunter2@127.0.0.1:{stopped.port}/0", many_machines=True
    )
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt="x", seed=9800)]
    with pytest.raises(CoordinationError, match=rf"cannot reach the submit lock's Redis server at redis://127.0.0.1:{stopped.port}/0") as refused:
        await keyframes_batch(
            pairs=pairs,
            options=GenerationOptions(resolution="480P"),
            credentials=emulator.credentials(),
            destination=str(tmp_path / "archive"),
            coordination=coordination,
        )
    assert "hunter2" not in str(refused.value) and "nothing was submitted" in str(refused.value)
    assert emulator.counters().api_requests == 0


async def test_several_machines_with_state_on_one_is_refused(prefect_harness, emulator, tmp_path):
    with pytest.raises(CoordinationError, match=r"configured for several machines.*PREFECT_HOME.*Set submissions_url to a shared store"):
        await keyframes_batch(
            pairs=[KeyframePair(first_frame=FIRST, last_frame=LAST, seed=9801)],
            credentials=emulator.credentials(),
            destination=str(tmp_path),
            coordination=WanCoordination(many_machines=True),
        )
    assert emulator.counters().api_requests == 0


@pytest.fixture
def two_workers(prefect_harness, tmp_path):
    """A process work pool and two workers on it, each with a PREFECT_HOME of its own."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async def create_pool() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="wan-fan-out", type="process"), overwrite=True)

    asyncio.run(create_pool())
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_HEARTBEAT_SECONDS": "5"}
    prefect = str(Path(sys.executable).with_name("prefect"))
    workers, homes = [], []
    for n in (1, 2):
        home = tmp_path / f"worker-{n}"
        homes.append(home)
        log = (tmp_path / f"worker-{n}.log").open("w")
        workers.append(
            (
                subprocess.Popen(
                    [prefect, "worker", "start", "--pool", "wan-fan-out", "--type", "process", "--limit", "3", "--name", f"w{n}"],
                    env={**env, "PREFECT_HOME": str(home)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=str(ROOT),
                ),
                log,
            )
        )

    async def both_polling() -> None:
        # A worker slow to start would leave every run to the other one.
        async with get_client() as client:
            for _ in range(120):
                if {w.name for w in await client.read_workers_for_work_pool("wan-fan-out")} >= {"w1", "w2"}:
                    return
                await asyncio.sleep(0.5)
        raise AssertionError("the two workers did not start polling within 60 s")

    asyncio.run(both_polling())
    yield homes, [tmp_path / f"worker-{n}.log" for n in (1, 2)]
    for process, log in workers:
        stop_process(process, timeout=30)
        log.close()


async def test_a_batch_fans_out_over_the_workers_of_a_pool(prefect_harness, emulator, s3, redis_server, two_workers):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    homes, logs = two_workers
    bucket, storage = await _shared(emulator, s3, redis_server, "fan")
    emulator.configure(running_seconds=1.0)
    async with get_client() as client:
        flow_id = await client.create_flow_from_name("keyframes-to-video")
        await client.create_deployment(
            flow_id=flow_id,
            name="fan-out",
            work_pool_name="wan-fan-out",
            entrypoint="prefect_wan.flows.keyframes:keyframes_to_video",
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}],
        )
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"fan {i}", seed=9900 + i, label=f"fan-{i}") for i in range(6)]
    # One of them is refused by this run's own preflight: it never reaches a worker.
    pairs.append(KeyframePair(first_frame=FIRST, last_frame=LAST, prompt="bad", seed=-1, label="fan-bad"))

    state = await keyframes_batch(
        pairs=pairs,
        options=GenerationOptions(resolution="480P"),
        credentials="fan-credentials",
        coordination="fan-coordination",
        destination=f"s3://{bucket}/archive",
        storage_options=storage,
        poll=PollSchedule(**POLL),
        fan_out="keyframes-to-video/fan-out",
        return_state=True,
    )

    assert state.is_failed(), [log.read_text()[-2000:] for log in logs]
    result = await state.aresult(raise_on_failure=False)
    assert "6 archived (0 already there), 1 failed" in str(result) and "fan-bad" in str(result)
    assert emulator.counters().submissions_accepted == 6, emulator.counters()
    assert len(_valid_archives(bucket, storage, "archive")) == 6
    async with get_client() as client:
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    completed = {child.parameters["label"] for child in children if child.state_type == StateType.COMPLETED}
    assert completed == {f"fan-{i}" for i in range(6)}, [(child.name, child.state_name, child.state and child.state.message) for child in children]
    # The pool's workers ran them: each run is in a worker's log. Which worker takes which run is
    # Prefect's choice (at 3.6, one worker may take them all).
    logged = "".join(log.read_text() for log in logs)
    ran = [child for child in children if child.state_type == StateType.COMPLETED]
    assert all(str(child.id) in logged or child.name in logged for child in ran), logged[-3000:]


def test_one_command_creates_the_account_limits(prefect_harness):
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    for running in (3, 4):  # creates, then updates
        done = subprocess.run(
            [sys.executable, "-m", "prefect_wan.cli", "limits", "wan-shared-account", "--running", str(running), "--submits-per-second", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return (
                await client.read_global_concurrency_limit_by_name("wan-shared-account"),
                await client.read_global_concurrency_limit_by_name("wan-shared-account-submit"),
            )

    concurrency, rate = asyncio.run(read())
    assert concurrency.limit == 4 and rate.limit == 1 and rate.slot_decay_per_second == 1.0


async def test_a_run_on_container_infrastructure_with_local_state_is_warned(prefect_harness, emulator, tmp_path, monkeypatch, caplog):
    import prefect_wan.flows.setup as pipeline

    async def on_kubernetes():
        return "media-k8s", "kubernetes"

    monkeypatch.setattr(pipeline, "_work_pool_of_this_run", on_kubernetes)
    state = await keyframes_batch(
        pairs=[KeyframePair(first_frame=FIRST, last_frame=LAST, seed=9990)],
        options=GenerationOptions(resolution="480P"),
        credentials=emulator.credentials(),
        destination=str(tmp_path),
        poll=PollSchedule(**POLL),
        return_state=True,
    )
    assert state.is_completed()
    warning = next(r.getMessage() for r in caplog.records if "work pool 'media-k8s' (type kubernetes)" in r.getMessage())
    assert r"would pay for the same pairs again" in warning and "PREFECT_WAN_COORDINATION" in warning
