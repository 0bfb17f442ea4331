"""The per-account task watcher: every task in flight learned from a few list queries."""

from __future__ import annotations

import asyncio
import time

import pytest

from prefect_wan.client import KeyframeVideoRequest
from prefect_wan.client.errors import AuthenticationError, PollTimeoutError, TaskExpiredError, TaskFailedError
from prefect_wan.client.polling import PollSchedule
from prefect_wan.client.watcher import TaskWatcher, shared_watcher
from prefect_wan.client.wire import TaskStatus
from tests.test_flows import FIRST, LAST

MODEL = "wan2.2-kf2v-flash"
QUICK = PollSchedule(
    initial_delay=0.01, interval=0.2, due_interval=0.05, max_interval=0.4, sweep_interval=2.0, expected_generation=0.3, jitter=0.1, deadline=60
)


async def submit_many(emulator, count: int) -> list[str]:
    async with emulator.credentials().get_client() as client:
        call = await client.build_create_call(await client.prepare(KeyframeVideoRequest(first_frame=FIRST, last_frame=LAST, resolution="480P")))
        return [(await client.send_create(call)).task_id for _ in range(count)]


def watcher(emulator, schedule: PollSchedule = QUICK) -> TaskWatcher:
    return TaskWatcher(emulator.credentials().get_client, schedule)


async def test_many_tasks_cost_a_few_queries_each(emulator):
    emulator.configure(running_seconds=0.3, pending_seconds=0.05)
    ids = await submit_many(emulator, 24)
    watching = watcher(emulator)
    statuses: list[str] = []

    async def on_status(status: str) -> None:
        statuses.append(status)

    started = time.monotonic()
    results = await asyncio.gather(*(watching.wait(t, model=MODEL, on_status=on_status if t == ids[-1] else None) for t in ids))
    assert [r.status for r in results] == [TaskStatus.SUCCEEDED] * 24 and all(r.video_url for r in results)
    assert statuses == ["RUNNING", "SUCCEEDED"]
    counters = emulator.counters()
    # 12 rounds of 2 running; a per-task poller at 0.2 s would need ~25 queries per task.
    assert counters.queries + counters.lists <= 3 * 24, counters
    assert counters.queries_by_task and max(counters.queries_by_task.values()) <= 3
    assert time.monotonic() - started < 12 * 0.35 + 3  # ends noticed promptly


async def test_failed_and_expired_tasks_end_with_their_errors(emulator):
    emulator.configure(running_seconds=0.2, pending_seconds=0.05)
    emulator.inject(op="task", action="fail", code="DataInspectionFailed", message="inappropriate")
    failing, fine = await submit_many(emulator, 2)
    watching = watcher(emulator)
    emulator.expire_task(fine)
    outcomes = await asyncio.gather(watching.wait(failing, model=MODEL), watching.wait(fine, model=MODEL), return_exceptions=True)
    assert isinstance(outcomes[0], TaskFailedError) and outcomes[0].code == "DataInspectionFailed"
    assert isinstance(outcomes[1], TaskExpiredError)


async def test_throttled_lists_are_waited_out_and_bad_keys_fail_every_waiter(emulator):
    emulator.configure(running_seconds=0.2, pending_seconds=0.05)
    (task_id,) = await submit_many(emulator, 1)
    emulator.inject(op="list", count=2, status=429, code="Throttling", message="Requests throttling triggered.", retry_after=0.3)
    result = await watcher(emulator).wait(task_id, model=MODEL)
    assert result.status is TaskStatus.SUCCEEDED and emulator.counters().faults_injected["list:error:Throttling"] == 2
    (other,) = await submit_many(emulator, 1)
    emulator.inject(op="list", status=401, code="InvalidApiKey", message="Invalid API-key provided.")
    with pytest.raises(AuthenticationError):
        await watcher(emulator).wait(other, model=MODEL)


async def test_a_task_past_its_deadline_raises(emulator):
    emulator.configure(running_seconds=30, pending_seconds=0.05)
    (task_id,) = await submit_many(emulator, 1)
    with pytest.raises(PollTimeoutError):
        await watcher(emulator, QUICK.model_copy(update={"deadline": 0.5})).wait(task_id, model=MODEL)


async def test_one_watcher_per_account_and_loop(emulator):
    credentials = emulator.credentials()
    key = credentials.resolved_api_key().get_secret_value()
    one = shared_watcher(key, credentials.endpoint, credentials.get_client, QUICK)
    assert shared_watcher(key, credentials.endpoint, credentials.get_client, QUICK) is one
    assert shared_watcher("sk-another-key", credentials.endpoint, credentials.get_client, QUICK) is not one


async def test_a_refused_list_falls_back_to_queries_by_id(emulator):
    emulator.configure(running_seconds=0.2, pending_seconds=0.05)
    (task_id,) = await submit_many(emulator, 1)
    emulator.inject(op="list", count=None, status=400, code="InvalidParameter", message="unexpected")
    result = await watcher(emulator).wait(task_id, model=MODEL)
    assert result.status is TaskStatus.SUCCEEDED and emulator.counters().queries >= 1
