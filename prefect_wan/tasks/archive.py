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
from prefect_wan.archive.probe import probe_video
from prefect_wan.archive.record import ArchivedFile, ArchiveRecord, RequestRecord, VideoProbe
from prefect_wan.archive.store import archive_stem, download_video, find_archived, publish
from prefect_wan.client.catalog import lookup_model
from prefect_wan.client.images import redact_url
from prefect_wan.client.results import SubmittedTask, VideoResult
from prefect_wan.media.poster import contact_sheet, frame_indices_for
from prefect_wan.spend.pricing import estimate_cost
from prefect_wan.tasks.caching import retry_if_transient
from prefect_wan.tasks.naming import run_name

DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def _warnings(request: RequestRecord, probe: VideoProbe, expected_audio: bool) -> list[str]:
    found = []
    if request.predicted_size and (probe.width, probe.height) != tuple(request.predicted_size):
        found.append(f"size {probe.width}x{probe.height} differs from the predicted {request.predicted_size[0]}x{request.predicted_size[1]}")
    if request.duration and request.duration > 0 and abs(probe.duration_seconds - request.duration) > 0.5:
        found.append(f"duration {probe.duration_seconds} s differs from the requested {request.duration} s")
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
) -> ArchiveRecord:
    """Archive a finished video at ``{destination}/{stem}.mp4`` with a ``.json`` sidecar (the stem is
    the fingerprint, tagged with the endpoint unless it is a region's public host).

    Already archived and valid: skipped (``look_first=False`` when the caller has just looked, as
    the pair pipeline does before it submits). Otherwise: download to a spool file while hashing,
    check the length, decode it with PyAV, then publish video and sidecar atomically. Retried on
    transient download and storage errors; an expired URL is final.
    """
    logger = get_run_logger()
    endpoint = submitted.endpoint or ""
    if look_first and not force and (existing := await find_archived(destination, submitted.fingerprint, endpoint)) is not None:
        logger.info("%s: already archived at %s", label or "pair", existing.video.url)
        return existing
    spec = lookup_model(request.model)
    with tempfile.TemporaryDirectory(prefix="prefect-wan-") as spool:
        async with httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT) as http:
            video = await download_video(result.video_url, Path(spool) / "video.mp4", http=http)
        probe = await asyncio.to_thread(probe_video, video.path)
        family = spec.family if spec else None
        expected_audio = bool(family and family.has_audio and (request.audio is not False))
        warnings = _warnings(request, probe, expected_audio=expected_audio)
        for warning in warnings:
            logger.warning("%s: %s", label or "pair", warning)

        def record_for(file: ArchivedFile) -> ArchiveRecord:
            return ArchiveRecord(
                fingerprint=submitted.fingerprint,
                endpoint=endpoint,
                label=label,
                request=request,
                task_id=submitted.task_id,
                submit_request_id=submitted.request_id,
                query_request_id=result.request_id,
                submitted_at=result.submit_time or submitted.submitted_at,
                scheduled_at=result.scheduled_time,
                finished_at=result.end_time,
                archived_at=datetime.now(timezone.utc),
                orig_prompt=result.orig_prompt,
                actual_prompt=result.actual_prompt,
                usage=result.usage.model_dump(exclude_none=True),
                cost=estimate_cost(request, result.billed_seconds),
                source_video_url=redact_url(result.video_url),
                video=file,
                probe=probe,
                warnings=warnings,
            )

        poster = await asyncio.to_thread(contact_sheet, video.path, Path(spool) / "poster.png", frame_indices_for(probe.frames))
        record = await publish(destination, video, record_for, stem=archive_stem(submitted.fingerprint, endpoint), poster=poster)
    logger.info("%s: archived %d bytes at %s", label or "pair", record.video.bytes, record.video.url)
    return record
