"""``keyframes_to_video``: the per-pair flow."""

# Annotations are evaluated here, not postponed: a Prefect runner validates a deployment run's
# parameters against them, and postponed names (KeyframePair...) fail there as 'not fully defined'.

import asyncio
from typing import Any, Optional, Union

from prefect import flow
from prefect.filesystems import LocalFileSystem, RemoteFileSystem
from prefect.runtime import flow_run

from prefect_wan.archive.destination import DEFAULT_DESTINATION, ArchiveDestination
from prefect_wan.blocks.coordination import WanCoordination, resolve_coordination
from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.polling import PollSchedule
from prefect_wan.flows.models import ArchivedVideo, GenerationOptions, KeyframePair
from prefect_wan.flows.pipeline import Slots, generate_pair, prepare_coordination, resolve_credentials
from prefect_wan.flows.plan import RunPlan, plan_pairs
from prefect_wan.flows.reporting import artifact_key, report_plan
from prefect_wan.spend.budget import Budget, SpendLedger
from prefect_wan.spend.cancellation import cancel_queued_work, remember_run_credentials

Destination = Union[str, RemoteFileSystem, LocalFileSystem, None]


def _run_name() -> str:
    parameters = flow_run.parameters or {}
    # Unvalidated: a bad parameter must reach the flow body, which refuses it with a clear error.
    pair = KeyframePair.model_construct(
        first_frame=str(parameters.get("first_frame") or "first"), last_frame=parameters.get("last_frame"), label=parameters.get("label")
    )
    return f"wan-{pair.display_label()}"


@flow(name="keyframes-to-video", flow_run_name=_run_name, on_cancellation=[cancel_queued_work], on_crashed=[cancel_queued_work])
async def keyframes_to_video(
    first_frame: str,
    last_frame: str,
    prompt: Optional[str] = None,
    options: GenerationOptions = GenerationOptions(),
    label: Optional[str] = None,
    credentials: Union[WanCredentials, str, None] = None,
    destination: Destination = DEFAULT_DESTINATION,
    storage_options: Optional[dict[str, Any]] = None,
    frame_storage_options: Optional[dict[str, Any]] = None,
    force: bool = False,
    poll: Optional[PollSchedule] = None,
    max_cost: Union[Budget, str, None] = None,
    dry_run: bool = False,
    coordination: Union[WanCoordination, str, None] = None,
) -> Union[ArchivedVideo, RunPlan]:
    """Generate the transition between two keyframes and archive it.

    Args:
        first_frame: Path or URL (http(s), s3://, oss://...) of the first frame.
        last_frame: Path or URL of the last frame.
        prompt: What happens between the frames.
        options: Model, resolution, duration, seed and the other generation options.
        label: A readable name for the UI, events and the sidecar.
        credentials: A WanCredentials block, the name of a saved one, or None for DASHSCOPE_API_KEY.
        destination: fsspec URL (s3://bucket/prefix, file://..., memory://...) or a filesystem block.
        storage_options: fsspec options for the destination.
        frame_storage_options: fsspec options for reading fsspec-URL frames.
        force: Generate and archive again even when this exact work is archived.
        poll: When to ask the service for news (defaults suit the real service).
        max_cost: The most this run may spend, with its currency ("2 CNY"); a pair that would cost
            more is not submitted (the run fails with ``SkippedForBudgetError``, nothing sent).
        dry_run: Only plan: preflight, say whether it is archived, reusable or to submit and at what
            cost, and send nothing.
        coordination: Where submission records and submit locks live: a WanCoordination block,
            its saved name, or None (the block named by PREFECT_WAN_COORDINATION, else this machine).

    Returns:
        Where the video and its sidecar are, with the full sidecar record (or the plan, for a dry
        run). The same inputs always land at the same path; a re-run returns the archived video
        without paying again.
    """
    pair = KeyframePair.from_fields(first_frame=first_frame, last_frame=last_frame, prompt=prompt, label=label)
    budget = Budget.coerce(max_cost)
    resolved = await resolve_credentials(credentials)
    target = ArchiveDestination.coerce(destination, storage_options)
    if dry_run:
        shared = await resolve_coordination(coordination)
        plan = await plan_pairs([pair], options, resolved, target, budget=budget, force=force,
                                frame_storage_options=frame_storage_options, journal=shared.journal())
        await report_plan(plan, key=artifact_key(f"wan-plan-{pair.display_label()}"))
        return plan
    shared = await prepare_coordination(coordination)
    remember_run_credentials(resolved, shared)
    return await generate_pair(
        pair, options, credentials=resolved, destination=target, poll=poll, force=force,
        slots=Slots(asyncio.Semaphore(1), spend=SpendLedger(budget), coordination=shared), frame_storage_options=frame_storage_options,
    )
