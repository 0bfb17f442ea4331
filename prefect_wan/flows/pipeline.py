"""One pair from frames to archive: preflight, reuse what exists, submit once, poll, archive.

Shared by the pair flow and the batch flow, so both behave the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import AsyncIterator, Optional, Union

from prefect import get_run_logger
from prefect.concurrency.asyncio import concurrency, rate_limit

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.record import FrameRecord, RequestRecord
from prefect_wan.archive.store import find_archived, sidecar_name
from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.errors import TaskCanceledError, TaskExpiredError, TaskFailedError
from prefect_wan.client.images import LoadedMedia
from prefect_wan.client.polling import PollSchedule
from prefect_wan.client.preflight import PreparedRequest
from prefect_wan.client.results import SubmittedTask
from prefect_wan.flows.models import ArchivedVideo, GenerationOptions, KeyframePair
from prefect_wan.flows.reporting import report_archived, report_failed
from prefect_wan.tasks.archive import archive_video
from prefect_wan.tasks.poll import poll_video
from prefect_wan.tasks.submit import submit_video


@dataclass
class Slots:
    """What bounds a run: pairs generating at once (the account runs 2) and, when named, a
    Prefect global concurrency limit and rate limit shared with every other run."""

    generating: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    concurrency_limit: Optional[str] = None
    rate_limit: Optional[str] = None

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
    if isinstance(error, TaskExpiredError):
        return True  # the id expired or vanished: waiting longer can never help
    if isinstance(error, TaskFailedError) and error.worth_resubmitting:
        return True  # transient failure on the service's side; failed tasks are not billed
    # A task canceled or failed in an earlier run: this run asked for the work again.
    return reused and isinstance(error, (TaskCanceledError, TaskFailedError))


async def _submit(request, credentials, fingerprint, label, slots: Slots, *, refresh: bool) -> tuple[SubmittedTask, bool]:
    await slots.before_submit()
    task = submit_video.with_options(refresh_cache=True) if refresh else submit_video
    # Prefect's overloads do not type return_state=True for async tasks; it is awaitable at run time.
    state = await task(request, credentials, fingerprint=fingerprint, label=label, return_state=True)  # type: ignore[misc]
    return await state.aresult(), state.name == "Cached"


async def generate_pair(pair: KeyframePair, options: GenerationOptions, **kwargs) -> ArchivedVideo:
    """Frames in, archived video out, reported as an artifact and an event either way.

    Re-running with the same inputs submits and downloads nothing.
    """
    known: dict[str, str] = {}
    try:
        video = await _generate(pair, options, known=known, **kwargs)
    except Exception as error:
        report_failed(pair.display_label(), known.get("fingerprint"), error)
        raise
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
    known: dict[str, str],
) -> ArchivedVideo:
    logger = get_run_logger()
    label = pair.display_label()
    request = pair.to_request(options, frame_storage_options)
    async with credentials.get_client() as client:
        prepared = await client.prepare(request)  # every rule checked; nothing sent to DashScope
    fingerprint = known["fingerprint"] = prepared.fingerprint
    record = request_record(prepared)
    del prepared  # the frames' bytes: the submit task reads them again only if it has to submit

    def result(archive, reused: bool) -> ArchivedVideo:
        return ArchivedVideo(
            label=label, fingerprint=fingerprint, task_id=archive.task_id, video_url=archive.video.url,
            sidecar_url=destination.public_url(destination.path(sidecar_name(fingerprint))), reused=reused, record=archive,
        )

    if not force and (existing := await find_archived(destination, fingerprint)) is not None:
        logger.info("%s: already archived at %s; nothing to submit or download", label, existing.video.url)
        return result(existing, reused=True)

    await asyncio.to_thread(destination.check_writable)
    async with slots.generation():
        submitted, reused = await _submit(request, credentials, fingerprint, label, slots, refresh=force)
        if reused:
            logger.info("%s: reusing task %s submitted at %s", label, submitted.task_id, submitted.submitted_at)
        try:
            video = await poll_video(submitted, credentials, poll, label=label)
        except (TaskExpiredError, TaskCanceledError, TaskFailedError) as error:
            if not _worth_resubmitting(error, reused):
                raise
            logger.warning("%s: task %s ended %s; submitting once more", label, submitted.task_id, type(error).__name__)
            submitted, _ = await _submit(request, credentials, fingerprint, label, slots, refresh=True)
            video = await poll_video(submitted, credentials, poll, label=label)
    archive = await archive_video(video, submitted, record, destination, label=label, force=force)
    return result(archive, reused=False)
