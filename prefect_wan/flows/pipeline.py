"""One pair from frames to archive: preflight, reuse what exists, submit once, poll, archive.

Shared by the pair flow and the batch flow, so both behave the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional, Union
from uuid import UUID

from prefect import get_run_logger
from prefect.client.schemas.objects import State
from prefect.utilities.annotations import quote
from prefect.concurrency.asyncio import concurrency, rate_limit

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.record import ArchiveRecord, CostEstimate, FrameRecord, RequestRecord
from prefect_wan.archive.store import archive_stem, find_archived, sidecar_name
from prefect_wan.blocks.coordination import COORDINATION_ENV, WanCoordination, resolve_coordination
from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.errors import (
    AdoptedTaskMismatchError,
    SubmissionOutcomeUnknownError,
    TaskCanceledError,
    TaskExpiredError,
    TaskFailedError,
)
from prefect_wan.client.images import LoadedMedia
from prefect_wan.client.polling import PollSchedule
from prefect_wan.client.preflight import PreparedRequest
from prefect_wan.client.results import SubmittedTask
from prefect_wan.flows.models import ArchivedVideo, GenerationOptions, KeyframePair
from prefect_wan.flows.reporting import report_archived, report_failed
from prefect_wan.spend.account import DailyBudget
from prefect_wan.spend.budget import Budget, SkippedForBudgetError, SpendLedger
from prefect_wan.spend.pricing import estimate_request_cost
from prefect_wan.tasks.archive import archive_video
from prefect_wan.tasks.poll import poll_video
from prefect_wan.tasks.caching import submission_cache_policy
from prefect_wan.tasks.journal import SubmissionJournal, current_flow_run_id
from prefect_wan.tasks.submit import recorded_submission, submit_video


@dataclass
class Slots:
    """What bounds a run: pairs in flight (submitted and unfinished), its spending and, when named,
    a Prefect global concurrency limit and rate limit shared with every other run."""

    generating: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    concurrency_limit: Optional[str] = None
    rate_limit: Optional[str] = None
    spend: SpendLedger = field(default_factory=SpendLedger)
    coordination: WanCoordination = field(default_factory=WanCoordination)
    _submit_task: Any = field(default=None, init=False, repr=False)
    _lock_manager: Any = field(default=None, init=False, repr=False)
    _journal: Optional[SubmissionJournal] = field(default=None, init=False, repr=False)
    _daily: Optional[DailyBudget] = field(default=None, init=False, repr=False)
    _daily_keys: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        # The account's shared limits, when the run names none of its own.
        self.concurrency_limit = self.concurrency_limit or self.coordination.concurrency_limit
        self.rate_limit = self.rate_limit or self.coordination.rate_limit
        budget = Budget.coerce(self.coordination.daily_budget, field="daily_budget")
        if budget is not None:
            self._daily = DailyBudget(budget, self.journal, self.lock_manager)

    @property
    def journal(self) -> SubmissionJournal:
        if self._journal is None:
            self._journal = self.coordination.journal()
        return self._journal

    @property
    def lock_manager(self) -> Any:
        if self._lock_manager is None:
            self._lock_manager = self.coordination.lock_manager()
        return self._lock_manager

    def submit_task(self) -> Any:
        """The submit task under this run's lock: this machine's file locks, or Redis."""
        if self.coordination.redis_url is None:
            return submit_video
        if self._submit_task is None:
            self._submit_task = submit_video.with_options(cache_policy=submission_cache_policy(self.lock_manager))
        return self._submit_task

    async def commit_spend(self, endpoint: str, key: str, cost: CostEstimate, *, label: str, check: bool = True) -> bool:
        """Enter a submission about to be sent in the run's ledger and the account's day, or raise
        ``SkippedForBudgetError``; True when this call entered it in the run's ledger."""
        entered = self.spend.commit(key, cost, label=label, check=check)
        if entered and self._daily is not None:
            try:
                if await self._daily.commit(endpoint, key, cost, label=label, flow_run_id=current_flow_run_id(), check=check):
                    self._daily_keys.add(key)
            except BaseException:
                self.spend.release(key)
                raise
        return entered

    async def charge_unless_recorded(self, credentials: WanCredentials, fingerprint: str, cost: CostEstimate, *, label: str, force: bool) -> bool:
        """Charge the pair before it waits for anything, unless a live task recorded for it will be
        adopted (which costs nothing); ``SkippedForBudgetError`` when the budgets cannot cover it."""
        if not force and await recorded_submission(fingerprint, credentials, self.journal) is not None:
            return False
        return await self.commit_spend(credentials.endpoint, fingerprint, cost, label=label)

    async def release_spend(self, endpoint: str, key: str) -> None:
        self.spend.release(key)
        if self._daily is not None and key in self._daily_keys:  # only what this run entered
            self._daily_keys.discard(key)
            await self._daily.release(endpoint, key)

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


async def resolve_credentials(credentials: Union[WanCredentials, str, None]) -> WanCredentials:
    """A block, a saved block's name, or None (DASHSCOPE_API_KEY, Singapore)."""
    if isinstance(credentials, WanCredentials):
        return credentials
    if isinstance(credentials, str):
        return await WanCredentials.aload(credentials)
    return WanCredentials()


# Work pools whose flow runs execute on the worker's own host (and so share its PREFECT_HOME).
_SAME_HOST_POOL_TYPES = ("process",)


async def prepare_coordination(coordination: Union[WanCoordination, str, None]) -> WanCoordination:
    """The run's shared state, checked before anything is submitted: refused when it is configured
    for several machines but lives on one, or when its Redis or store cannot be reached; a warning
    when the run executes on container infrastructure with this machine's state."""
    resolved = await resolve_coordination(coordination)
    await resolved.check()
    local = resolved.local_parts()
    if local and (pool := await _work_pool_of_this_run()) is not None and pool[1] not in _SAME_HOST_POOL_TYPES:
        get_run_logger().warning(
            "This run executes on work pool %r (type %s), whose flow runs may start on a fresh container or another host, "
            "but it keeps %s: a run rescheduled elsewhere, or a second worker, would pay for the same pairs again. "
            "Save a WanCoordination block with a shared submissions_url and a redis_url (many_machines=True) and pass its "
            "name as coordination=, or set %s in the work pool's environment.",
            pool[0], pool[1], " and ".join(local), COORDINATION_ENV,
        )
    return resolved


async def _work_pool_of_this_run() -> Optional[tuple[str, str]]:
    """(name, type) of the work pool running this flow run, if it runs on one."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if run_id is None:
        return None
    try:
        async with get_client() as client:
            run = await client.read_flow_run(UUID(run_id))
            if not run.work_pool_name:
                return None
            pool = await client.read_work_pool(run.work_pool_name)
    except Exception:  # the warning is advice: an API hiccup must not fail the run
        return None
    return pool.name, pool.type


def _frame(media: LoadedMedia) -> FrameRecord:
    return FrameRecord(
        source=media.origin, sha256=media.sha256, bytes=media.size, format=media.format,
        width=media.width, height=media.height,
    )


def request_record(prepared: PreparedRequest) -> RequestRecord:
    params = prepared.parameters
    return RequestRecord(
        model=prepared.spec.name,
        region=prepared.region.value,
        family=prepared.family.name,
        prompt=prepared.prompt,
        negative_prompt=prepared.negative_prompt,
        resolution=params.resolution,
        ratio=params.ratio,
        audio=params.audio,
        duration=params.duration,
        prompt_extend=params.prompt_extend,
        watermark=params.watermark,
        seed=params.seed,
        template=prepared.request.template,
        first_frame=_frame(prepared.first_frame),
        last_frame=_frame(prepared.last_frame) if prepared.last_frame else None,
        driving_audio=_frame(prepared.driving_audio) if prepared.driving_audio else None,
        predicted_size=prepared.output_size,
    )


def _worth_resubmitting(error: Exception, reused: bool) -> bool:
    if isinstance(error, (TaskExpiredError, AdoptedTaskMismatchError)):
        return True  # the id expired or vanished: waiting longer can never help
    if isinstance(error, TaskFailedError) and error.worth_resubmitting:
        return True  # transient failure on the service's side; failed tasks are not billed
    # A task canceled or failed in an earlier run: this run asked for the work again.
    return reused and isinstance(error, (TaskCanceledError, TaskFailedError))


@dataclass
class PairProgress:
    """What is known of one pair while it runs, for reports even when it fails."""

    label: str
    fingerprint: Optional[str] = None
    task_id: Optional[str] = None
    stage: str = "checking"  # checking, submitting, generating, archiving, done, failed, skipped
    submitted_at: Optional[float] = None  # monotonic, when this run's task was accepted
    finished_at: Optional[float] = None  # monotonic, when its video was ready (not for reused work)
    charged: bool = False  # this pair entered its work in the run's spend ledger

    def advance(self, stage: str) -> None:
        now = time.monotonic()
        if stage == "generating" and self.submitted_at is None:
            self.submitted_at = now
        if stage == "archiving" and self.submitted_at is not None:
            self.finished_at = now
        self.stage = stage


_PLAIN = frozenset({"label", "fresh", "force"})


async def _call(task: Any, *args: Any, after: Optional[State] = None, **kwargs: Any) -> State:
    """Run a task with its inputs quoted, and its only upstream the state given.

    Prefect links task inputs to earlier results by object identity, and strings shared by
    every pair (the model name, the region) would draw edges between unrelated pairs in the run
    graph; quoting stops that, and ``wait_for`` keeps the pair's own chain.
    """
    quoted_args = [quote(a) for a in args]
    # Labels name the task runs (and are this pair's own); flags are singletons Prefect never links.
    quoted_kwargs = {key: value if key in _PLAIN else quote(value) for key, value in kwargs.items()}
    # The upstream state with a stand-in result: Prefect would otherwise look inside the real one
    # too and find those shared strings again (True is a singleton, which it never links).
    upstream = [after.model_copy(update={"data": True})] if after is not None else None
    # Prefect's overloads do not type return_state=True for async tasks; it is awaitable at run time.
    return await task(*quoted_args, wait_for=upstream, return_state=True, **quoted_kwargs)  # type: ignore[no-any-return]


async def _submit(request, credentials, fingerprint, label, slots: Slots, *, refresh: bool, after: Optional[State] = None) -> tuple[State, SubmittedTask, bool]:
    await slots.before_submit()
    task = slots.submit_task()
    task = task.with_options(refresh_cache=True) if refresh else task
    state = await _call(task, request, credentials, fingerprint=fingerprint, label=label, fresh=refresh, after=after, coordination=slots.coordination)
    submitted: SubmittedTask = await state.aresult()
    return state, submitted, state.name == "Cached" or submitted.reused_from is not None


def archived_video(label: str, record: ArchiveRecord, destination: ArchiveDestination, endpoint: str, *, reused: bool) -> ArchivedVideo:
    """What a flow returns for an archived video: where it and its sidecar are, and the record."""
    return ArchivedVideo(
        label=label, fingerprint=record.fingerprint, task_id=record.task_id, video_url=record.video.url,
        sidecar_url=destination.public_url(destination.path(sidecar_name(archive_stem(record.fingerprint, endpoint)))),
        reused=reused, record=record,
        poster_view_url=destination.viewable_url(record.poster.path) if record.poster else None,
    )


async def generate_pair(pair: KeyframePair, options: GenerationOptions, *, progress: Optional[PairProgress] = None, **kwargs) -> ArchivedVideo:
    """Frames in, archived video out, reported as an artifact and an event either way.

    Re-running with the same inputs submits and downloads nothing. ``progress`` (optional) is kept
    up to date, so a caller can report on the pair while it runs and after it failed.
    """
    progress = progress or PairProgress(label=pair.display_label())
    try:
        video = await _generate(pair, options, progress=progress, **kwargs)
    except SkippedForBudgetError as skipped:
        progress.stage = "skipped"
        get_run_logger().warning("%s", skipped)
        raise
    except Exception as error:
        if isinstance(error, (TaskFailedError, TaskCanceledError)) and progress.charged and progress.fingerprint:
            await kwargs["slots"].release_spend(kwargs["credentials"].endpoint, progress.fingerprint)  # neither is billed
        progress.stage = "failed"
        progress.task_id = progress.task_id or getattr(error, "task_id", None)
        report_failed(progress.label, progress.fingerprint, error, task_id=progress.task_id)
        raise
    progress.advance("done")
    await report_archived(video)
    return video


async def _generate(
    pair: KeyframePair,
    options: GenerationOptions,
    *,
    credentials: WanCredentials,
    destination: ArchiveDestination,
    slots: Slots,
    poll: Optional[PollSchedule] = None,
    force: bool = False,
    frame_storage_options: Optional[dict] = None,
    progress: PairProgress,
) -> ArchivedVideo:
    logger = get_run_logger()
    label = pair.display_label()
    request = pair.to_request(options, frame_storage_options)
    async with credentials.get_client() as client:
        prepared = await client.prepare(request)  # every rule checked; nothing sent to DashScope
    fingerprint = progress.fingerprint = prepared.fingerprint
    record = request_record(prepared)
    cost = estimate_request_cost(prepared)
    spend = slots.spend
    del prepared  # the frames' bytes: the submit task reads them again only if it has to submit

    def result(archive: ArchiveRecord, reused: bool) -> ArchivedVideo:
        return archived_video(label, archive, destination, credentials.endpoint, reused=reused)

    if not force and (existing := await find_archived(destination, fingerprint, credentials.endpoint)) is not None:
        logger.info("%s: already archived at %s; nothing to submit or download", label, existing.video.url)
        progress.task_id = existing.task_id
        return result(existing, reused=True)

    await asyncio.to_thread(destination.check_writable)
    # Before waiting for a slot: a pair the budget cannot cover must not hold one.
    progress.charged = await slots.charge_unless_recorded(credentials, fingerprint, cost, label=label, force=force)
    async with slots.generation():
        progress.stage = "submitting"
        try:
            state, submitted, reused = await _submit(request, credentials, fingerprint, label, slots, refresh=force)
        except SubmissionOutcomeUnknownError:
            raise  # it may have created a task: its charge stands
        except Exception:
            if progress.charged:
                await slots.release_spend(credentials.endpoint, fingerprint)  # refused: nothing was created
            raise
        if reused and progress.charged:
            await slots.release_spend(credentials.endpoint, fingerprint)
            progress.charged = False
        if reused:
            logger.info("%s: reusing task %s submitted at %s", label, submitted.task_id, submitted.submitted_at)
        else:
            # Paid already, whatever the budgets say.
            progress.charged |= await slots.commit_spend(credentials.endpoint, fingerprint, cost, label=label, check=False)
        progress.task_id = submitted.task_id
        progress.advance("generating")
        state = await _call(poll_video, submitted, credentials, poll, label=label, after=state)
        try:
            video = await state.aresult()
        except (TaskExpiredError, TaskCanceledError, TaskFailedError, AdoptedTaskMismatchError) as error:
            if not _worth_resubmitting(error, reused):
                raise
            if reused:  # this run paid nothing so far; a failed task of its own was not billed either
                progress.charged |= await slots.commit_spend(credentials.endpoint, fingerprint, cost, label=label)
            logger.warning("%s: task %s ended %s; submitting once more", label, submitted.task_id, type(error).__name__)
            # No wait_for on the failed poll: Prefect would not run a task whose upstream failed.
            state, submitted, _ = await _submit(request, credentials, fingerprint, label, slots, refresh=True)
            progress.task_id = submitted.task_id
            state = await _call(poll_video, submitted, credentials, poll, label=label, after=state)
            video = await state.aresult()
    if submitted.endpoint is None:  # cached by an older version
        submitted = submitted.model_copy(update={"endpoint": credentials.endpoint})
    progress.advance("archiving")
    state = await _call(archive_video, video, submitted, record, destination, label=label, force=force, after=state)
    archived = await state.aresult()
    if progress.charged:  # a task adopted from an earlier run was paid by that run
        spend.settle(fingerprint, archived.cost)
    return result(archived, reused=False)
