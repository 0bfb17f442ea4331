"""Fan-out: a batch's pairs run as deployment runs of the pair flow, on whichever workers of the
work pool pick them up, while the batch keeps the results, failures, budget and progress.

The parent checks each pair first (preflight, archive, budget), so nothing it refuses reaches a
worker. A child's video is read back from the archive, which every worker shares, not from
Prefect's result storage, which may be local to the machine the child ran on.
"""

import asyncio
from typing import Any, Optional
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments import arun_deployment

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.store import find_archived
from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.errors import PreflightError, PreflightViolation, WanError
from prefect_wan.client.polling import PollSchedule
from prefect_wan.flows.models import ArchivedVideo, GenerationOptions, KeyframePair
from prefect_wan.flows.pipeline import PairProgress, Slots, archived_video
from prefect_wan.spend.budget import SkippedForBudgetError
from prefect_wan.spend.pricing import estimate_request_cost

# How often a child run's state is read while it is on its way (each read is one API call).
CHILD_POLL_SECONDS = 2.0


class FanOutRunError(WanError):
    """A pair's deployment run did not end with its video archived."""


def check_fan_out(credentials: Any, coordination: Any, destination: ArchiveDestination) -> None:
    """What a worker elsewhere must be able to load by name, checked before any run is created."""
    problems = []
    if not isinstance(credentials, str):
        problems.append(PreflightViolation(
            "credentials", type(credentials).__name__,
            "fan_out needs the name of a saved WanCredentials block: a worker on another machine loads it by name",
        ))
    if coordination is not None and not isinstance(coordination, str):
        problems.append(PreflightViolation(
            "coordination", type(coordination).__name__,
            "fan_out needs the name of a saved WanCoordination block (or PREFECT_WAN_COORDINATION on the workers)",
        ))
    if "://" not in destination.url and not destination.url.startswith("/"):
        problems.append(PreflightViolation(
            "destination", destination.url, "fan_out needs an absolute path or a URL every worker can reach (s3://...)",
        ))
    if problems:
        raise PreflightError(problems)


async def run_on_pool(pair: KeyframePair, options: GenerationOptions, *, progress: PairProgress, **kwargs: Any) -> ArchivedVideo:
    """One pair as one run of the pair flow's deployment (a subflow of this run in the UI)."""
    try:
        video = await _run_on_pool(pair, options, progress=progress, **kwargs)
    except SkippedForBudgetError:
        progress.stage = "skipped"
        raise
    except Exception:
        progress.stage = "failed"
        raise
    progress.advance("archiving")  # the end of its generation, for the run's ETA
    progress.advance("done")
    return video


async def _run_on_pool(
    pair: KeyframePair,
    options: GenerationOptions,
    *,
    deployment: str,
    credentials_name: str,
    credentials: WanCredentials,
    coordination_name: Optional[str],
    destination: ArchiveDestination,
    slots: Slots,
    poll: Optional[PollSchedule],
    force: bool,
    frame_storage_options: Optional[dict[str, Any]],
    progress: PairProgress,
) -> ArchivedVideo:
    logger = get_run_logger()
    label = pair.display_label()
    async with credentials.get_client() as client:
        prepared = await client.prepare(pair.to_request(options, frame_storage_options))  # refused here, not on a worker
    fingerprint = progress.fingerprint = prepared.fingerprint
    cost = estimate_request_cost(prepared)
    del prepared
    if not force and (existing := await find_archived(destination, fingerprint, credentials.endpoint)) is not None:
        progress.task_id = existing.task_id
        return archived_video(label, existing, destination, credentials.endpoint, reused=True)
    progress.charged = await slots.charge_unless_recorded(credentials, fingerprint, cost, label=label, force=force)
    parameters = {
        "first_frame": pair.first_frame, "last_frame": pair.last_frame, "prompt": pair.prompt, "label": label,
        "options": pair.merged_options(options).model_dump(mode="json"), "credentials": credentials_name,
        "destination": destination.url, "storage_options": destination.storage_options,
        "frame_storage_options": frame_storage_options, "force": force,
        "poll": poll.model_dump(mode="json") if poll else None, "coordination": coordination_name,
    }
    async with slots.generating:
        child = await arun_deployment(deployment, parameters=parameters, timeout=0, as_subflow=True)
        logger.info("%s: running as %s (flow run %s) on a worker of the pool", label, child.name, child.id)
        state = await _follow(child.id, progress)
    if state.type is not StateType.COMPLETED:
        # A child that failed may have paid before it ended: its charge stands.
        raise FanOutRunError(f"{label}: flow run {child.name} ended {state.name}: {state.message or 'no message'}")
    record = await find_archived(destination, fingerprint, credentials.endpoint)
    if record is None:
        raise FanOutRunError(
            f"{label}: flow run {child.name} completed but its video is not at {destination.url}: the workers must share "
            "the archive (an s3:// or shared-mount destination)"
        )
    if progress.charged:
        slots.spend.settle(fingerprint, record.cost)
    progress.task_id = record.task_id
    return archived_video(label, record, destination, credentials.endpoint, reused=False)


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
