"""The poll task: wait for a submitted task to finish. Never cached: a cached status is a stale one."""

from __future__ import annotations

from typing import Optional

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.errors import AdoptedTaskMismatchError, DashScopeError
from prefect_wan.client.polling import PollSchedule, wait_for_task
from prefect_wan.client.reconcile import same_prompt
from prefect_wan.client.results import SubmittedTask, VideoResult
from prefect_wan.client.wire import TaskResponse
from prefect_wan.tasks.naming import run_name


@task(name="poll-wan-video", task_run_name=run_name("poll"), cache_policy=NO_CACHE)
async def poll_video(
    submitted: SubmittedTask,
    credentials: WanCredentials,
    schedule: Optional[PollSchedule] = None,
    label: Optional[str] = None,
) -> VideoResult:
    """Query until SUCCEEDED (returned), FAILED/CANCELED/UNKNOWN (raised) or the deadline.

    Transient query errors (429, 5xx, network) are waited out inside the loop, so the task is
    never given up because of them.
    """
    logger = get_run_logger()
    seen: dict[str, str] = {}

    async def on_status(response: TaskResponse) -> None:
        status = response.output.task_status.value
        if seen.get("status") != status:
            seen["status"] = status
            logger.info("%s: task %s is %s", label or "pair", submitted.task_id, status)

    async def on_error(error: DashScopeError, wait: float) -> None:
        logger.warning("%s: query failed (%s); asking again in %.1f s", label or "pair", error, wait)

    async with credentials.get_client() as client:
        video = await wait_for_task(client, submitted.task_id, schedule, on_status=on_status, on_error=on_error)
    if submitted.verify_prompt is not None and video.orig_prompt is not None and not same_prompt(submitted.verify_prompt, video.orig_prompt):
        raise AdoptedTaskMismatchError(
            f"task {submitted.task_id}, adopted after a lost create answer, was made from another prompt: it is "
            "not this pair's, so this pair's create never made a task",
            code="AdoptedTaskMismatch", task_id=submitted.task_id,
        )
    return video
