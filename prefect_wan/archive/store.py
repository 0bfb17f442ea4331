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
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import httpx
from pydantic import ValidationError

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.record import ArchivedFile, ArchiveRecord
from prefect_wan.client.errors import VideoDownloadError, VideoUrlExpiredError
from prefect_wan.client.images import redact_url

CHUNK = 1 << 20


@dataclass
class Download:
    path: Path
    bytes: int
    sha256: str


def video_name(fingerprint: str) -> str:
    return f"{fingerprint[:32]}.mp4"


def sidecar_name(fingerprint: str) -> str:
    return f"{fingerprint[:32]}.json"


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


def _publish(fs, final: str, write: Callable[[str], None]) -> None:
    """``write`` fills a unique partial object beside ``final``, which is then moved into place."""
    partial = f"{final}.partial-{uuid.uuid4().hex[:12]}"
    try:
        write(partial)
        fs.mv(partial, final)
    finally:
        if fs.exists(partial):
            fs.rm(partial)


async def publish(destination: ArchiveDestination, video: Download, record_for, *, fingerprint: str) -> ArchiveRecord:
    """Put the verified video in place, then its sidecar built by ``record_for(ArchivedFile)``."""

    def work() -> ArchiveRecord:
        fs, root = destination.ensure_root()
        video_path, sidecar_path = f"{root}/{video_name(fingerprint)}", f"{root}/{sidecar_name(fingerprint)}"
        _publish(fs, video_path, lambda partial: fs.put_file(str(video.path), partial))
        stored = fs.info(video_path)["size"]
        if stored != video.bytes:
            fs.rm(video_path)
            raise VideoDownloadError(f"{video_path}: stored {stored} bytes, expected {video.bytes}")
        record: ArchiveRecord = record_for(
            ArchivedFile(path=video_path, url=destination.public_url(video_path), bytes=stored, sha256=video.sha256)
        )
        sidecar = record.model_dump_json(indent=2).encode()
        _publish(fs, sidecar_path, lambda partial: fs.pipe_file(partial, sidecar))
        return record

    return await asyncio.to_thread(work)


async def find_archived(destination: ArchiveDestination, fingerprint: str, *, verify_checksum: bool = False) -> Optional[ArchiveRecord]:
    """The record of a complete, valid archive of this work, or None."""
    fs, root = destination.filesystem()
    video_path, sidecar_path = f"{root}/{video_name(fingerprint)}", f"{root}/{sidecar_name(fingerprint)}"

    def check() -> Optional[ArchiveRecord]:
        try:
            record = ArchiveRecord.model_validate(json.loads(fs.cat_file(sidecar_path)))
            size = fs.info(video_path)["size"]
        except (FileNotFoundError, ValidationError, ValueError):
            return None
        if record.fingerprint != fingerprint or size != record.video.bytes:
            return None
        if verify_checksum:
            digest = hashlib.sha256()
            with fs.open(video_path, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
            if digest.hexdigest() != record.video.sha256:
                return None
        return record

    return await asyncio.to_thread(check)
