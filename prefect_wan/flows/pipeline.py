"""One pair from prepared frames to archive: reuse what exists, charge, submit once, poll, archive.

Every flow runs its pairs through ``PairRun.generate``, so all behave the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Optional, Union

from prefect import get_run_logger
from prefect.client.schemas.objects import State
from prefect.concurrency.asyncio import concurrency, rate_limit
from prefect.locking.protocol import LockManager
from prefect.utilities.annotations import quote

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.record import ArchiveRecord, TakeRecord
from prefect_wan.archive.store import archive_stem, find_archived, rewrite_sidecar, sidecar_name
from prefect_wan.client.errors import (
    AdoptedTaskMismatchError,
    SubmissionOutcomeUnknownError,
    TaskCanceledError,
    TaskExpiredError,
    TaskFailedError,
)
from prefect_wan.client.outage import ServiceOutageError, outage_watch
from prefect_wan.client.results import SubmittedTask, VideoResult
from prefect_wan.flows.cancellation import note_archived
from prefect_wan.flows.lineage import report_materialized
from prefect_wan.flows.models import ArchivedVideo, KeyframePair
from prefect_wan.flows.prepared import PreparedPair
from prefect_wan.flows.quality import QualityGate, score
from prefect_wan.flows.reporting import report_archived, report_failed
from prefect_wan.ledger.journal import SubmissionJournal
from prefect_wan.spend.budget import SkippedForBudgetError, SpendLedger
from prefect_wan.spend.charges import PairCharge, RunCharges
from prefect_wan.tasks.archive import archive_video
from prefect_wan.tasks.caching import submission_cache_policy
from prefect_wan.tasks.poll import poll_video
from prefect_wan.tasks.submit import submit_video

if TYPE_CHECKING:
    from prefect_wan.flows.setup import RunSetup


@dataclass
class Capacity:
    """What bounds a run's pairs in flight (submitted and unfinished) and, when named, a Prefect
    global concurrency limit and rate limit shared with every other run of the account."""

    generating: asyncio.Semaphore
    concurrency_limit: Optional[str] = None
    rate_limit: Optional[str] = None

    @contextlib.asynccontextmanager
    async def generation(self) -> AsyncIterator[None]:
        async with self.generating:
            if self.concurrency_limit:
                async with concurrency(self.concurrency_limit, occupy=1, strict=True):
                    yield
            else:
                yield

    async def before_submit(self) -> None:
        if self.rate_limit:
            await rate_limit(self.rate_limit, occupy=1, strict=True)


@dataclass
class PairProgress:
    """What is known of one pair while it runs, for reports even when it fails."""

    label: str
    fingerprint: Optional[str] = None
    task_id: Optional[str] = None
    stage: str = "checking"  # checking, submitting, generating, archiving, done, failed, skipped
    submitted_at: Optional[float] = None  # monotonic, when this run's task was accepted
    finished_at: Optional[float] = None  # monotonic, when its video was ready (not for reused work)

    def advance(self, stage: str) -> None:
        now = time.monotonic()
        if stage == "generating" and self.submitted_at is None:
            self.submitted_at = now
        if stage == "archiving" and self.submitted_at is not None:
            self.finished_at = now
        self.stage = stage


def archived_video(label: str, record: ArchiveRecord, destination: ArchiveDestination, endpoint: str, *, reused: bool) -> ArchivedVideo:
    """What a flow returns for an archived video: where it and its sidecar are, and the record."""
    return ArchivedVideo(
        label=label,
        fingerprint=record.fingerprint,
        task_id=record.task_id,
        video_url=record.video.url,
        sidecar_url=destination.public_url(destination.path(sidecar_name(archive_stem(record.fingerprint, endpoint)))),
        reused=reused,
        record=record,
        poster_view_url=destination.viewable_url(record.poster.path) if record.poster else None,
        video_view_url=destination.viewable_url(record.video.path),
    )


def _worth_resubmitting(error: Exception, reused: bool) -> bool:
    if isinstance(error, (TaskExpiredError, AdoptedTaskMismatchError)):
        return True  # the id expired or vanished: waiting longer can never help
    if isinstance(error, TaskFailedError) and error.worth_resubmitting:
        return True  # transient failure on the service's side; failed tasks are not billed
    # A task canceled or failed in an earlier run: this run asked for the work again.
    return reused and isinstance(error, (TaskCanceledError, TaskFailedError))


async def _call(task: Any, *args: Any, after: Optional[State] = None, plain: Optional[dict[str, Any]] = None, **inputs: Any) -> State:
    """Run a task with its inputs quoted, and its only upstream the state given.

    Prefect links task inputs to earlier results by object identity, and strings shared by
    every pair (the model name, the region) would draw edges between unrelated pairs in the run
    graph; quoting stops that, and ``wait_for`` keeps the pair's own chain. ``plain`` inputs are
    passed as they are: labels (they name the task runs and are the pair's own) and flags
    (singletons Prefect never links).
    """
    quoted_args = [quote(a) for a in args]
    quoted = {key: quote(value) for key, value in inputs.items()}
    # The upstream state with a stand-in result: Prefect would otherwise look inside the real one
    # too and find those shared strings again (True is a singleton, which it never links).
    upstream = [after.model_copy(update={"data": True})] if after is not None else None
    # Prefect's overloads do not type return_state=True for async tasks; it is awaitable at run time.
    return await task(*quoted_args, wait_for=upstream, return_state=True, **quoted, **(plain or {}))  # type: ignore[no-any-return]


class PairRun:
    """The pair pipeline of one run: its setup, capacity, charges and shared state."""

    def __init__(self, setup: RunSetup, capacity: Capacity, charges: RunCharges, journal: SubmissionJournal, lock_manager: LockManager) -> None:
        self.setup, self.capacity, self.charges, self.journal, self.lock_manager = setup, capacity, charges, journal, lock_manager
        # The submit task under this run's lock: this machine's file locks, or Redis.
        self.submit_task: Any = (
            submit_video if setup.coordination.redis_url is None else submit_video.with_options(cache_policy=submission_cache_policy(lock_manager))
        )

    @property
    def spend(self) -> SpendLedger:
        return self.charges.ledger

    def result(self, label: str, record: ArchiveRecord, *, reused: bool) -> ArchivedVideo:
        return archived_video(label, record, self.setup.destination, self.setup.credentials.endpoint, reused=reused)

    async def find_archived(self, pair: PreparedPair) -> Optional[ArchiveRecord]:
        """The pair's archived video, unless the run forces new ones."""
        if self.setup.force:
            return None
        found: Optional[ArchiveRecord] = await find_archived(self.setup.destination, pair.fingerprint, self.setup.credentials.endpoint)
        return found

    async def charge(self, pair: PreparedPair) -> PairCharge:
        """The pair's charge, entered before it waits for anything unless a live task recorded for
        it will be adopted (which costs nothing); ``SkippedForBudgetError`` when the budgets cannot cover it."""
        charge = self.charges.pair(pair.fingerprint, pair.cost, label=pair.label)
        key = self.setup.credentials.submission_key(pair.fingerprint)
        if self.setup.force or await self.journal.recorded_task(key) is None:
            await charge.commit()
        return charge

    async def generate(self, item: Union[KeyframePair, PreparedPair], progress: Optional[PairProgress] = None) -> ArchivedVideo:
        """Frames in (or a pair the run prepared already), archived video out, reported as an
        artifact and an event either way; a refused pair is reported like a failed one.

        Re-running with the same inputs submits and downloads nothing. ``progress`` (optional) is
        kept up to date, so a caller can report on the pair while it runs and after it failed.
        """
        progress = progress or PairProgress(label=item.label if isinstance(item, PreparedPair) else item.display_label())
        try:
            pair = item if isinstance(item, PreparedPair) else await self.setup.prepare(item)
            progress.fingerprint = pair.fingerprint
            video = await self._take(pair, progress)
            gate = self.setup.quality
            if gate is not None and gate.retakes and video.record.checks is not None and not video.record.checks.passed:
                video = await self._retake(pair, video, progress, gate)
        except SkippedForBudgetError as skipped:
            progress.stage = "skipped"
            get_run_logger().warning("%s", skipped)
            raise
        except ServiceOutageError:
            progress.stage = "failed"  # unsubmitted: the run reports the outage once, not once per pair
            raise
        except Exception as error:
            progress.stage = "failed"
            progress.task_id = progress.task_id or getattr(error, "task_id", None)
            report_failed(progress.label, progress.fingerprint, error, task_id=progress.task_id)
            raise
        progress.advance("done")
        await report_archived(video)
        if not video.reused:  # materialized by this run (a reused video was reported when it was made)
            record = video.record
            report_materialized(
                video.video_url,
                name=video.label,
                upstream=[record.request.first_frame.source, record.request.last_frame.source if record.request.last_frame else None],
                payload={"fingerprint": video.fingerprint, "task_id": video.task_id, "checks": record.checks.summary() if record.checks else None},
            )
        return video

    async def _take(self, pair: PreparedPair, progress: PairProgress) -> ArchivedVideo:
        """One take: the archived video, or one generated and archived, paid once."""
        if (existing := await self.find_archived(pair)) is not None:
            get_run_logger().info("%s: already archived at %s; nothing to submit or download", pair.label, existing.video.url)
            progress.task_id = existing.task_id
            return self.result(pair.label, existing, reused=True)
        await asyncio.to_thread(self.setup.destination.check_writable)
        # Before waiting for a slot: a pair the budget cannot cover must not hold one.
        charge = await self.charge(pair)
        try:
            return await self._generate(pair, charge, progress)
        except (TaskFailedError, TaskCanceledError):
            await charge.release()  # neither is billed
            raise

    async def _retake(self, pair: PreparedPair, first: ArchivedVideo, progress: PairProgress, gate: QualityGate) -> ArchivedVideo:
        """Take a failing shot again, with another seed each time, until one passes or the gate's
        retakes (or the budget) run out; the chosen take lists every take in its sidecar."""
        logger = get_run_logger()
        takes = [(1, pair, first)]
        for number in range(2, gate.retakes + 2):
            previous = takes[-1][2].record.checks
            retake = pair.retake(number)
            logger.warning(
                "%s: take %d %s; taking it again (take %d, seed %s)",
                pair.label,
                number - 1,
                previous.summary() if previous else "was not checked",
                number,
                retake.prepared.parameters.seed,
            )
            try:
                video = await self._take(retake, progress)
            except SkippedForBudgetError as skipped:
                logger.warning("%s: no more takes: %s", pair.label, skipped.reason)
                break
            await report_archived(video)  # every take shows in the UI, flagged when it fails
            takes.append((number, retake, video))
            if video.record.checks is not None and video.record.checks.passed:
                break
        passing = [t for t in takes if t[2].record.checks is not None and t[2].record.checks.passed]
        chosen = passing[0] if passing else max(takes, key=lambda t: score(t[2].record.checks))
        listed = [
            TakeRecord(
                take=number,
                fingerprint=video.fingerprint,
                seed=take.prepared.parameters.seed,
                task_id=video.task_id,
                video_url=video.video_url,
                checks=video.record.checks,
                chosen=number == chosen[0],
            )
            for number, take, video in takes
        ]
        if not passing:
            logger.warning("%s: no take passed its checks; take %d, the best, is the pair's video (flagged)", pair.label, chosen[0])
        record = await rewrite_sidecar(self.setup.destination, chosen[2].record.model_copy(update={"takes": listed}), self.setup.credentials.endpoint)
        return self.result(pair.label, record, reused=all(video.reused for _, _, video in takes))

    async def _submit(self, pair: PreparedPair, *, refresh: bool, after: Optional[State] = None) -> tuple[State, SubmittedTask, bool]:
        """The submit task, sent when the service is not in an outage (or when it is this pair's turn
        to probe it); ``ServiceOutageError`` when the outage outlasts its patience (nothing sent)."""
        watch = outage_watch(self.setup.credentials.endpoint, pair.prepared.spec.name)
        while True:
            probe = await watch.admit()
            try:
                await self.capacity.before_submit()
                task = self.submit_task.with_options(refresh_cache=True) if refresh else self.submit_task
                state = await _call(
                    task,
                    pair.prepared,
                    self.setup.credentials,
                    after=after,
                    coordination=self.setup.coordination,
                    plain={"label": pair.label, "fresh": refresh},
                )
                submitted: SubmittedTask = await state.aresult()
                return state, submitted, state.name == "Cached" or submitted.reused_from is not None
            except ServiceOutageError:
                continue  # not sent: the watch says when the next create may go
            finally:
                if probe:
                    watch.release_probe()

    async def _poll(self, submitted: SubmittedTask, label: str, after: State) -> tuple[State, VideoResult]:
        state = await _call(poll_video, submitted, self.setup.credentials, self.setup.poll, after=after, plain={"label": label})
        video: VideoResult = await state.aresult()
        return state, video

    async def _generate(self, pair: PreparedPair, charge: PairCharge, progress: PairProgress) -> ArchivedVideo:
        logger = get_run_logger()
        label, credentials = pair.label, self.setup.credentials
        async with self.capacity.generation():
            progress.stage = "submitting"
            try:
                state, submitted, reused = await self._submit(pair, refresh=self.setup.force)
            except SubmissionOutcomeUnknownError:
                raise  # it may have created a task: its charge stands
            except Exception:
                await charge.release()  # refused: nothing was created
                raise
            if reused:
                await charge.release()
                logger.info("%s: reusing task %s submitted at %s", label, submitted.task_id, submitted.submitted_at)
            else:
                await charge.commit(check=False)  # paid already, whatever the budgets say
            progress.task_id = submitted.task_id
            progress.advance("generating")
            try:
                state, video = await self._poll(submitted, label, after=state)
            except (TaskExpiredError, TaskCanceledError, TaskFailedError, AdoptedTaskMismatchError) as error:
                if not _worth_resubmitting(error, reused):
                    raise
                if reused:  # this run paid nothing so far; a failed task of its own was not billed either
                    await charge.commit()
                logger.warning("%s: task %s ended %s; submitting once more", label, submitted.task_id, type(error).__name__)
                # No wait_for on the failed poll: Prefect would not run a task whose upstream failed.
                state, submitted, _ = await self._submit(pair, refresh=True)
                progress.task_id = submitted.task_id
                state, video = await self._poll(submitted, label, after=state)
        if submitted.endpoint is None:  # cached by an older version
            submitted = submitted.model_copy(update={"endpoint": credentials.endpoint})
        progress.advance("archiving")
        # The pipeline looked in the archive before submitting: the archive task need not look again.
        state = await _call(
            archive_video,
            video,
            submitted,
            pair.record,
            self.setup.destination,
            after=state,
            keyframes=pair.keyframes,
            thresholds=self.setup.thresholds,
            plain={"label": label, "force": self.setup.force, "look_first": False},
        )
        archived: ArchiveRecord = await state.aresult()
        note_archived(archived.task_id)
        charge.settle(archived.cost)
        return self.result(label, archived, reused=False)
