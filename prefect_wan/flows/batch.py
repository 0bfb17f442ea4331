"""``keyframes_batch``: many pairs, from a list or a manifest, concurrently and independently."""

# Annotations are evaluated here, not postponed: a Prefect runner validates a deployment run's
# parameters against them, and postponed names (KeyframePair...) fail there as 'not fully defined'.

import asyncio
import contextlib
from collections import Counter
from pathlib import PurePosixPath
from typing import Any, Optional, Union

from prefect import get_run_logger
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.runtime import flow_run
from prefect.states import Completed

from prefect_wan.client.errors import WanError
from prefect_wan.client.outage import ServiceOutageError, patience_seconds
from prefect_wan.flows.fanout import check_fan_out, run_on_pool
from prefect_wan.flows.manifest import load_manifest
from prefect_wan.flows.models import ArchivedVideo, BatchResult, KeyframePair, PairFailure, PairSkip
from prefect_wan.flows.parameters import DEFAULT_IN_FLIGHT, InFlightParameters, RunParameters
from prefect_wan.flows.pipeline import PairProgress
from prefect_wan.flows.plan import RunPlan, plan_run
from prefect_wan.flows.prepared import PreparedPair
from prefect_wan.flows.progress import RunProgress, announce
from prefect_wan.flows.reporting import artifact_key, report_batch, report_plan
from prefect_wan.flows.review import Review, review_then_render
from prefect_wan.flows.setup import RunSetup, wan_flow
from prefect_wan.spend.budget import SkippedForBudgetError

__all__ = ["DEFAULT_IN_FLIGHT", "BatchFailedError", "keyframes_batch"]

# How often the progress artifact is brought up to date while pairs generate (besides at each end).
PROGRESS_REFRESH_SECONDS = 10.0


class BatchFailedError(WanError):
    """Some pairs failed; the others were archived. The message lists the failures; ``result`` has them all."""

    def __init__(self, message: str, result: Optional[BatchResult] = None) -> None:
        self.result = result
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.result))


def unique_labels(pairs: list[KeyframePair]) -> list[KeyframePair]:
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


@wan_flow(name="keyframes-batch", flow_run_name=_batch_run_name)
async def keyframes_batch(
    pairs: Optional[list[KeyframePair]] = None,
    manifest: Optional[str] = None,
    manifest_storage_options: Optional[dict[str, Any]] = None,
    fan_out: Optional[str] = None,
    review: Optional[Review] = None,
    run: RunParameters = RunParameters(),
    flight: InFlightParameters = InFlightParameters(),
) -> Union[BatchResult, RunPlan]:
    """Generate and archive every pair; one pair's failure never stops the others.

    A dry run preflights every pair and says what would be archived, reused or submitted and at
    what cost (a table artifact). With ``max_cost``, pairs that would take the run past it are
    reported as skipped for budget.

    Args:
        pairs: Pairs given inline.
        manifest: CSV/JSON/YAML manifest on any fsspec path; relative frame paths resolve against it.
        manifest_storage_options: fsspec options for the manifest and the frames it names.
        fan_out: Name of a deployment of the pair flow (``keyframes-to-video/<name>``) on a work
            pool: each pair becomes one of its runs, so every worker of the pool takes a share.
            This run still checks each pair first (preflight, archive, budget) and gathers the
            results, failures and progress. Credentials and coordination must then be saved
            blocks' names, and the destination a place every worker reaches.
        review: Draft every pair cheaply first and wait for a person's decisions in the Prefect UI;
            render only the approved pairs (``Review(draft_resolution="480P")``).

    Returns:
        The archived videos, the failures and the pairs skipped for budget (or the plan, for a dry
        run). The run fails (after archiving the rest) if any pair failed; one that only skipped
        pairs for budget completes, with a message that says so.
    """
    logger = get_run_logger()
    todo = list(pairs or [])
    if manifest:
        todo += await asyncio.to_thread(load_manifest, manifest, manifest_storage_options)
    if not todo:
        raise ValueError("nothing to do: give pairs or a manifest")
    todo = unique_labels(todo)
    setup = await RunSetup.resolve(run, manifest_storage_options)
    if fan_out:
        check_fan_out(run.credentials, run.coordination, setup.destination)
    if setup.dry_run:
        plan = await plan_run(setup, todo, review)
        await report_plan(plan, key=artifact_key("wan-plan"))
        logger.info("Dry run, nothing sent: %s", plan.summary)
        return plan
    # A reviewed batch drafts from pairs prepared once, every one refused before anything is sent.
    reviewed = await setup.prepare_all(todo) if review is not None else []
    pipeline = await setup.start(in_flight=flight.max_in_flight, concurrency_limit=flight.concurrency_limit, rate_limit=flight.rate_limit)
    # Bounds how many pairs hold their frames in memory at once, while keeping the next ones ready.
    admitted = asyncio.Semaphore(flight.max_in_flight + 2)
    progress = RunProgress(f"batch of {len(todo)}", [PairProgress(label=pair.display_label()) for pair in todo], pipeline.spend)
    announce(progress)
    progress_artifact = await acreate_progress_artifact(0.0, key=artifact_key("wan-batch-progress"), description=progress.line())
    result = BatchResult()

    async def report_progress() -> None:
        await aupdate_progress_artifact(progress_artifact, 100.0 * progress.fraction_done, description=progress.line())

    async def attempt(item: Union[KeyframePair, PreparedPair], pair_progress: PairProgress) -> Optional[ArchivedVideo]:
        """One pair through the pipeline (or a worker of the pool): its video, or None when it
        failed or was skipped, which the result records."""
        async with admitted:
            try:
                if fan_out and isinstance(item, KeyframePair):
                    return await run_on_pool(
                        pipeline,
                        item,
                        deployment=fan_out,
                        credentials_name=str(run.credentials),
                        coordination_name=run.coordination if isinstance(run.coordination, str) else None,
                        progress=pair_progress,
                    )
                return await pipeline.generate(item, pair_progress)
            except SkippedForBudgetError as skipped:
                estimate = skipped.estimate
                result.skipped.append(
                    PairSkip(
                        label=pair_progress.label,
                        reason=skipped.reason,
                        estimated_cost=estimate.amount if estimate else None,
                        currency=estimate.currency if estimate else None,
                    )
                )
            except ServiceOutageError as outage:
                if result.outage is None:  # said once for the run, not once per pair
                    result.outage = outage.report.describe()
                    logger.error("The service is in an outage: %s. Pairs not yet sent wait for it, at most %g s in all", result.outage, patience_seconds())
                result.unsubmitted.append(pair_progress.label)
            except Exception as error:  # one pair's failure must not stop the others
                logger.error("%s failed: %s: %s", pair_progress.label, type(error).__name__, error)
                result.failures.append(
                    PairFailure(
                        label=pair_progress.label,
                        task_id=pair_progress.task_id,
                        error=type(error).__name__,
                        code=getattr(error, "code", None),
                        message=str(error),
                    )
                )
            finally:
                await report_progress()
        return None

    async def generate(pair: KeyframePair, pair_progress: PairProgress) -> None:
        if (video := await attempt(pair, pair_progress)) is not None:
            result.videos.append(video)

    async def refresh() -> None:
        while True:
            await asyncio.sleep(PROGRESS_REFRESH_SECONDS)
            await report_progress()

    refresher = asyncio.create_task(refresh())
    try:
        if review is not None:
            by_label = {p.label: p for p in progress.pairs}

            async def render(item: PreparedPair, label: str) -> Optional[ArchivedVideo]:
                video = await attempt(item, by_label[label])
                if video is not None and item.label != label:  # a draft: the pair now waits for a decision
                    by_label[label].stage = "review"
                return video

            outcome = await review_then_render(review, setup, reviewed, render)
            # What the pipeline skipped for budget while drafting and rendering, beside what review
            # skipped before drafting: an approved pair whose final did not fit is reported, not lost.
            finals = {pair.label: pair.prepared.parameters.resolution or "" for pair in reviewed}
            rendered = {video.label for video in outcome.finals}
            during = [
                outcome.refused_final(skip, finals[skip.label]) if skip.label in outcome.approved and skip.label not in rendered else skip
                for skip in result.skipped
            ]
            result.videos, result.drafts, result.dropped, result.skipped = outcome.finals, outcome.drafts, outcome.dropped, outcome.skipped + during
            for label in [skipped.label for skipped in outcome.skipped] + outcome.dropped:
                by_label[label].stage = "skipped"  # ended: not rendered
        else:
            await asyncio.gather(*(generate(pair, pair_progress) for pair, pair_progress in zip(todo, progress.pairs)))
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
    await report_progress()  # the last word: no refresh still in flight can overwrite it
    result.committed, result.billed = pipeline.spend.totals(), pipeline.spend.totals(billed_only=True)
    await report_batch(result, key=artifact_key("wan-batch"), order=[pair.display_label() for pair in todo])
    logger.info("Batch finished: %s", result.summary)
    if result.failures or result.unsubmitted:
        raise BatchFailedError(result.summary, result)
    if result.skipped:
        # Not a failure (the budget did its job), but the run says so where it is seen first.
        # Prefect makes a returned state the run's final state; callers still get ``result``.
        return Completed(message=f"Budget reached: {result.summary}", data=result)  # type: ignore[return-value]
    return result
