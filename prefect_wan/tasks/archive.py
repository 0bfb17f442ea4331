"""The archive task: stream the video into fsspec storage, verify it, publish it atomically."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.record import ArchiveRecord, RequestRecord, ShotChecks, VideoProbe
from prefect_wan.archive.store import StagedVideo, archive_stem, download_video, find_archived
from prefect_wan.client.catalog import lookup_model
from prefect_wan.client.images import redact_url
from prefect_wan.client.results import SubmittedTask, VideoResult
from prefect_wan.media.chart import chart_for
from prefect_wan.media.poster import contact_sheet
from prefect_wan.media.scan import scan_video
from prefect_wan.media.shots import FittedKeyframes, ShotObserver, ShotThresholds, assess
from prefect_wan.spend.pricing import estimate_cost
from prefect_wan.tasks.caching import retry_if_transient
from prefect_wan.tasks.naming import run_name

DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def _utc(moment: Optional[datetime]) -> Optional[datetime]:
    return moment.astimezone(timezone.utc) if moment is not None else None


def _warnings(probe: VideoProbe, expected_audio: bool, checks: ShotChecks) -> list[str]:
    found = [f"shot check {item.name}: {item.value} against {item.threshold}" for item in checks.items if not item.passed]
    if probe.codec != "h264":
        found.append(f"codec {probe.codec}, expected h264")
    if expected_audio != bool(probe.audio_codec):
        found.append("an audio track was expected" if expected_audio else "an unexpected audio track is present")
    return found


@task(
    name="archive-wan-video",
    task_run_name=run_name("archive"),
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=0.5),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_transient,
)
async def archive_video(
    result: VideoResult,
    submitted: SubmittedTask,
    request: RequestRecord,
    destination: ArchiveDestination,
    label: Optional[str] = None,
    force: bool = False,
    look_first: bool = True,
    keyframes: Optional[tuple[Optional[bytes], Optional[bytes]]] = None,
    thresholds: Optional[ShotThresholds] = None,
) -> ArchiveRecord:
    """Archive a finished video at ``{destination}/{stem}.mp4`` with a ``.json`` sidecar (the stem is
    the fingerprint, tagged with the endpoint unless it is a region's public host).

    Already archived and valid: skipped (``look_first=False`` when the caller has just looked, as
    the pair pipeline does before it submits). Otherwise: download to a spool file while hashing,
    check the length, decode it once with PyAV (the probe, the poster's frames and the shot checks
    against ``keyframes``, the first and last keyframe's bytes, held to ``thresholds``), then publish
    video, poster and sidecar atomically. Retried on
    transient download and storage errors; an expired URL is final.
    """
    logger = get_run_logger()
    endpoint = submitted.endpoint or ""
    if look_first and not force and (existing := await find_archived(destination, submitted.fingerprint, endpoint)) is not None:
        logger.info("%s: already archived at %s", label or "pair", existing.video.url)
        return existing
    spec = lookup_model(request.model)
    with tempfile.TemporaryDirectory(prefix="prefect-wan-") as spool:
        # On S3 the video streams to its key while it downloads, and its upload completes while it
        # is decoded (once: the probe, the poster's frames and the shot checks); elsewhere it is
        # copied while it is decoded. A video that replaces an archived one (``force``) is uploaded
        # only after its checks. Nothing unverified or half-done stays: see StagedVideo.
        staged = await StagedVideo.open(destination, stem=archive_stem(submitted.fingerprint, endpoint), early=not force)
        # The keyframes are fitted to the predicted size while the video downloads.
        fitting = _fit_ahead(keyframes, request)
        try:
            async with httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT) as http:
                video = await download_video(result.video_url, Path(spool) / "video.mp4", http=http, mirror=staged.mirror)
            await staged.received(video)
            fitted = await fitting if fitting is not None else None
            shot = ShotObserver(keyframes or (None, None), fitted)
            scan = await asyncio.to_thread(scan_video, video.path, observers=[shot])
            probe = scan.probe
            profile = await asyncio.to_thread(shot.profile)
            checks = assess(profile, probe, request, thresholds or ShotThresholds())
            family = spec.family if spec else None
            expected_audio = bool(family and family.has_audio and (request.audio is not False))
            warnings = _warnings(probe, expected_audio, checks)
            for warning in warnings:
                logger.warning("%s: %s", label or "pair", warning)

            record = ArchiveRecord(
                fingerprint=submitted.fingerprint,
                endpoint=endpoint,
                label=label,
                request=request,
                task_id=submitted.task_id,
                submit_request_id=submitted.request_id,
                query_request_id=result.request_id,
                # The service answers in its region's time (+08:00); the sidecar says UTC throughout.
                submitted_at=_utc(result.submit_time or submitted.submitted_at),
                scheduled_at=_utc(result.scheduled_time),
                finished_at=_utc(result.end_time),
                archived_at=datetime.now(timezone.utc),
                orig_prompt=result.orig_prompt,
                actual_prompt=result.actual_prompt,
                usage=result.usage.model_dump(exclude_none=True),
                cost=estimate_cost(request, result.billed_seconds),
                source_video_url=redact_url(result.video_url),
                video=staged.file,
                probe=probe,
                warnings=warnings,
                checks=checks,
                profile=profile,
            )

            poster = await asyncio.to_thread(contact_sheet, scan.thumbs, chart_for(scan.thumbs, profile, checks))
            record = await staged.complete(record, poster)
        except BaseException:
            _drop(fitting)
            await staged.discard()  # nothing unverified or half-done stays in the archive
            raise
    logger.info("%s: archived %d bytes at %s", label or "pair", record.video.bytes, record.video.url)
    return record


def _fit_ahead(keyframes: Optional[tuple[Optional[bytes], Optional[bytes]]], request: RequestRecord) -> Optional[asyncio.Future[FittedKeyframes]]:
    if keyframes is None or keyframes == (None, None) or not request.predicted_size:
        return None
    width, height = request.predicted_size
    return asyncio.ensure_future(asyncio.to_thread(FittedKeyframes.of, keyframes, width, height))


def _drop(fitting: Optional[asyncio.Future[FittedKeyframes]]) -> None:
    # The archive step failed: its own error is the one raised, not the fitting's.
    if fitting is None:
        return
    if not fitting.done():
        fitting.cancel()
    elif not fitting.cancelled():
        fitting.exception()
