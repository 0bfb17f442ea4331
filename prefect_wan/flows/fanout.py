"""Fan-out: a batch's pairs run as deployment runs of the pair flow, on whichever workers of the
work pool pick them up, while the batch keeps the results, failures, budget and progress.

The parent checks each pair first (preflight, archive, budget), so nothing it refuses reaches a
worker. A child's video is read back from the archive, which every worker shares, not from
Prefect's result storage, which may be local to the machine the child ran on.
"""

import asyncio
import contextlib
from typing import Any, Iterator, Optional
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments import arun_deployment

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.store import find_archived
from prefect_wan.client.errors import PreflightError, PreflightViolation, WanError
from prefect_wan.flows.models import ArchivedVideo, KeyframePair
from prefect_wan.flows.pipeline import PairProgress, PairRun
from prefect_wan.spend.budget import SkippedForBudgetError

# How often a child run's state is read while it is on its way (each read is one API call).
CHILD_POLL_SECONDS = 2.0


class FanOutRunError(WanError):
    """A pair's deployment run did not end with its video archived."""


def check_fan_out(credentials: Any, coordination: Any, destination: ArchiveDestination) -> None:
    """What a worker elsewhere must be able to load by name, checked before any run is created."""
    problems = []
    if not isinstance(credentials, str):
        problems.append(
            PreflightViolation(
                "credentials",
                type(credentials).__name__,
                "fan_out needs the name of a saved WanCredentials block: a worker on another machine loads it by name",
            )
        )
    if coordination is not None and not isinstance(coordination, str):
        problems.append(
            PreflightViolation(
                "coordination",
                type(coordination).__name__,
                "fan_out needs the name of a saved WanCoordination block (or PREFECT_WAN_COORDINATION on the workers)",
            )
        )
    if "://" not in destination.url and not destination.url.startswith("/"):
        problems.append(
            PreflightViolation(
                "destination",
                destination.url,
                "fan_out needs an absolute path or a URL every worker can reach (s3://...)",
            )
        )
    if problems:
        raise PreflightError(problems)


@contextlib.contextmanager
def _stage_on_failure(progress: PairProgress) -> Iterator[None]:
    """The pair's stage when its child run goes wrong: skipped for budget, or failed."""
    try:
        yield
    except SkippedForBudgetError:
        progress.stage = "skipped"
        raise
    except Exception:
        progress.stage = "failed"
        raise


async def run_on_pool(
    pipeline: PairRun,
    pair: KeyframePair,
    *,
    deployment: str,
    credentials_name: str,
    coordination_name: Optional[str],
    progress: PairProgress,
) -> ArchivedVideo:
    """One pair as one run of the pair flow's deployment (a subflow of this run in the UI)."""
    with _stage_on_failure(progress):
        video = await _child_run(pipeline, pair, deployment, credentials_name, coordination_name, progress)
    progress.advance("archiving")  # the end of its generation, for the run's ETA
    progress.advance("done")
    return video


async def _child_run(
    pipeline: PairRun, pair: KeyframePair, deployment: str, credentials_name: str, coordination_name: Optional[str], progress: PairProgress
) -> ArchivedVideo:
    logger = get_run_logger()
    setup = pipeline.setup
    prepared = await setup.prepare(pair)  # refused here, not on a worker
    progress.fingerprint = prepared.fingerprint
    if (existing := await pipeline.find_archived(prepared)) is not None:
        progress.task_id = existing.task_id
        return pipeline.result(prepared.label, existing, reused=True)
    charge = await pipeline.charge(prepared)
    destination, poll = setup.destination, setup.poll
    parameters = {
        "first_frame": pair.first_frame,
        "last_frame": pair.last_frame,
        "prompt": pair.prompt,
        "label": prepared.label,
        "options": pair.merged_options(setup.options).model_dump(mode="json"),
        "credentials": credentials_name,
        "destination": destination.url,
        "storage_options": destination.storage_options,
        "frame_storage_options": setup.frame_storage_options,
        "force": setup.force,
        "poll": poll.model_dump(mode="json") if poll else None,
        "coordination": coordination_name,
    }
    del prepared  # the frames' bytes: the child run reads them itself
    async with pipeline.capacity.generating:
        child = await arun_deployment(deployment, parameters=parameters, timeout=0, as_subflow=True)
        logger.info("%s: running as %s (flow run %s) on a worker of the pool", progress.label, child.name, child.id)
        state = await _follow(child.id, progress)
    if state.type is not StateType.COMPLETED:
        # A child that failed may have paid before it ended: its charge stands.
        raise FanOutRunError(f"{progress.label}: flow run {child.name} ended {state.name}: {state.message or 'no message'}")
    record = await find_archived(destination, charge.key, setup.credentials.endpoint)
    if record is None:
        raise FanOutRunError(
            f"{progress.label}: flow run {child.name} completed but its video is not at {destination.url}: the workers must share "
            "the archive (an s3:// or shared-mount destination)"
        )
    charge.settle(record.cost)
    progress.task_id = record.task_id
    return pipeline.result(progress.label, record, reused=False)


async def _follow(flow_run_id: UUID, progress: PairProgress) -> Any:
    """Wait for the child run to end, keeping the pair's stage in step with it."""
    async with get_client() as client:
        while True:
            state = (await client.read_flow_run(flow_run_id)).state
            if state is not None and state.is_final():
                return state
            if state is not None and state.type is StateType.RUNNING:
                progress.advance("generating")
            await asyncio.sleep(CHILD_POLL_SECONDS)
