"""``keyframes_storyboard``: N keyframes, N-1 transitions through the pay-once pair pipeline, one
stitched video archived like any other."""

# Annotations are evaluated here, not postponed: a Prefect runner validates a deployment run's
# parameters against them, and postponed names (KeyframePair...) fail there as 'not fully defined'.

import asyncio
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Union

from prefect import get_run_logger
from prefect.events import emit_event
from pydantic import BaseModel

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.record import ArchivedFile, CostEstimate, SegmentRecord, StitchRecord, StoryboardRecord
from prefect_wan.archive.store import Download, archive_stem, find_archived, publish, sha256_of, sidecar_name
from prefect_wan.client.errors import WanError
from prefect_wan.flows.lineage import report_materialized
from prefect_wan.flows.models import ArchivedVideo
from prefect_wan.flows.parameters import InFlightParameters, RunParameters
from prefect_wan.flows.pipeline import PairProgress
from prefect_wan.flows.plan import PlannedAction, RunPlan, plan_run
from prefect_wan.flows.prepared import PreparedPair
from prefect_wan.flows.progress import RunProgress, announce
from prefect_wan.flows.reporting import artifact_key, report_plan, report_storyboard
from prefect_wan.flows.review import Review, review_then_render
from prefect_wan.flows.setup import RunSetup, wan_flow
from prefect_wan.flows.transitions import check_shapes, storyboard_fingerprint, transitions
from prefect_wan.media.poster import contact_sheet
from prefect_wan.media.scan import scan_video
from prefect_wan.media.stitch import Fit, stitch
from prefect_wan.spend.budget import SkippedForBudgetError

STORYBOARD_EVENT = "prefect_wan.storyboard.archived"


class StoryboardFailedError(WanError):
    """Some transitions failed; the others are archived and will be reused by the next run."""


class ArchivedStoryboard(BaseModel):
    label: str
    fingerprint: str
    video_url: str
    sidecar_url: str
    reused: bool
    record: StoryboardRecord
    poster_view_url: Optional[str] = None


def _hashed(path: Path) -> Download:
    with path.open("rb") as handle:
        return Download(path, path.stat().st_size, sha256_of(handle))


def _total(videos: list[ArchivedVideo]) -> CostEstimate:
    costs = [v.record.cost for v in videos]
    currencies = {c.currency for c in costs}
    if any(c.amount is None for c in costs) or len(currencies) != 1:
        return CostEstimate(note="unknown: some segment has no price, or prices differ in currency")
    return CostEstimate(
        amount=round(sum(c.amount or 0 for c in costs), 6),
        currency=currencies.pop(),
        confirmed=all(c.confirmed for c in costs),
        billed_seconds=sum(c.billed_seconds or 0 for c in costs),
        note="sum of the segments' list prices",
    )


@wan_flow(name="keyframes-storyboard", flow_run_name="wan-storyboard-{label}")
async def keyframes_storyboard(
    keyframes: list[str],
    prompts: Union[str, list[Optional[str]], None] = None,
    overrides: Optional[dict[int, dict[str, Any]]] = None,
    label: str = "storyboard",
    frame_storage_options: Optional[dict[str, Any]] = None,
    drop_boundary: bool = True,
    fit: Optional[Fit] = None,
    review: Optional[Review] = None,
    run: RunParameters = RunParameters(),
    flight: InFlightParameters = InFlightParameters(),
) -> Union[ArchivedStoryboard, RunPlan]:
    """Generate the N-1 transitions between N keyframes and stitch them, in order, into one MP4.

    A storyboard is whole or useless: one that ``max_cost`` cannot cover is refused before
    anything is sent. A dry run plans the transitions (archived, reusable, to submit, cost).

    Args:
        keyframes: Paths or URLs of the keyframes, in order.
        prompts: One prompt for every transition, or a list with one per transition.
        overrides: Per-transition fields (1-based): ``{2: {"seed": 7, "prompt": "..."}}``.
        label: Name of the storyboard; transitions are ``<label>-01``, ``<label>-02``...
        frame_storage_options: fsspec options for reading fsspec-URL keyframes.
        drop_boundary: Show each inner keyframe once (clip i ends on the frame clip i+1 starts on).
        fit: When transitions would differ in size: ``pad`` or ``crop`` them to the first one's.
            Without it such keyframes are refused before anything is paid.
        review: Draft every transition cheaply first and wait for a person's decisions; render the
            finals only when every transition is approved, and stitch the finals.

    Returns:
        The stitched video's archive location and its sidecar record; re-runs reuse every archived
        transition and the storyboard itself.
    """
    logger = get_run_logger()
    wanted = transitions(keyframes, prompts, overrides or {}, label)
    setup = await RunSetup.resolve(run, frame_storage_options)
    prepared = await setup.prepare_all(wanted)
    differ = check_shapes(prepared, fit)
    if setup.dry_run:
        plan = await plan_run(setup, prepared, review)
        await report_plan(plan, key=artifact_key(f"wan-plan-{label}"))
        logger.info("Dry run, nothing sent: %s", plan.summary)
        return plan
    if setup.budget is not None:
        plan = await plan_run(setup, prepared, review)
        if over := [p for p in plan.pairs if p.action is PlannedAction.OVER_BUDGET]:
            things = "drafts and finals" if review is not None else "transitions"
            raise SkippedForBudgetError(label, f"{len(over)} of its {len(plan.pairs)} {things} are not covered ({plan.summary}); nothing was sent")
    pipeline = await setup.start(in_flight=flight.max_in_flight, concurrency_limit=flight.concurrency_limit, rate_limit=flight.rate_limit)
    target, endpoint = setup.destination, setup.credentials.endpoint

    async def result(record: StoryboardRecord, fingerprint: str, reused: bool) -> ArchivedStoryboard:
        poster_view_url = target.viewable_url(record.poster.path) if record.poster else None
        await report_storyboard(label, record, poster_view_url, reused=reused)
        return ArchivedStoryboard(
            label=label,
            fingerprint=fingerprint,
            video_url=record.video.url,
            sidecar_url=target.public_url(target.path(sidecar_name(archive_stem(fingerprint, endpoint)))),
            reused=reused,
            record=record,
            poster_view_url=poster_view_url,
        )

    async def archived(fingerprint: str) -> Optional[ArchivedStoryboard]:
        if setup.force or (existing := await find_archived(target, fingerprint, endpoint, record_type=StoryboardRecord)) is None:
            return None
        logger.info("%s: already archived at %s", label, existing.video.url)
        return await result(existing, fingerprint, reused=True)

    # Without review the finals are known now: a storyboard archived already costs nothing more.
    if review is None and (done := await archived(storyboard_fingerprint([p.fingerprint for p in prepared], drop_boundary=drop_boundary, fit=fit))):
        return done
    await asyncio.to_thread(target.check_writable)
    progress = RunProgress(f"storyboard {label}", [PairProgress(label=pair.label) for pair in prepared], pipeline.spend)
    by_label = {p.label: p for p in progress.pairs}
    announce(progress)
    failed: list[tuple[str, BaseException]] = []

    async def render(pair: PreparedPair, transition: str) -> Optional[ArchivedVideo]:
        try:
            return await pipeline.generate(pair, by_label[transition])
        except Exception as error:  # every transition goes on; the failures are said together
            failed.append((pair.label, error))
            return None

    if review is not None:
        outcome = await review_then_render(review, setup, prepared, render, whole=True)
        if outcome.dropped and not failed:
            raise StoryboardFailedError(
                f"{label}: a storyboard needs every transition, and {', '.join(outcome.dropped)} was dropped in review: no final was rendered "
                f"({len(outcome.drafts)} drafts are archived and will be reused)"
            )
        outcomes: list[Optional[ArchivedVideo]] = list(outcome.finals)
    else:
        outcomes = list(await asyncio.gather(*(render(pair, pair.label) for pair in prepared)))
    if failed:
        raise StoryboardFailedError(
            f"{len(failed)} of {len(prepared)} transitions failed (the others are archived and will be reused): "
            + "; ".join(f"{name}: {type(error).__name__}: {error}" for name, error in failed)
        )
    videos: list[ArchivedVideo] = [v for v in outcomes if v is not None]
    fingerprint = storyboard_fingerprint([v.fingerprint for v in videos], drop_boundary=drop_boundary, fit=fit)
    if review is not None and (done := await archived(fingerprint)):
        return done
    record = await _stitch_and_publish(videos, target, archive_stem(fingerprint, endpoint), fingerprint, endpoint, label, drop_boundary, fit, differ)
    logger.info("%s: %d transitions stitched by %s into %s", label, len(videos), record.stitch.method, record.video.url)
    emit_event(
        STORYBOARD_EVENT,
        resource={"prefect.resource.id": f"prefect_wan.storyboard.{fingerprint}", "prefect.resource.name": label},
        payload={"label": label, "fingerprint": fingerprint, "video_url": record.video.url, "segments": len(videos)},
    )
    report_materialized(record.video.url, name=label, upstream=[v.video_url for v in videos], payload={"fingerprint": fingerprint, "segments": len(videos)})
    return await result(record, fingerprint, reused=False)


async def _stitch_and_publish(
    videos: list[ArchivedVideo],
    target: ArchiveDestination,
    stem: str,
    fingerprint: str,
    endpoint: str,
    label: str,
    drop_boundary: bool,
    fit: Optional[Fit],
    differ: bool,
) -> StoryboardRecord:
    fs, _ = target.filesystem()
    with tempfile.TemporaryDirectory(prefix="prefect-wan-storyboard-") as spool:
        clips = []
        for index, video in enumerate(videos):
            local = Path(spool) / f"segment-{index:03d}.mp4"
            await asyncio.to_thread(fs.get_file, video.record.video.path, str(local))
            clips.append(local)
        out = Path(spool) / "storyboard.mp4"
        stitched = await asyncio.to_thread(stitch, clips, out, drop_boundary=drop_boundary, reencode=differ, fit=fit or "pad")
        download = await asyncio.to_thread(_hashed, out)
        segments = [
            SegmentRecord(
                index=i + 1,
                label=v.label,
                fingerprint=v.fingerprint,
                task_id=v.task_id,
                video_url=v.video_url,
                sidecar_url=v.sidecar_url,
                seconds=v.record.probe.duration_seconds,
                cost=v.record.cost,
                model=v.record.request.model,
            )
            for i, v in enumerate(videos)
        ]

        def record_for(file: ArchivedFile) -> StoryboardRecord:
            return StoryboardRecord(
                fingerprint=fingerprint,
                endpoint=endpoint,
                label=label,
                segments=segments,
                stitch=StitchRecord(
                    method=stitched.method, reason=stitched.reason, drop_boundary=drop_boundary, fit=fit, dropped_frames=stitched.dropped_frames
                ),
                total_cost=_total(videos),
                archived_at=datetime.now(timezone.utc),
                video=file,
                probe=probe,
            )

        def poster_at(frames: int, fps: float) -> list[int]:
            # One frame per segment (where it starts in the stitched video), and the very last.
            starts, at = [], 0
            for segment in segments:
                starts.append(at)
                at += round(segment.seconds * fps) - (1 if drop_boundary else 0)
            return starts + [-1]

        scan = await asyncio.to_thread(scan_video, out, poster_at)  # one decode: the probe and the poster's frames
        probe = scan.probe
        poster = await asyncio.to_thread(contact_sheet, scan.thumbs)
        return await publish(target, download, record_for, stem=stem, poster=poster)
