"""The submit task: one KeyframeVideoRequest in, one accepted DashScope task out, exactly once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Optional

from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.errors import SubmissionOutcomeUnknownError, ThrottledError, WanError
from prefect_wan.client.request import KeyframeVideoRequest
from prefect_wan.client.results import SubmittedTask
from prefect_wan.tasks.caching import retry_if_transient, submission_cache_policy
from prefect_wan.tasks.naming import run_name

# Task ids answer for 24 h; an older cached id would poll into UNKNOWN.
SUBMISSION_CACHE_EXPIRATION = timedelta(hours=23)
MAX_RETRY_AFTER = 300.0


class FramesChangedError(WanError):
    """The frames' content changed between computing the cache key and submitting."""


@task(
    name="submit-wan-video",
    task_run_name=run_name("submit"),
    cache_policy=submission_cache_policy(),
    cache_expiration=SUBMISSION_CACHE_EXPIRATION,
    persist_result=True,
    retries=4,
    retry_delay_seconds=exponential_backoff(backoff_factor=1),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_transient,
)
async def submit_video(
    request: KeyframeVideoRequest,
    credentials: WanCredentials,
    fingerprint: Optional[str] = None,
    label: Optional[str] = None,
) -> SubmittedTask:
    """Submit one keyframe pair and return the accepted task.

    Cached on the request fingerprint (pass ``fingerprint`` when you already have it, to spare
    reading the frames twice), so retries and re-runs reuse the task instead of paying again.
    Retried only when the service provably did not accept the call (429, 5xx, no connection); a
    lost answer raises ``SubmissionOutcomeUnknownError`` with the candidate task ids.
    """
    logger = get_run_logger()
    async with credentials.get_client() as client:
        prepared = await client.prepare(request)
        if fingerprint and prepared.fingerprint != fingerprint:
            raise FramesChangedError(
                f"the frames of {label or 'this pair'} changed while it was being submitted; run again"
            )
        try:
            submitted = await client.submit(prepared)
        except ThrottledError as throttled:
            # Not accepted, so Prefect may retry; when the service says how long to wait, wait that long first.
            if throttled.retry_after:
                logger.warning("%s: throttled; waiting the %.1f s the service asked for", label or "pair", throttled.retry_after)
                await asyncio.sleep(min(throttled.retry_after, MAX_RETRY_AFTER))
            raise
        except SubmissionOutcomeUnknownError as lost:
            # Name the tasks created since the call was sent, so a person can decide; never resend.
            since = datetime.fromisoformat(lost.sent_at) - timedelta(seconds=5)
            listing = await client.list_tasks(model_name=prepared.spec.name, start_time=since, page_size=20)
            candidates = [row.task_id for row in listing.data]
            lost.hint = f"tasks of {prepared.spec.name} created since then: {candidates or 'none'}"
            raise lost
    logger.info(
        "Submitted %s: task %s (request %s, fingerprint %s)",
        label or "pair", submitted.task_id, submitted.request_id, submitted.fingerprint[:12],
    )
    return submitted
