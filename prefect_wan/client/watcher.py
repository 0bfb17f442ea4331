"""One status watcher per account: every task in flight watched with a handful of queries.

Querying each task on its own costs one query per task per gap: 500 tasks in the service's queue at
a 15 s gap is 33 queries/s, over the account's 20. The watcher instead asks the list API which
tasks are RUNNING (one page: an account runs 2-5 at once) and queries a task by id only when it
has ended: it left the RUNNING list, or a younger task is running while it was never seen to run.
Tasks the list cannot show are swept now and then, and queried by id as a last resort.

The tick adapts: slow while nothing can end, quick around the time an end is due (learned from the
tasks that finished), backing off on 429 and 5xx with the service's Retry-After.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Awaitable, Callable, Optional

from prefect_wan.client.errors import (
    AccessDeniedError,
    ArrearsError,
    AuthenticationError,
    DashScopeError,
    PollTimeoutError,
    ThrottledError,
)
from prefect_wan.client.polling import PollSchedule, final_result
from prefect_wan.client.results import VideoResult
from prefect_wan.client.wire import LIST_WINDOW, ListedTask, TaskResponse, TaskStatus

if TYPE_CHECKING:
    from prefect_wan.client.client import DashScopeClient

logger = logging.getLogger("prefect_wan.watcher")

ClientFactory = Callable[[], "DashScopeClient"]
StatusListener = Callable[[str], Awaitable[None]]
# Tasks of the list API are created within its window; look this far before the oldest submission.
WINDOW_SLACK = timedelta(minutes=2)
LIST_PAGE = 100
# Oldest never-seen-running tasks queried by id per tick while nothing of their model runs.
PROBES_PER_TICK = 2
# Tasks queried by id per tick while the list cannot be used.
FALLBACK_PER_TICK = 5


@dataclass
class _Watched:
    task_id: str
    model: str
    submitted_at: datetime
    deadline: float
    future: asyncio.Future
    listeners: list[StatusListener] = field(default_factory=list)
    status: str = "PENDING"
    running_since: Optional[float] = None  # monotonic time we first saw it RUNNING
    created_ms: Optional[int] = None
    missing_url: int = 0
    probed_at: float = 0.0


class TaskWatcher:
    """Watches tasks of one account (host, workspace, key) for every waiter of this event loop."""

    def __init__(self, make_client: ClientFactory, schedule: Optional[PollSchedule] = None) -> None:
        self._make_client = make_client
        self.client: Optional[DashScopeClient] = None
        self.loop = asyncio.get_running_loop()
        self.schedule = schedule or PollSchedule()
        self._watched: dict[str, _Watched] = {}
        self._runner: Optional[asyncio.Task] = None
        self._wake = asyncio.Event()
        self._generation: Optional[float] = None  # learned seconds from RUNNING to the end
        self._last_sweep = time.monotonic()
        self._error_gap = self.schedule.interval
        self.queries = 0  # every call made, for benchmarks and tests
        self._rng = random.Random()

    # --- waiters -----------------------------------------------------------------------------

    async def wait(
        self,
        task_id: str,
        *,
        model: str,
        submitted_at: Optional[datetime] = None,
        on_status: Optional[StatusListener] = None,
    ) -> VideoResult:
        """Until the task is final: its video (SUCCEEDED) or its error (FAILED, CANCELED, UNKNOWN)."""
        watched = self._watched.get(task_id)
        if watched is None:
            watched = _Watched(
                task_id=task_id,
                model=model,
                submitted_at=submitted_at or datetime.now(timezone.utc),
                deadline=time.monotonic() + self.schedule.deadline,
                future=asyncio.get_running_loop().create_future(),
            )
            self._watched[task_id] = watched
        if on_status is not None:
            watched.listeners.append(on_status)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="prefect-wan-watcher")
        self._wake.set()
        return await asyncio.shield(watched.future)

    @property
    def in_flight(self) -> int:
        return len(self._watched)

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        self.client = self._make_client()
        try:
            await self._loop()
        except Exception as error:  # a bug here must fail the waiters, never leave them hanging
            logger.exception("task watcher stopped")
            self._fail_all(error)
        finally:
            client, self.client = self.client, None
            await client.aclose()

    async def _loop(self) -> None:
        await asyncio.sleep(self.schedule.initial_delay)
        while self._watched:
            try:
                await self._tick()
                self._error_gap = self.schedule.interval
                delay = self._next_delay()
            except DashScopeError as error:
                if not error.retryable:
                    self._fail_all(error)
                    return
                retry_after = error.retry_after if isinstance(error, ThrottledError) else None
                delay = retry_after or self._error_gap
                self._error_gap = min(self._error_gap * 2, self.schedule.max_error_gap)
                logger.warning("task watcher: %s; asking again in %.1f s", error, delay)
            self._expire_deadlines()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass

    def _next_delay(self) -> float:
        schedule = self.schedule
        running = [w for w in self._watched.values() if w.running_since is not None]
        quick = min(schedule.due_interval, schedule.interval)
        if not running:
            delay = schedule.interval  # nothing can end before it has started
        else:
            expected = self._generation or schedule.expected_generation
            now = time.monotonic()
            soonest = min(w.running_since + expected for w in running)  # type: ignore[operator]
            until_due = soonest - now
            if until_due > quick:
                delay = min(until_due - quick, schedule.interval)  # sleep until just before it is due
            else:
                # Due or overdue: quick, then easing off as it runs late, so a slow task costs little.
                late = max(0.0, -until_due)
                delay = min(quick * (1 + late / max(expected, 1e-3) * 4), schedule.max_interval)
        return max(0.01, delay * (1 + self._rng.uniform(-schedule.jitter, schedule.jitter)))

    async def _tick(self) -> None:
        try:
            await self._tick_by_list()
        except DashScopeError as error:
            if error.retryable or isinstance(error, (AuthenticationError, AccessDeniedError, ArrearsError)):
                raise
            # The list refused us (a 400 we did not foresee): ask the oldest tasks by id instead.
            logger.warning("task watcher: the task list failed (%s); querying tasks by id", error)
            for watched in sorted(self._watched.values(), key=lambda w: w.submitted_at)[:FALLBACK_PER_TICK]:
                await self._check(watched)

    async def _tick_by_list(self) -> None:
        models = sorted({w.model for w in self._watched.values()})
        running_ids: set[str] = set()
        oldest_running: dict[str, int] = {}
        for model in models:
            for row in await self._list(model=model, status="RUNNING"):
                running_ids.add(row.task_id)
                if row.gmt_create is not None:
                    oldest_running[model] = min(oldest_running.get(model, row.gmt_create), row.gmt_create)
                watched = self._watched.get(row.task_id)
                if watched is not None:
                    watched.created_ms = row.gmt_create or watched.created_ms
                    if watched.running_since is None:
                        watched.running_since = time.monotonic()
                    await self._set_status(watched, "RUNNING")
        ended: list[_Watched] = []
        now = time.monotonic()
        probes: dict[str, int] = {}
        for watched in sorted(self._watched.values(), key=lambda w: w.submitted_at):
            if watched.task_id in running_ids:
                continue
            if watched.running_since is not None:
                ended.append(watched)  # it was running and is no longer
            elif self._overtaken(watched, oldest_running.get(watched.model)):
                ended.append(watched)
            elif watched.model not in oldest_running and probes.get(watched.model, 0) < PROBES_PER_TICK and now - watched.probed_at >= self.schedule.interval:
                # Nothing of its model runs: it has not started yet, or it ran between two ticks.
                probes[watched.model] = probes.get(watched.model, 0) + 1
                watched.probed_at = now
                ended.append(watched)
        if time.monotonic() - self._last_sweep >= self.schedule.sweep_interval:
            ended.extend(await self._sweep(exclude={w.task_id for w in ended} | running_ids))
        for watched in ended:
            await self._check(watched)

    def _overtaken(self, watched: _Watched, oldest_running_ms: Optional[int]) -> bool:
        """Never seen running, yet a task created after it runs: it ran (quickly) or failed."""
        if oldest_running_ms is None:
            return False
        created = watched.created_ms or int(watched.submitted_at.timestamp() * 1000)
        return created < oldest_running_ms

    async def _sweep(self, exclude: set[str]) -> list[_Watched]:
        """Every task's status from the list (paged); the ended ones, and those it cannot show."""
        self._last_sweep = time.monotonic()
        pending = [w for w in self._watched.values() if w.task_id not in exclude]
        if not pending:
            return []
        since = max(min(w.submitted_at for w in pending) - WINDOW_SLACK, datetime.now(timezone.utc) - LIST_WINDOW)
        seen: dict[str, ListedTask] = {}
        for model in sorted({w.model for w in pending}):
            for listed in await self._list(model=model, start_time=since):
                seen[listed.task_id] = listed
        ended = []
        for watched in pending:
            found = seen.get(watched.task_id)
            if found is None:
                ended.append(watched)  # not visible in the window: ask it by id
                continue
            watched.created_ms = found.gmt_create or watched.created_ms
            if found.status in ("PENDING", "RUNNING"):
                if found.status == "RUNNING" and watched.running_since is None:
                    watched.running_since = time.monotonic()
                await self._set_status(watched, found.status)
            else:
                ended.append(watched)
        return ended

    async def _list(self, *, model: str, status: Optional[str] = None, start_time: Optional[datetime] = None) -> list[ListedTask]:
        rows: list[ListedTask] = []
        page = 1
        while True:
            self.queries += 1
            assert self.client is not None
            listing = await self.client.list_tasks(model_name=model, status=status, start_time=start_time, page_no=page, page_size=LIST_PAGE)
            rows.extend(listing.data)
            if page >= listing.total_page or not listing.data:
                return rows
            page += 1

    async def _check(self, watched: _Watched) -> None:
        self.queries += 1
        assert self.client is not None
        response = await self.client.get_task(watched.task_id)
        status = response.output.task_status
        await self._set_status(watched, status.value)
        if status in (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUSPENDED):
            if status is TaskStatus.RUNNING and watched.running_since is None:
                watched.running_since = time.monotonic()
            return
        if status is TaskStatus.SUCCEEDED and not response.output.video_url:
            watched.missing_url += 1
            if watched.missing_url <= self.schedule.missing_url_retries:
                return  # asked again at the next sweep or tick
        self._learn(watched, response)
        self._finish(watched, response)

    def _learn(self, watched: _Watched, response: TaskResponse) -> None:
        if watched.running_since is None or response.output.task_status is not TaskStatus.SUCCEEDED:
            return
        took = time.monotonic() - watched.running_since
        self._generation = took if self._generation is None else 0.7 * self._generation + 0.3 * took

    def _finish(self, watched: _Watched, response: TaskResponse) -> None:
        self._watched.pop(watched.task_id, None)
        if watched.future.done():
            return
        try:
            watched.future.set_result(final_result(response, answers_without_url=max(watched.missing_url, 1)))
        except DashScopeError as error:
            watched.future.set_exception(error)

    async def _set_status(self, watched: _Watched, status: str) -> None:
        if watched.status == status:
            return
        watched.status = status
        for listener in watched.listeners:
            await listener(status)

    def _expire_deadlines(self) -> None:
        now = time.monotonic()
        for watched in [w for w in self._watched.values() if w.deadline <= now]:
            self._watched.pop(watched.task_id, None)
            if not watched.future.done():
                watched.future.set_exception(
                    PollTimeoutError(
                        f"task {watched.task_id} not finished within {self.schedule.deadline:.0f} s; it may still finish and can be waited for again by its id",
                        code="PollTimeout",
                        task_id=watched.task_id,
                    )
                )

    def _fail_all(self, error: Exception) -> None:
        for watched in list(self._watched.values()):
            self._watched.pop(watched.task_id, None)
            if not watched.future.done():
                watched.future.set_exception(error)


_WATCHERS: dict[tuple, TaskWatcher] = {}


def service_status(task_id: str) -> Optional[str]:
    """The status this process's watchers last saw for a task (PENDING until the service starts it;
    None when no watcher here follows it)."""
    for watcher in list(_WATCHERS.values()):
        if (watched := watcher._watched.get(task_id)) is not None:
            return watched.status
    return None


def shared_watcher(key_material: str, endpoint: str, make_client: ClientFactory, schedule: Optional[PollSchedule]) -> TaskWatcher:
    """The watcher of this event loop for one account; several flow runs of a process share it."""
    loop = asyncio.get_running_loop()
    digest = hashlib.sha256(key_material.encode()).hexdigest()[:16]  # the key itself is never kept here
    key = (endpoint, digest, schedule.model_dump_json() if schedule else "")
    for stale in [k for k, w in _WATCHERS.items() if w.loop.is_closed()]:
        _WATCHERS.pop(stale, None)
    watcher = _WATCHERS.get(key)
    if watcher is None or watcher.loop is not loop:
        watcher = _WATCHERS[key] = TaskWatcher(make_client, schedule)
    return watcher
