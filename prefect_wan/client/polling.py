"""Waiting for a task: a schedule that is gentle on the 20 queries/s account limit and quick to
notice the end, with every status and transient error handled."""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING, Awaitable, Callable, Optional

from pydantic import BaseModel, Field

from prefect_wan.client.errors import (
    DashScopeError,
    PollTimeoutError,
    TaskCanceledError,
    TaskExpiredError,
    TaskFailedError,
    ThrottledError,
    VideoMissingError,
)
from prefect_wan.client.results import VideoResult
from prefect_wan.client.wire import TaskResponse, TaskStatus

if TYPE_CHECKING:
    from prefect_wan.client.client import DashScopeClient


class PollSchedule(BaseModel):
    """When to ask again. Defaults suit the real service (tasks take 1-5 minutes)."""

    initial_delay: float = Field(default=5.0, ge=0, description="Seconds before the first query.")
    interval: float = Field(default=5.0, gt=0, description="First gap between queries.")
    max_interval: float = Field(default=15.0, gt=0, description="The gap grows to this (the docs advise ~15 s).")
    backoff: float = Field(default=1.5, ge=1, description="Growth factor of the gap.")
    jitter: float = Field(default=0.2, ge=0, le=1, description="Each gap varies by up to this fraction.")
    deadline: float = Field(default=3.5 * 3600, gt=0, description="Give up after this many seconds (the service times tasks out at 3 h).")
    max_error_gap: float = Field(default=60.0, gt=0, description="Longest wait after a transient query error.")
    due_interval: float = Field(default=0.5, gt=0, description="Gap between status checks while a task's end is due (the task watcher).")
    sweep_interval: float = Field(default=30.0, gt=0, description="How often the task watcher reads the status of every task in flight.")
    expected_generation: float = Field(default=120.0, gt=0, description="Generation time assumed until the watcher has seen tasks finish.")
    missing_url_retries: int = Field(default=3, ge=0, description="Queries again (with the usual gaps) when SUCCEEDED comes without a video URL.")

    def gaps(self, rng: Optional[random.Random] = None) -> Callable[[], float]:
        rng = rng or random.Random()
        state = {"gap": self.interval}

        def next_gap() -> float:
            gap = state["gap"]
            state["gap"] = min(gap * self.backoff, self.max_interval)
            return gap * (1 + rng.uniform(-self.jitter, self.jitter))

        return next_gap


StatusCallback = Callable[[TaskResponse], Awaitable[None]]
ErrorCallback = Callable[[DashScopeError, float], Awaitable[None]]


def raise_for_final_status(response: TaskResponse) -> None:
    """Turn FAILED, CANCELED and UNKNOWN into their errors."""
    out, request_id = response.output, response.request_id
    if out.task_status is TaskStatus.FAILED:
        raise TaskFailedError(out.message or "task failed", code=out.code or "Failed", task_id=out.task_id, request_id=request_id)
    if out.task_status is TaskStatus.CANCELED:
        raise TaskCanceledError(f"task {out.task_id} was canceled", code="Canceled", task_id=out.task_id, request_id=request_id)
    if out.task_status is TaskStatus.UNKNOWN:
        raise TaskExpiredError(
            f"task {out.task_id} is UNKNOWN: its id expired (24 h) or never existed",
            code="Unknown",
            task_id=out.task_id,
            request_id=request_id,
        )


def final_result(response: TaskResponse, *, answers_without_url: int = 1) -> VideoResult:
    """The video of a final answer; FAILED, CANCELED, UNKNOWN and a SUCCEEDED answer with no
    ``video_url`` (asked ``answers_without_url`` times) raise their errors."""
    out = response.output
    if out.task_status is not TaskStatus.SUCCEEDED:
        raise_for_final_status(response)
        raise ValueError(f"task {out.task_id} is {out.task_status.value}, not final")
    if not out.video_url:
        raise VideoMissingError(
            f"task {out.task_id} SUCCEEDED (it is billed) but {answers_without_url} answers carried no video_url; "
            "not resubmitted, since that would pay again. Run again later to fetch it, or quote the "
            "task and request ids to support",
            code="VideoUrlMissing",
            task_id=out.task_id,
            request_id=response.request_id,
        )
    return VideoResult.from_response(response)


async def wait_for_task(
    client: DashScopeClient,
    task_id: str,
    schedule: PollSchedule | None = None,
    *,
    on_status: StatusCallback | None = None,
    on_error: ErrorCallback | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> VideoResult:
    """Query until the task is final. Transient query errors never lose the task."""
    schedule = schedule or PollSchedule()
    started = time.monotonic()
    next_gap = schedule.gaps()
    error_gap = schedule.interval
    missing_url = 0
    await sleep(schedule.initial_delay)
    while True:
        try:
            response = await client.get_task(task_id)
        except DashScopeError as exc:
            if not exc.retryable:
                raise
            wait = exc.retry_after if isinstance(exc, ThrottledError) and exc.retry_after else error_gap
            error_gap = min(error_gap * 2, schedule.max_error_gap)
            if on_error:
                await on_error(exc, wait)
        else:
            error_gap = schedule.interval
            if on_status:
                await on_status(response)
            if response.output.task_status is TaskStatus.SUCCEEDED and not response.output.video_url:
                missing_url += 1
                if missing_url > schedule.missing_url_retries:
                    final_result(response, answers_without_url=missing_url)
            else:
                raise_for_final_status(response)
                if response.output.task_status is TaskStatus.SUCCEEDED:
                    return final_result(response)
            wait = next_gap()
        elapsed = time.monotonic() - started
        if elapsed + wait > schedule.deadline:
            raise PollTimeoutError(
                f"task {task_id} not finished after {elapsed:.0f} s (deadline {schedule.deadline:.0f} s); "
                "it may still finish and can be polled again by its id",
                code="PollTimeout",
                task_id=task_id,
            )
        await sleep(wait)
