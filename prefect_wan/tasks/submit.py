"""The submit task: one KeyframeVideoRequest in, one accepted DashScope task out, exactly once."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Optional, Union

from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.client import CreateCall, DashScopeClient, submitted_task
from prefect_wan.client.errors import DashScopeError, ServerError, SubmissionOutcomeUnknownError, ThrottledError
from prefect_wan.client.preflight import PreparedRequest
from prefect_wan.client.reconcile import Reconciliation, reconcile_lost_create
from prefect_wan.client.request import KeyframeVideoRequest
from prefect_wan.client.results import SubmittedTask
from prefect_wan.client.wire import TaskResponse, parse_service_time
from prefect_wan.ledger.journal import (
    REUSABLE_FOR,
    AttemptState,
    JournalError,
    SubmissionAttempt,
    SubmissionJournal,
    SubmissionRecord,
    current_flow_run_id,
    process_task_ids,
    remember_task_ids,
)
from prefect_wan.tasks.caching import retry_if_transient, submission_cache_policy
from prefect_wan.tasks.naming import run_name

if TYPE_CHECKING:
    from prefect_wan.blocks.coordination import WanCoordination

# Task ids answer for 24 h; an older cached id would poll into UNKNOWN.
SUBMISSION_CACHE_EXPIRATION = REUSABLE_FOR
MAX_RETRY_AFTER = 300.0
# Creates proven (by reconciliation) to have created nothing may be sent again, this often at most.
MAX_SENDS = 3
# While other creates of the same window have no recorded outcome yet, reconcile again this often.
RIVAL_ROUNDS = 4
RIVAL_WAIT_SECONDS = 2.0


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
        submission = _Submission(client, journal, prepared, credentials, label or "pair", logger)
        return await submission.run(fresh=fresh)


class _Submission:
    """One submit task's work on one journal record (held under the submit lock of its key)."""

    def __init__(
        self,
        client: DashScopeClient,
        journal: SubmissionJournal,
        prepared: PreparedRequest,
        credentials: WanCredentials,
        label: str,
        logger: Union[logging.Logger, logging.LoggerAdapter],
    ) -> None:
        self.client, self.journal, self.prepared, self.label, self.logger = client, journal, prepared, label, logger
        self.key = credentials.submission_key(prepared.fingerprint)
        self.answers: list[Optional[DashScopeError]] = []  # what the service said to each lost create
        self.endpoint = credentials.endpoint

    async def run(self, *, fresh: bool) -> SubmittedTask:
        record = await self.journal.read(self.key) or SubmissionRecord(
            key=self.key,
            fingerprint=self.prepared.fingerprint,
            model=self.prepared.spec.name,
            endpoint=self.endpoint,
            prompt=self.prepared.prompt,
        )
        if not fresh and (recorded := record.reusable(SUBMISSION_CACHE_EXPIRATION)) is not None:
            self.logger.info("%s: task %s is recorded for this work (submitted %s); reusing it", self.label, recorded.task_id, recorded.submitted_at)
            remember_task_ids([recorded.task_id])
            return recorded.model_copy(update={"reused_from": "journal"})
        # An intent without an outcome (a crash mid-send, a lost answer, a retried flow): settle it
        # before sending anything, or it may be paid twice.
        for attempt in record.unresolved():
            async with self.client.create_turn(self.prepared.spec.name):
                adopted = await self._settle(record, attempt)
            if adopted is not None:
                return adopted
        call = await self.client.build_create_call(self.prepared)
        for _ in range(MAX_SENDS):
            # The turn spans the intent, the send and, if the answer is lost, the reconciliation: no
            # other create of this process is then outstanding to muddle the task list we read.
            async with self.client.create_turn(self.prepared.spec.name):
                attempt = SubmissionAttempt(sent_at=datetime.now(timezone.utc), flow_run_id=current_flow_run_id())
                record.attempts.append(attempt)
                await self.journal.write(record)  # the intent, before a byte is sent
                submitted = await self._send(record, attempt, call)
            if submitted is not None:
                return submitted
        if len(self.answers) == MAX_SENDS and all(a is not None for a in self.answers):
            # The service answered every send, and the task list proved none created a task: the
            # outcome is known. Its own error, retryable by the task's policy.
            answer = self.answers[-1]
            assert answer is not None
            raise ServerError(
                answer.message,
                code=answer.code,
                status_code=answer.status_code,
                request_id=answer.request_id,
                hint=f"{MAX_SENDS} creates for {self.label} were each answered HTTP {answer.status_code}, and the task list shows "
                "that none created a task: nothing was paid",
            )
        raise SubmissionOutcomeUnknownError(
            f"{MAX_SENDS} create calls for {self.label} got no answer, and none created a task; giving up for now",
            code="SubmissionOutcomeUnknown",
            sent_at=record.attempts[-1].sent_at.isoformat(),
            model=self.prepared.spec.name,
        )

    async def _send(self, record: SubmissionRecord, attempt: SubmissionAttempt, call: CreateCall) -> Optional[SubmittedTask]:
        """The accepted task, or None when the call provably created nothing (send again)."""
        try:
            submitted = await self.client.send_create(call)
        except SubmissionOutcomeUnknownError as lost:
            self.answers.append(lost.answered)
            attempt.state, attempt.detail = AttemptState.UNKNOWN, str(lost)[:500]
            await self.journal.write(record)
            self.logger.warning("%s: %s; reconciling with the task list", self.label, lost)
            return await self._settle(record, attempt, lost=lost)
        except ThrottledError as throttled:
            await self._refused(record, attempt, throttled)
            # Not accepted, so Prefect may retry; when the service says how long to wait, wait that long first.
            if throttled.retry_after:
                self.logger.warning("%s: throttled; waiting the %.1f s the service asked for", self.label, throttled.retry_after)
                await asyncio.sleep(min(throttled.retry_after, MAX_RETRY_AFTER))
            raise
        except DashScopeError as refused:
            await self._refused(record, attempt, refused)
            raise
        return await self._accept(record, attempt, submitted, how="submitted")

    async def _refused(self, record: SubmissionRecord, attempt: SubmissionAttempt, error: DashScopeError) -> None:
        attempt.state, attempt.request_id, attempt.detail = AttemptState.REFUSED, error.request_id, str(error)[:500]
        await self._write_after_the_fact(record)

    async def _accept(self, record: SubmissionRecord, attempt: SubmissionAttempt, submitted: SubmittedTask, *, how: str) -> SubmittedTask:
        attempt.state, attempt.task_id, attempt.request_id = AttemptState.ACCEPTED, submitted.task_id, submitted.request_id
        record.current = submitted
        remember_task_ids([submitted.task_id])
        await self._write_after_the_fact(record)
        self.logger.info(
            "%s %s: task %s (request %s, fingerprint %s)",
            how.capitalize(),
            self.label,
            submitted.task_id,
            submitted.request_id,
            submitted.fingerprint[:12],
        )
        return submitted

    async def _write_after_the_fact(self, record: SubmissionRecord) -> None:
        # The call is over; a journal that cannot be written now must not turn a paid task into a
        # failure (the intent stays, and the next run reconciles it).
        try:
            await self.journal.write(record)
        except (JournalError, OSError) as exc:
            self.logger.error("%s: could not record the outcome in %s: %s", self.label, self.journal.url, exc)

    async def _settle(
        self, record: SubmissionRecord, attempt: SubmissionAttempt, *, lost: Optional[SubmissionOutcomeUnknownError] = None
    ) -> Optional[SubmittedTask]:
        """Reconcile one unresolved attempt: the adopted task, or None when it created nothing."""
        window_start = attempt.sent_at - timedelta(seconds=10)
        for round_ in range(RIVAL_ROUNDS):
            journal_ids, unresolved = await self.journal.known_task_ids(window_start)
            ours = sum(1 for a in record.attempts if a.unresolved and a.sent_at >= window_start)
            rivals = max(0, unresolved - ours)
            outcome: Reconciliation = await reconcile_lost_create(
                self.client,
                model=self.prepared.spec.name,
                sent_at=attempt.sent_at,
                prompt=self.prepared.prompt,
                known_ids=journal_ids | process_task_ids() | record.task_ids(),
                rival_intents=rivals,
            )
            if outcome.adopted is not None or outcome.created_nothing or not rivals or round_ == RIVAL_ROUNDS - 1:
                break
            # Other creates of this window are still being answered: once they are recorded, their
            # tasks explain themselves and ours stands out.
            await asyncio.sleep(RIVAL_WAIT_SECONDS)
        self.logger.info("%s: reconciled the create sent at %s: %s", self.label, attempt.sent_at, outcome.detail)
        if outcome.adopted is not None:
            adopted = self._adopted(outcome.adopted, attempt, verify=outcome.prompt_unverified)
            return await self._accept(record, attempt, adopted, how="adopted")
        if outcome.created_nothing:
            attempt.state, attempt.detail = AttemptState.SUPERSEDED, outcome.detail
            await self.journal.write(record)
            return None
        attempt.state = AttemptState.UNKNOWN
        await self._write_after_the_fact(record)
        error = lost or SubmissionOutcomeUnknownError(
            f"an earlier create for {self.label} (sent {attempt.sent_at.isoformat()}) has no known outcome",
            code="SubmissionOutcomeUnknown",
            sent_at=attempt.sent_at.isoformat(),
            model=self.prepared.spec.name,
        )
        error.candidates = outcome.candidates
        error.hint = (
            f"{outcome.detail}: {outcome.candidates}. Nothing was resent; a later run reconciles again once the "
            f"other submissions are recorded. Record: {self.journal.url}/{self.key}.json"
        )
        raise error

    def _adopted(self, response: TaskResponse, attempt: SubmissionAttempt, *, verify: bool) -> SubmittedTask:
        submitted_at = parse_service_time(response.output.submit_time) or attempt.sent_at
        return submitted_task(response, self.prepared, region=self.client.region, endpoint=self.endpoint, submitted_at=submitted_at).model_copy(
            update={"reused_from": "reconciled", "verify_prompt": (self.prepared.prompt or "") if verify else None}
        )
