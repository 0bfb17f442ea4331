"""The submit task: one KeyframeVideoRequest in, one accepted DashScope task out, exactly once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.preflight import PreparedRequest
from prefect_wan.client.request import KeyframeVideoRequest
from prefect_wan.client.results import SubmittedTask
from prefect_wan.ledger.journal import REUSABLE_FOR, SubmissionJournal
from prefect_wan.ledger.sending import Submission
from prefect_wan.tasks.caching import retry_if_transient, submission_cache_policy
from prefect_wan.tasks.naming import run_name

if TYPE_CHECKING:
    from prefect_wan.blocks.coordination import WanCoordination

# Task ids answer for 24 h; an older cached id would poll into UNKNOWN.
SUBMISSION_CACHE_EXPIRATION = REUSABLE_FOR


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
    request: Union[KeyframeVideoRequest, PreparedRequest],
    credentials: WanCredentials,
    label: Optional[str] = None,
    fresh: bool = False,
    coordination: Optional[WanCoordination] = None,
) -> SubmittedTask:
    """Submit one keyframe pair and return the accepted task.

    ``request`` is a request, or the request prepared by the caller (its frames read, checked and
    hashed once: they are not read again). Cached on the request fingerprint, and journaled before every create call, so retries, re-runs and
    runs after a crash reuse the task instead of paying again. ``fresh`` asks for a new task even
    when one is recorded (after that one failed, or to generate again). ``coordination`` says where
    the records live (this machine's ``PREFECT_HOME`` by default); the caller picks the matching lock
    through the task's cache policy.

    A create whose answer is lost (no answer, a 5xx, an unreadable body) is reconciled with the
    service's task list: adopted when it provably created our task, resent when it provably
    created nothing, and otherwise reported as ``SubmissionOutcomeUnknownError`` naming the
    unexplained candidates; it is never resent blindly.
    """
    logger = get_run_logger()
    journal = coordination.journal() if coordination is not None else SubmissionJournal()
    async with credentials.get_client() as client:
        if isinstance(request, PreparedRequest) and request.region.value == credentials.region:
            prepared = request
        else:
            prepared = await client.prepare(request.request if isinstance(request, PreparedRequest) else request)
        submission = Submission(
            client, journal, prepared, key=credentials.submission_key(prepared.fingerprint), endpoint=credentials.endpoint, label=label or "pair", logger=logger
        )
        return await submission.run(fresh=fresh)
