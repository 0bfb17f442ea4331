"""Moving a video from its signed URL into the archive without ever exposing a partial object.

The video streams to a local spool file (constant memory) while its SHA-256 and length are
computed, is probed with PyAV, is copied next to its final path under a unique ``.partial``
name, and only then is moved into place. The sidecar follows the same route, last, so a
sidecar's presence means the pair is complete.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
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
from prefect_wan.ledger.atomic import replace_atomically

CHUNK = 1 << 20


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


async def download_video(url: str, into: Path, *, http: httpx.AsyncClient) -> Download:
    """Stream ``url`` to ``into``, hashing as it goes; raise unless every byte arrived."""
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
                async for chunk in response.aiter_raw(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
    except httpx.HTTPError as exc:
        raise VideoDownloadError(f"{where}: download broke after {size} bytes ({type(exc).__name__})") from None
    if expected is not None and size != expected:
        raise VideoDownloadError(f"{where}: got {size} of {expected} bytes")
    return Download(into, size, digest.hexdigest())


Record = TypeVar("Record", bound=BaseModel)


def poster_name(stem: str) -> str:
    return f"{stem}.png"


async def publish(
    destination: ArchiveDestination,
    video: Download,
    record_for: Callable[[ArchivedFile], Record],
    *,
    stem: str,
    poster: Optional[Path] = None,
) -> Record:
    """Put the verified video in place, then its poster (if any), then its sidecar built by
    ``record_for(ArchivedFile)`` and naming the poster."""

    def work() -> Record:
        fs, root = destination.ensure_root()
        video_path, sidecar_path = f"{root}/{video_name(stem)}", f"{root}/{sidecar_name(stem)}"
        replace_atomically(fs, video_path, lambda partial: fs.put_file(str(video.path), partial))
        stored = fs.info(video_path)["size"]
        if stored != video.bytes:
            fs.rm(video_path)
            raise VideoDownloadError(f"{video_path}: stored {stored} bytes, expected {video.bytes}")
        record = record_for(ArchivedFile(path=video_path, url=destination.public_url(video_path), bytes=stored, sha256=video.sha256))
        if poster is not None:
            image = poster.read_bytes()
            poster_path = f"{root}/{poster_name(stem)}"
            replace_atomically(fs, poster_path, lambda partial: fs.pipe_file(partial, image))
            record = record.model_copy(
                update={
                    "poster": ArchivedFile(
                        path=poster_path,
                        url=destination.public_url(poster_path),
                        bytes=len(image),
                        sha256=hashlib.sha256(image).hexdigest(),
                    )
                }
            )
        sidecar = record.model_dump_json(indent=2).encode()
        replace_atomically(fs, sidecar_path, lambda partial: fs.pipe_file(partial, sidecar))
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
