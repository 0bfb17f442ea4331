"""One piece of work sent exactly once: the journal-first create, shared by the submit task and
by a command that sends its first pair while Prefect loads.

Every create is recorded as an intent before a byte is sent; a lost answer is reconciled with the
service's task list, never resent blindly. A task the command sent ahead is taken by the run as
its own (charged, cancelled with it), not adopted as earlier work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional, Union

from prefect_wan.client.client import CreateCall, DashScopeClient, submitted_task
from prefect_wan.client.errors import DashScopeError, NetworkError, ServerError, SubmissionOutcomeUnknownError, ThrottledError
from prefect_wan.client.outage import outage_watch, waiting
from prefect_wan.client.preflight import PreparedRequest
from prefect_wan.client.reconcile import Reconciliation, reconcile_lost_create
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
from prefect_wan.ledger.locks import SUBMIT_LOCK_SECONDS, SubmitLockManager

# Creates proven (by reconciliation) to have created nothing may be sent again, this often at most.
MAX_SENDS = 3
MAX_RETRY_AFTER = 300.0
# While other creates of the same window have no recorded outcome yet, reconcile again this often.
RIVAL_ROUNDS = 4
RIVAL_WAIT_SECONDS = 2.0

Logger = Union[logging.Logger, logging.LoggerAdapter]


class Submission:
    """The work of one submission key on its journal record (held under the submit lock of that key)."""

    def __init__(
        self,
        client: DashScopeClient,
        journal: SubmissionJournal,
        prepared: PreparedRequest,
        *,
        key: str,
        endpoint: str,
        label: str,
        logger: Logger,
        sender: Optional[str] = None,
        waits_when_throttled: bool = True,
    ) -> None:
        """``sender``: who sends, as recorded on each attempt (its cancellation cancels them);
        the flow run this runs in when not given. ``waits_when_throttled``: sleep the service's
        Retry-After before raising ``ThrottledError`` (for a retry that follows)."""
        self.client, self.journal, self.prepared, self.label, self.logger = client, journal, prepared, label, logger
        self.key, self.endpoint, self.sender, self.waits_when_throttled = key, endpoint, sender, waits_when_throttled
        self.answers: list[Optional[DashScopeError]] = []  # what the service said to each lost create
        self.outage = outage_watch(endpoint, prepared.spec.name)

    async def run(self, *, fresh: bool, sends: int = MAX_SENDS) -> SubmittedTask:
        """The task for this work: recorded (unless ``fresh``), adopted after a lost answer, or sent
        (at most ``sends`` creates, each proven to have created nothing before the next)."""
        recorded_here = await self.journal.read(self.key)
        if not fresh and (ahead := _SENT_AHEAD.get(self.key)) is not None and not ahead.taken:
            return await self._take(recorded_here, ahead)
        record = recorded_here or SubmissionRecord(
            key=self.key,
            fingerprint=self.prepared.fingerprint,
            model=self.prepared.spec.name,
            endpoint=self.endpoint,
            prompt=self.prepared.prompt,
        )
        if not fresh and (recorded := record.reusable(REUSABLE_FOR)) is not None:
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
        for _ in range(sends):
            # The turn spans the intent, the send and, if the answer is lost, the reconciliation: no
            # other create of this process is then outstanding to muddle the task list we read.
            async with self.client.create_turn(self.prepared.spec.name):
                self.outage.before_send(self.label)
                attempt = SubmissionAttempt(sent_at=datetime.now(timezone.utc), flow_run_id=self.sender or current_flow_run_id())
                record.attempts.append(attempt)
                await self.journal.write(record)  # the intent, before a byte is sent
                submitted = await self._send(record, attempt, call)
            if submitted is not None:
                return submitted
            self._failed_create(self.answers[-1])  # provably nothing created: the service failed this create
            if self.answers[-1] is not None:
                break  # answered (a 5xx): the task's retry, after its backoff, sends the next one
        if self.answers and self.answers[-1] is not None:
            # The service answered, and the task list proved no create made a task: the outcome is
            # known. Its own error, retryable by the task's policy.
            answer = self.answers[-1]
            raise ServerError(
                answer.message,
                code=answer.code,
                status_code=answer.status_code,
                request_id=answer.request_id,
                hint=f"the create for {self.label} was answered HTTP {answer.status_code}, and the task list shows that it created no task: nothing was paid",
            )
        raise SubmissionOutcomeUnknownError(
            f"{len(self.answers)} create calls for {self.label} got no answer, and none created a task; giving up for now",
            code="SubmissionOutcomeUnknown",
            sent_at=record.attempts[-1].sent_at.isoformat(),
            model=self.prepared.spec.name,
        )

    async def _take(self, record: Optional[SubmissionRecord], ahead: SentAhead) -> SubmittedTask:
        """The task the command sent ahead for this work, made this run's own: its attempt is
        stamped with this run (whose cancellation cancels it), and it is charged as sent here."""
        task_id = ahead.submitted.task_id
        if record is None or task_id not in record.task_ids():
            # This run keeps its records elsewhere than the command resolved: they move here.
            record = ahead.record
        for attempt in record.attempts:
            if attempt.task_id == task_id:
                attempt.flow_run_id = current_flow_run_id()
        record.current = ahead.submitted
        await self._write_after_the_fact(record)
        ahead.taken = True
        remember_task_ids([task_id])
        self._said("submitted", ahead.submitted, ", sent by the command while Prefect started")
        return ahead.submitted

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
            self.outage.answered()  # busy, not down
            await self._refused(record, attempt, throttled)
            # Not accepted, so Prefect may retry; when the service says how long to wait, wait that long first.
            if throttled.retry_after and self.waits_when_throttled:
                self.logger.warning("%s: throttled; waiting the %.1f s the service asked for", self.label, throttled.retry_after)
                await asyncio.sleep(min(throttled.retry_after, MAX_RETRY_AFTER))
            raise
        except (ServerError, NetworkError) as refused:
            # Refused before a task could exist (no connection, or a 5xx the client knows created nothing).
            await self._refused(record, attempt, refused)
            self._failed_create(refused)
            raise
        except DashScopeError as refused:
            self.outage.answered()  # refused for its own reasons: the service works
            await self._refused(record, attempt, refused)
            raise
        return await self._accept(record, attempt, submitted, how="submitted")

    def _failed_create(self, error: Optional[DashScopeError]) -> None:
        """Count a create the service failed and that provably created nothing; once they make an
        outage, ``ServiceOutageError`` (not retried: the outage watch says when to send again)."""
        self.outage.refused(error)
        if self.outage.report is not None:
            raise waiting(self.outage.report, self.label)

    async def _refused(self, record: SubmissionRecord, attempt: SubmissionAttempt, error: DashScopeError) -> None:
        attempt.state, attempt.request_id, attempt.detail = AttemptState.REFUSED, error.request_id, str(error)[:500]
        await self._write_after_the_fact(record)

    async def _accept(self, record: SubmissionRecord, attempt: SubmissionAttempt, submitted: SubmittedTask, *, how: str) -> SubmittedTask:
        attempt.state, attempt.task_id, attempt.request_id = AttemptState.ACCEPTED, submitted.task_id, submitted.request_id
        record.current = submitted
        remember_task_ids([submitted.task_id])
        await self._write_after_the_fact(record)
        if (ended := self.outage.answered()) is not None:
            self.logger.warning("%s: the service answers again; the outage is over (%s)", self.label, ended.describe())
        self._said(how, submitted)
        return submitted

    def _said(self, how: str, submitted: SubmittedTask, after: str = "") -> None:
        self.logger.info(
            "%s %s: task %s (request %s, fingerprint %s)%s",
            how.capitalize(),
            self.label,
            submitted.task_id,
            submitted.request_id,
            submitted.fingerprint[:12],
            after,
        )

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


@dataclass
class SentAhead:
    """A task a command sent before its run started, until that run takes it."""

    label: str
    record: SubmissionRecord
    submitted: SubmittedTask
    taken: bool = False


# This process's tasks sent ahead, by submission key.
_SENT_AHEAD: dict[str, SentAhead] = {}


async def send_ahead(
    client: DashScopeClient,
    journal: SubmissionJournal,
    locks: SubmitLockManager,
    prepared: PreparedRequest,
    *,
    key: str,
    endpoint: str,
    label: str,
    logger: Logger,
    sender: str,
) -> Optional[SentAhead]:
    """Send one piece of work before its run starts, under its submit lock and journal, once;
    recorded as sent by ``sender`` until the run takes it.

    None when nothing was sent: the lock is held by another run, or a task is recorded for the work
    (the run reuses it). A refusal or a lost answer raises, with the journal saying what happened,
    so the run settles it before sending anything."""
    holder = f"prefect-wan-command-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if not await locks.aacquire_lock(key, holder, acquire_timeout=0, hold_timeout=SUBMIT_LOCK_SECONDS):
        return None
    try:
        # One send, no wait on throttling: the run, which retries, does the waiting.
        submission = Submission(client, journal, prepared, key=key, endpoint=endpoint, label=label, logger=logger, sender=sender, waits_when_throttled=False)
        submitted = await submission.run(fresh=False, sends=1)
        record = await journal.read(key)
    finally:
        locks.release_lock(key, holder)
    # Ours: accepted, or adopted after a lost answer, from a create this sender sent (not a task
    # an earlier run recorded or left unsettled: the run reuses that one, as always).
    if record is None or not any(a.task_id == submitted.task_id and a.flow_run_id == sender for a in record.attempts):
        return None
    sent = _SENT_AHEAD[key] = SentAhead(label, record, submitted.model_copy(update={"reused_from": None}))
    return sent


def untaken() -> list[SentAhead]:
    """Tasks sent ahead that no run of this process has taken (yet)."""
    return [ahead for ahead in _SENT_AHEAD.values() if not ahead.taken]
