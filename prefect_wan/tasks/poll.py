"""The poll task: wait for a submitted task to finish. Never cached: a cached status is a stale one."""

from __future__ import annotations

from typing import Optional

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.errors import AdoptedTaskMismatchError
from prefect_wan.client.polling import PollSchedule
from prefect_wan.client.reconcile import same_prompt
from prefect_wan.client.results import SubmittedTask, VideoResult
from prefect_wan.client.watcher import shared_watcher
from prefect_wan.tasks.naming import run_name


@task(name="poll-wan-video", task_run_name=run_name("poll"), cache_policy=NO_CACHE)
async def poll_video(
    submitted: SubmittedTask,
    credentials: WanCredentials,
    schedule: Optional[PollSchedule] = None,
    label: Optional[str] = None,
) -> VideoResult:
    """Wait until SUCCEEDED (returned), FAILED/CANCELED/UNKNOWN (raised) or the deadline.

    Transient query errors (429, 5xx, network) are waited out by the watcher, so the task is
    never given up because of them.
    """
    logger = get_run_logger()

    async def on_status(status: str) -> None:
        logger.info("%s: task %s is %s", label or "pair", submitted.task_id, status)

    # One watcher per account serves every pair of this process: a few list queries per tick
    # whatever the number of tasks in flight, instead of one query per task.
    watcher = shared_watcher(
        credentials.resolved_api_key().get_secret_value(),
        # The address itself, port included: two emulators share an endpoint identity, never a watcher.
        f"{credentials.effective_base_url}#{credentials.workspace or ''}",
        credentials.get_client,
        schedule,
    )
    video = await watcher.wait(submitted.task_id, model=submitted.model, submitted_at=submitted.submitted_at, on_status=on_status)
    if submitted.verify_prompt is not None and video.orig_prompt is not None and not same_prompt(submitted.verify_prompt, video.orig_prompt):
        raise AdoptedTaskMismatchError(
            f"task {submitted.task_id}, adopted after a lost create answer, was made from another prompt: it is "
            "not this pair's, so this pair's create never made a task",
            code="AdoptedTaskMismatch",
            task_id=submitted.task_id,
        )
    return video
