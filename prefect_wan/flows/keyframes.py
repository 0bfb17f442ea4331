"""``keyframes_to_video``: the per-pair flow."""

# Annotations are evaluated here, not postponed: a Prefect runner validates a deployment run's
# parameters against them, and postponed names (KeyframePair...) fail there as 'not fully defined'.

from typing import Any, Optional, Union

from prefect.runtime import flow_run

from prefect_wan.flows.models import ArchivedVideo, KeyframePair
from prefect_wan.flows.parameters import Destination, RunParameters
from prefect_wan.flows.plan import RunPlan, plan_run
from prefect_wan.flows.reporting import artifact_key, report_plan
from prefect_wan.flows.setup import RunSetup, wan_flow

__all__ = ["Destination", "keyframes_to_video"]


def _run_name() -> str:
    parameters = flow_run.parameters or {}
    # Unvalidated: a bad parameter must reach the flow body, which refuses it with a clear error.
    pair = KeyframePair.model_construct(
        first_frame=str(parameters.get("first_frame") or "first"), last_frame=parameters.get("last_frame"), label=parameters.get("label")
    )
    return f"wan-{pair.display_label()}"


@wan_flow(name="keyframes-to-video", flow_run_name=_run_name)
async def keyframes_to_video(
    first_frame: str,
    last_frame: str,
    prompt: Optional[str] = None,
    label: Optional[str] = None,
    frame_storage_options: Optional[dict[str, Any]] = None,
    run: RunParameters = RunParameters(),
) -> Union[ArchivedVideo, RunPlan]:
    """Generate the transition between two keyframes and archive it.

    With ``max_cost``, a pair that would cost more is not submitted (the run fails with
    ``SkippedForBudgetError``, nothing sent).

    Args:
        first_frame: Path or URL (http(s), s3://, oss://...) of the first frame.
        last_frame: Path or URL of the last frame.
        prompt: What happens between the frames.
        label: A readable name for the UI, events and the sidecar.
        frame_storage_options: fsspec options for reading fsspec-URL frames.

    Returns:
        Where the video and its sidecar are, with the full sidecar record (or the plan, for a dry
        run). The same inputs always land at the same path; a re-run returns the archived video
        without paying again.
    """
    pair = KeyframePair.from_fields(first_frame=first_frame, last_frame=last_frame, prompt=prompt, label=label)
    setup = await RunSetup.resolve(run, frame_storage_options)
    if setup.dry_run:
        plan = await plan_run(setup, [pair])
        await report_plan(plan, key=artifact_key(f"wan-plan-{pair.display_label()}"))
        return plan
    pairs = await setup.start(in_flight=1)
    return await pairs.generate(pair)
