"""``keyframes_batch``: many pairs, from a list or a manifest, concurrently and independently."""

# Annotations are evaluated here, not postponed: a Prefect runner validates a deployment run's
# parameters against them, and postponed names (KeyframePair...) fail there as 'not fully defined'.

import asyncio
from collections import Counter
from pathlib import PurePosixPath
from typing import Any, Optional, Union

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.states import Completed

from prefect_wan.archive.destination import DEFAULT_DESTINATION, ArchiveDestination
from prefect_wan.blocks.coordination import WanCoordination, resolve_coordination
from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.errors import WanError
from prefect_wan.client.polling import PollSchedule
from prefect_wan.flows.fanout import check_fan_out, run_on_pool
from prefect_wan.flows.keyframes import Destination
from prefect_wan.flows.manifest import load_manifest
from prefect_wan.flows.models import BatchResult, GenerationOptions, KeyframePair, PairFailure, PairSkip
from prefect_wan.flows.pipeline import PairProgress, Slots, generate_pair, prepare_coordination, resolve_credentials
from prefect_wan.flows.plan import RunPlan, plan_pairs
from prefect_wan.flows.progress import RunProgress, announce
from prefect_wan.flows.reporting import artifact_key, report_batch, report_plan
from prefect_wan.spend.budget import Budget, SkippedForBudgetError, SpendLedger
from prefect_wan.spend.cancellation import cancel_queued_work, remember_run_credentials


# Measured with bench/scheduler.py (2 running slots, equal generation times): makespan over ideal
# 1.040 at 2 in flight, 1.008 at 3 and 4, 1.009 at 6. Real generation times vary (1-5 min), and two
# tasks ending together drain a queue of one; 6 keeps four queued while committing little ahead.
DEFAULT_IN_FLIGHT = 6
SERVICE_QUEUE_LIMIT = 500
# How often the progress artifact is brought up to date while pairs generate (besides at each end).
PROGRESS_REFRESH_SECONDS = 10.0


class BatchFailedError(WanError):
    """Some pairs failed; the others were archived. The message lists the failures."""


def _unique_labels(pairs: list[KeyframePair]) -> list[KeyframePair]:
    seen: Counter[str] = Counter()
    named = []
    for pair in pairs:
        label = pair.display_label()
        seen[label] += 1
        named.append(pair.model_copy(update={"label": label if seen[label] == 1 else f"{label}-{seen[label]}"}))
    return named


def _batch_run_name() -> str:
    parameters = flow_run.parameters or {}
    if parameters.get("manifest"):
        stem = PurePosixPath(str(parameters["manifest"]).split("?")[0]).stem
        return f"wan-batch-{stem}"
    return f"wan-batch-{len(parameters.get('pairs') or [])}-pairs"


@flow(name="keyframes-batch", flow_run_name=_batch_run_name, on_cancellation=[cancel_queued_work], on_crashed=[cancel_queued_work])
async def keyframes_batch(
    pairs: Optional[list[KeyframePair]] = None,
    manifest: Optional[str] = None,
    manifest_storage_options: Optional[dict[str, Any]] = None,
    options: GenerationOptions = GenerationOptions(),
    credentials: Union[WanCredentials, str, None] = None,
    destination: Destination = DEFAULT_DESTINATION,
    storage_options: Optional[dict[str, Any]] = None,
    max_in_flight: int = DEFAULT_IN_FLIGHT,
    concurrency_limit: Optional[str] = None,
    rate_limit: Optional[str] = None,
    force: bool = False,
    poll: Optional[PollSchedule] = None,
    max_cost: Union[Budget, str, None] = None,
    dry_run: bool = False,
    coordination: Union[WanCoordination, str, None] = None,
    fan_out: Optional[str] = None,
) -> Union[BatchResult, RunPlan]:
    """Generate and archive every pair; one pair's failure never stops the others.

    Args:
        pairs: Pairs given inline.
        manifest: CSV/JSON/YAML manifest on any fsspec path; relative frame paths resolve against it.
        manifest_storage_options: fsspec options for the manifest and the frames it names.
        options: Generation options for every pair (a pair's own fields win).
        credentials: A WanCredentials block, the name of a saved one, or None for DASHSCOPE_API_KEY.
        destination: fsspec URL or filesystem block of the archive.
        storage_options: fsspec options for the destination.
        max_in_flight: Pairs submitted and not yet finished, at most (the service queues what its
            2 or 5 running slots cannot take yet, so a slot never waits for us). The one bound on
            what a run has committed at once: memory, the service's queue of 500, spending.
        concurrency_limit: Name of a Prefect global concurrency limit to hold while a pair is in flight.
        rate_limit: Name of a Prefect rate limit (slot decay) to take before each submission.
        force: Generate again even what is archived.
        poll: When to ask the service for news.
        max_cost: The most this run may commit, with its currency ("12.5 CNY"): pairs that would
            take the run past it are not submitted, and are reported as skipped for budget.
            Archived and reused pairs cost nothing.
        dry_run: Only plan: preflight every pair, say what would be archived, reused or submitted
            and at what cost (a table artifact), and send nothing.
        coordination: Where submission records and submit locks live: a WanCoordination block,
            its saved name, or None (the block named by PREFECT_WAN_COORDINATION, else this machine).
        fan_out: Name of a deployment of the pair flow (``keyframes-to-video/<name>``) on a work
            pool: each pair becomes one of its runs, so every worker of the pool takes a share.
            This run still checks each pair first (preflight, archive, budget) and gathers the
            results, failures and progress. Credentials and coordination must then be saved
            blocks' names, and the destination a place every worker reaches.

    Returns:
        The archived videos, the failures and the pairs skipped for budget (or the plan, for a dry
        run). The run fails (after archiving the rest) if any pair failed; one that only skipped
        pairs for budget completes, with a message that says so.
    """
    logger = get_run_logger()
    if not 1 <= max_in_flight <= SERVICE_QUEUE_LIMIT:
        raise ValueError(f"max_in_flight={max_in_flight}: must be in [1, {SERVICE_QUEUE_LIMIT}] (the service queues at most 500)")
    todo = list(pairs or [])
    if manifest:
        todo += await asyncio.to_thread(load_manifest, manifest, manifest_storage_options)
    if not todo:
        raise ValueError("nothing to do: give pairs or a manifest")
    todo = _unique_labels(todo)
    budget = Budget.coerce(max_cost)
    resolved = await resolve_credentials(credentials)
    target = ArchiveDestination.coerce(destination, storage_options)
    if fan_out:
        check_fan_out(credentials, coordination, target)
    if dry_run:
        shared = await resolve_coordination(coordination)
        plan = await plan_pairs(todo, options, resolved, target, budget=budget, force=force,
                                frame_storage_options=manifest_storage_options, journal=shared.journal())
        await report_plan(plan, key=artifact_key("wan-plan"))
        logger.info("Dry run, nothing sent: %s", plan.summary)
        return plan
    shared = await prepare_coordination(coordination)
    remember_run_credentials(resolved, shared)
    slots = Slots(asyncio.Semaphore(max_in_flight), concurrency_limit, rate_limit, SpendLedger(budget), shared)
    # Bounds how many pairs hold their frames in memory at once, while keeping the next ones ready.
    admitted = asyncio.Semaphore(max_in_flight + 2)
    progress = RunProgress(f"batch of {len(todo)}", [PairProgress(label=pair.display_label()) for pair in todo], slots.spend)
    announce(progress)
    progress_artifact = await acreate_progress_artifact(0.0, key=artifact_key("wan-batch-progress"), description=progress.line())
    result = BatchResult()

    async def report_progress() -> None:
        await aupdate_progress_artifact(progress_artifact, 100.0 * progress.fraction_done, description=progress.line())

    async def run(pair: KeyframePair, pair_progress: PairProgress) -> None:
        async with admitted:
            try:
                if fan_out:
                    video = await run_on_pool(
                        pair, options, deployment=fan_out, credentials_name=str(credentials), credentials=resolved,
                        coordination_name=coordination if isinstance(coordination, str) else None, destination=target,
                        slots=slots, poll=poll, force=force, frame_storage_options=manifest_storage_options, progress=pair_progress,
                    )
                else:
                    video = await generate_pair(
                        pair, options, credentials=resolved, destination=target, slots=slots, poll=poll,
                        force=force, frame_storage_options=manifest_storage_options, progress=pair_progress,
                    )
                result.videos.append(video)
            except SkippedForBudgetError as skipped:
                estimate = skipped.estimate
                result.skipped.append(PairSkip(
                    label=pair_progress.label, reason=skipped.reason,
                    estimated_cost=estimate.amount if estimate else None, currency=estimate.currency if estimate else None,
                ))
            except Exception as error:  # one pair's failure must not stop the others
                logger.error("%s failed: %s: %s", pair_progress.label, type(error).__name__, error)
                result.failures.append(PairFailure(
                    label=pair_progress.label, task_id=pair_progress.task_id, error=type(error).__name__,
                    code=getattr(error, "code", None), message=str(error),
                ))
            finally:
                await report_progress()

    async def refresh() -> None:
        while True:
            await asyncio.sleep(PROGRESS_REFRESH_SECONDS)
            await report_progress()

    refresher = asyncio.create_task(refresh())
    try:
        await asyncio.gather(*(run(pair, pair_progress) for pair, pair_progress in zip(todo, progress.pairs)))
    finally:
        refresher.cancel()
    result.committed, result.billed = slots.spend.totals(), slots.spend.totals(billed_only=True)
    await report_batch(result, key=artifact_key("wan-batch"))
    logger.info("Batch finished: %s", result.summary)
    if result.failures:
        raise BatchFailedError(result.summary)
    if result.skipped:
        # Not a failure (the budget did its job), but the run says so where it is seen first.
        # Prefect makes a returned state the run's final state; callers still get ``result``.
        return Completed(message=f"Budget reached: {result.summary}", data=result)  # type: ignore[return-value]
    return result
