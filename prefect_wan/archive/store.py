"""Moving a video from its signed URL into the archive without ever exposing a partial object.

The video streams to a local spool file (constant memory) while its SHA-256 and length are
computed, is scanned with PyAV, and is then published: uploaded straight to its key on an object
store (in parts of a fixed size; the object appears when the upload completes), or written under
``.partials/`` and renamed into place on a filesystem. The poster and the sidecar follow the same
route, the sidecar last, so a sidecar's presence means the pair is complete.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.errors import ArchiveDestinationError, VideoDownloadError, VideoUrlExpiredError
from prefect_wan.archive.record import ArchivedFile, ArchiveRecord
from prefect_wan.client.images import redact_url
from prefect_wan.client.regions import is_public_endpoint
from prefect_wan.ledger.atomic import begin_atomic_write, protocols, replace_atomically

CHUNK = MIB = 1 << 20
# Stores whose files upload in parts as they are written and complete only at ``commit()``
# (fsspec's autocommit=False): the video streams there while it downloads. Tested on S3; GCS and
# Azure get the upload after the download, which is atomic on them too (UNCONFIRMED whether their
# fsspec files defer completion the same way).
STREAMING_STORES = frozenset({"s3", "s3a"})


@dataclass
class Download:
    path: Path
    bytes: int
    sha256: str


_LOOPBACK = ("127.", "localhost", "[::1]", "0.0.0.0")


def archive_stem(fingerprint: str, endpoint: str) -> str:
    """The archive's name for this work: plain for a region's public host, tagged for any other
    endpoint (an emulator, a proxy, a workspace host), so their videos never stand in for each other."""
    if is_public_endpoint(endpoint):
        return fingerprint[:32]
    return f"{fingerprint[:32]}-{hashlib.sha256(endpoint.encode()).hexdigest()[:8]}"


def sha256_of(handle: BinaryIO) -> str:
    """The SHA-256 of what ``handle`` reads, in constant memory."""
    digest = hashlib.sha256()
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def video_name(stem: str) -> str:
    return f"{stem}.mp4"


def sidecar_name(stem: str) -> str:
    return f"{stem}.json"


async def download_video(url: str, into: Path, *, http: httpx.AsyncClient, mirror: Optional[_Mirror] = None) -> Download:
    """Stream ``url`` to ``into`` (and to ``mirror``, an upload under way), hashing as it goes;
    raise unless every byte arrived."""
    where = redact_url(url)
    digest = hashlib.sha256()
    size = 0
    try:
        async with http.stream("GET", url) as response:
            if response.status_code in (403, 404):
                raise VideoUrlExpiredError(f"{where}: HTTP {response.status_code}; signed video URLs live 24 h")
            if response.status_code != 200:
                raise VideoDownloadError(f"{where}: HTTP {response.status_code}")
            expected = int(response.headers["content-length"]) if "content-length" in response.headers else None
            with into.open("wb") as out:
                if mirror is not None:
                    mirror.follow(into)
                async for chunk in response.aiter_raw(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if mirror is not None:
                        out.flush()  # what the mirror reads must be on disk
                        mirror.advance(size)
    except httpx.HTTPError as exc:
        raise VideoDownloadError(f"{where}: download broke after {size} bytes ({type(exc).__name__})") from None
    if expected is not None and size != expected:
        raise VideoDownloadError(f"{where}: got {size} of {expected} bytes")
    return Download(into, size, digest.hexdigest())


Record = TypeVar("Record", bound=BaseModel)


def poster_name(stem: str) -> str:
    return f"{stem}.png"


# Parts uploaded at once: what keeps a loopback or regional S3 busy without holding more than a
# few parts in memory (bench/archive.py).
UPLOAD_CONCURRENCY = 2


def upload(fs: Any, local: Path, target: str, part_bytes: int) -> None:
    """Stream a local file to ``target`` in parts of ``part_bytes`` (object stores), or copy it."""
    if "s3" in protocols(fs) or "s3a" in protocols(fs):
        fs.put_file(str(local), target, chunksize=part_bytes, max_concurrency=UPLOAD_CONCURRENCY)
    else:
        fs.put_file(str(local), target)


class _Mirror:
    """The video streamed to its key on S3 while it downloads: a thread of its own follows the spool
    file as it grows and uploads it in parts of a fixed size, so the download never waits for the
    upload and memory stays flat. The multipart upload completes only at ``commit``: nothing
    appears unless every byte arrived."""

    def __init__(self, fs: Any, path: str, part_bytes: int) -> None:
        self._file = fs.open(path, "wb", block_size=part_bytes, autocommit=False)
        self._grown = threading.Condition()
        self._available, self._ended, self._wanted = 0, False, False
        self._done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._following = False

    def follow(self, spool: Path) -> None:
        """Start uploading ``spool`` as it is written."""
        self._following = True
        threading.Thread(target=self._run, args=(spool,), name="prefect-wan-upload", daemon=True).start()

    def advance(self, available: int) -> None:
        """So many bytes of the spool are written and flushed."""
        with self._grown:
            self._available = available
            self._grown.notify()

    def end(self, *, wanted: bool) -> None:
        with self._grown:
            self._ended, self._wanted = True, wanted
            self._grown.notify()

    def _run(self, spool: Path) -> None:
        try:
            sent = 0
            with spool.open("rb") as source:
                while True:
                    with self._grown:
                        while self._available <= sent and not self._ended:
                            self._grown.wait()
                        available, ended, wanted = self._available, self._ended, self._wanted
                    if ended and not wanted:
                        self._file.discard()
                        self._done.set_result(None)
                        return
                    if available > sent:
                        chunk = source.read(min(available - sent, CHUNK * 4))
                        self._file.write(chunk)
                        sent += len(chunk)
                    elif ended:
                        break
            self._file.close()  # the last part; the upload is not completed yet
            self._done.set_result(None)
        except BaseException as error:
            with contextlib.suppress(Exception):
                self._file.discard()
            self._done.set_exception(error)

    async def finish(self) -> None:
        """Every part sent (the object does not exist yet)."""
        self.end(wanted=True)
        await asyncio.wrap_future(self._done)

    def commit(self) -> None:
        self._file.commit()

    def discard(self) -> None:
        self.end(wanted=False)
        if self._following:
            with contextlib.suppress(Exception):
                self._done.result(timeout=60)
        with contextlib.suppress(Exception):
            self._file.discard()


class StagedVideo:
    """A video on its way into the archive, put in place only once checked.

    On S3 (``early``) the bytes stream to the final key while they download and the upload
    completes while the caller decodes the video; the object is removed again if the checks fail,
    and is no more than a video without a sidecar (not archived) until the sidecar is written.
    Elsewhere the download is copied (early: while the caller decodes it) to a partial that is
    renamed into place at ``complete`` (filesystems), or uploaded to its key (other object stores).
    Replacing an archived video (``early=False``) uploads only once the checks passed.
    """

    def __init__(self, destination: ArchiveDestination, *, stem: str, early: bool) -> None:
        self.destination, self.stem, self.early = destination, stem, early
        self.fs, self.root = destination.ensure_root()
        self.path = f"{self.root}/{video_name(stem)}"
        self._write = begin_atomic_write(self.fs, self.path)
        self.video: Optional[Download] = None
        part_bytes = destination.upload_part_mib * MIB
        streams = early and any(p in STREAMING_STORES for p in protocols(self.fs))
        self.mirror = _Mirror(self.fs, self.path, part_bytes) if streams else None
        self._upload: Optional[asyncio.Future[None]] = None

    @classmethod
    async def open(cls, destination: ArchiveDestination, *, stem: str, early: bool) -> StagedVideo:
        return await asyncio.to_thread(cls, destination, stem=stem, early=early)

    async def _put(self) -> None:
        assert self.video is not None
        if self.mirror is not None:
            await self.mirror.finish()  # the last parts, then the upload completes
            await asyncio.to_thread(self.mirror.commit)
        else:
            await asyncio.to_thread(upload, self.fs, self.video.path, self._write.target, self.destination.upload_part_mib * MIB)

    async def received(self, video: Download) -> None:
        """The whole video is in the spool and verified: finish its upload (or upload it) while the
        caller decodes it, unless it replaces an archived one."""
        self.video = video
        if self.early:
            self._upload = asyncio.ensure_future(self._put())

    @property
    def file(self) -> ArchivedFile:
        """The video as the sidecar will name it."""
        assert self.video is not None
        return ArchivedFile(path=self.path, url=self.destination.public_url(self.path), bytes=self.video.bytes, sha256=self.video.sha256)

    async def discard(self) -> None:
        """The video is not to be archived: stop its upload, then remove what it wrote."""
        if self.mirror is not None and self._upload is None:
            await asyncio.to_thread(self.mirror.discard)
        if self._upload is not None:
            with contextlib.suppress(Exception):
                await self._upload
            await asyncio.to_thread(self._write.abort)

    async def complete(self, record: Record, poster: Optional[bytes] = None) -> Record:
        """Put the video in place (after its upload), then the poster, then the sidecar, last."""
        try:
            await (self._upload if self._upload is not None else self._put())
        except BaseException:
            if not self._write.in_place:
                await asyncio.to_thread(self._write.abort)
            raise
        return await asyncio.to_thread(self._finish, record, poster)

    def _finish(self, record: Record, poster: Optional[bytes]) -> Record:
        assert self.video is not None
        fs, root = self.fs, self.root
        stored = fs.info(self._write.target)["size"]
        if stored != self.video.bytes:
            self._write.abort()
            raise VideoDownloadError(f"{self.path}: stored {stored} bytes, expected {self.video.bytes}")
        self._write.commit()
        if poster is not None:
            poster_path = f"{root}/{poster_name(self.stem)}"
            replace_atomically(fs, poster_path, lambda target: fs.pipe_file(target, poster))
            poster_file = ArchivedFile(
                path=poster_path, url=self.destination.public_url(poster_path), bytes=len(poster), sha256=hashlib.sha256(poster).hexdigest()
            )
            record = record.model_copy(update={"poster": poster_file})
        sidecar = record.model_dump_json(indent=2).encode()
        replace_atomically(fs, f"{root}/{sidecar_name(self.stem)}", lambda target: fs.pipe_file(target, sidecar))
        return record


async def publish(
    destination: ArchiveDestination,
    video: Download,
    record_for: Callable[[ArchivedFile], Record],
    *,
    stem: str,
    poster: Optional[bytes] = None,
) -> Record:
    """Put a checked video in place, then its poster (if any), then its sidecar built by
    ``record_for(ArchivedFile)``. Each appears whole or not at all, and no write lists the archive,
    so a write costs the same whatever the archive holds."""
    staged = await StagedVideo.open(destination, stem=stem, early=False)
    await staged.received(video)
    return await staged.complete(record_for(staged.file), poster)


async def rewrite_sidecar(destination: ArchiveDestination, record: ArchiveRecord, endpoint: str) -> ArchiveRecord:
    """Replace an archived video's sidecar (its video untouched), whole or not at all."""

    def work() -> ArchiveRecord:
        fs, root = destination.filesystem()
        document = record.model_dump_json(indent=2).encode()
        replace_atomically(fs, f"{root}/{sidecar_name(archive_stem(record.fingerprint, endpoint))}", lambda target: fs.pipe_file(target, document))
        return record

    return await asyncio.to_thread(work)


def _reusable(record: Any, fingerprint: str, endpoint: str) -> bool:
    if record.fingerprint != fingerprint:
        return False
    if record.endpoint is not None:
        # The region is in the fingerprint, so any two public hosts (classic or a workspace's) make
        # the same kind of video: a move to workspace hosts must not pay for the archive again.
        return record.endpoint == endpoint or (is_public_endpoint(record.endpoint) and is_public_endpoint(endpoint))
    # Written before sidecars named their endpoint: trust it only for a public host, and only if
    # the video did not come from a loopback emulator.
    host = urlsplit(getattr(record, "source_video_url", "")).netloc
    return is_public_endpoint(endpoint) and not host.startswith(_LOOPBACK)


async def find_archived(
    destination: ArchiveDestination,
    fingerprint: str,
    endpoint: str,
    *,
    verify_checksum: bool = False,
    record_type: type[Any] = ArchiveRecord,
) -> Optional[Any]:
    """The record of a complete, valid archive of this work made through ``endpoint``, or None.

    Raises ``ArchiveDestinationError`` when the archive cannot be read at all (no credentials,
    a path under a regular file...), so a run fails before it pays rather than after.
    """
    stem = archive_stem(fingerprint, endpoint)

    def check() -> Optional[Any]:
        fs, root = destination.filesystem()
        video_path, sidecar_path = f"{root}/{video_name(stem)}", f"{root}/{sidecar_name(stem)}"
        try:
            record = record_type.model_validate(json.loads(fs.cat_file(sidecar_path)))
            size = fs.info(video_path)["size"]
        except (FileNotFoundError, ValidationError, ValueError):
            return None
        if not _reusable(record, fingerprint, endpoint) or size != record.video.bytes:
            return None
        if verify_checksum:
            with fs.open(video_path, "rb") as handle:
                if sha256_of(handle) != record.video.sha256:
                    return None
        return record

    try:
        return await asyncio.to_thread(check)
    except Exception as exc:  # botocore's credential errors are not OSErrors
        raise ArchiveDestinationError(destination.explain(exc, "read")) from None
