"""Reading the keyframes (and driving audio) from wherever they live, and inspecting them.

Sources: a local path, an ``http(s)`` URL (downloaded to check and fingerprint, then passed on to
the service as is), an fsspec URL (``s3://``, ``memory://``, ``file://``...), raw bytes, a PIL
image, a ``data:`` URI, or an ``oss://`` temporary URL from the upload API (passed through).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

import fsspec
import httpx
from PIL import Image, UnidentifiedImageError

from prefect_wan.client.errors import WanError

_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "WEBP": "image/webp"}
_EXT = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "WEBP": "webp", "WAV": "wav", "MP3": "mp3"}


class SourceError(WanError, ValueError):
    """A source could not be read; the message says which and why."""


@dataclass(frozen=True)
class LoadedMedia:
    """Bytes of one input plus what we learned about them."""

    data: bytes
    sha256: str
    origin: str
    # A URL the service can read by itself (http(s), data:, oss://); None means upload it.
    passthrough_url: Optional[str]
    format: Optional[str] = None
    width: int = 0
    height: int = 0
    mode: str = ""
    has_transparency: bool = False
    readable: bool = True
    seconds: Optional[float] = None
    # Why the bytes could not be decoded (a truncated or corrupt file), when they could not.
    decode_error: Optional[str] = None

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def mime_type(self) -> str:
        if self.format in _MIME:
            return _MIME[self.format]
        if self.format == "WAV":
            return "audio/wav"
        if self.format == "MP3":
            return "audio/mpeg"
        return "application/octet-stream"

    @property
    def filename(self) -> str:
        return f"{self.sha256[:24]}.{_EXT.get(self.format or '', 'bin')}"

    @property
    def inspectable(self) -> bool:
        # oss:// objects can only be read by the service itself.
        return not (self.passthrough_url or "").startswith("oss://")


def redact_url(url: str) -> str:
    """A URL without user info, query or fragment: signed URLs carry credentials there."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def describe_source(source: Any) -> str:
    """A short description of a source that is safe to log or archive."""
    if isinstance(source, Image.Image):
        return f"<PIL image {source.width}x{source.height} {source.mode}>"
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    text = str(source)
    if text.startswith("data:"):
        return f"<data URI, {len(text)} characters>"
    if "://" in text:
        return redact_url(text)
    return text


async def read_source(
    source: Any,
    *,
    http: httpx.AsyncClient,
    max_bytes: int,
    storage_options: Optional[dict[str, Any]] = None,
) -> tuple[bytes, Optional[str]]:
    """The bytes of a source and, for URLs the service can fetch itself, that URL."""
    if isinstance(source, Image.Image):
        return _encode_pil(source), None
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), None
    if isinstance(source, Path):
        return await asyncio.to_thread(_read_local, source, max_bytes), None
    if not isinstance(source, str) or not source:
        raise SourceError(f"unsupported source {describe_source(source)}: give a path, URL, bytes or PIL image")
    scheme = urlsplit(source).scheme.lower() if "://" in source or source.startswith("data:") else ""
    if scheme in ("http", "https"):
        return await _download(source, http, max_bytes), source
    if scheme == "data":
        return decode_data_uri(source), source
    if scheme == "oss":
        parts = urlsplit(source)
        if not parts.netloc or not parts.path.strip("/"):
            raise SourceError(f"{source!r} names no object: an oss:// URL from the upload API looks like oss://dashscope-instant/<dir>/<file>")
        return source.encode(), source
    if scheme:
        return await asyncio.to_thread(_read_fsspec, source, max_bytes, storage_options or {}), None
    return await asyncio.to_thread(_read_local, Path(source).expanduser(), max_bytes), None


def missing_local_file(source: Any) -> Optional[str]:
    """Why a local path names no file (``read_source`` would refuse it), or None for anything else:
    a check as cheap as a stat, for every pair of a manifest before anything starts."""
    if isinstance(source, str) and source and "://" not in source and not source.startswith("data:"):
        source = Path(source).expanduser()
    if isinstance(source, Path) and not source.is_file():
        return "no such file"
    return None


def inspect_image(data: bytes, *, origin: str, passthrough_url: Optional[str]) -> LoadedMedia:
    digest = hashlib.sha256(data).hexdigest()
    if (passthrough_url or "").startswith("oss://"):
        return LoadedMedia(data=data, sha256=digest, origin=origin, passthrough_url=passthrough_url)
    try:
        with Image.open(io.BytesIO(data)) as image:
            decode_error = None
            try:
                # Decode every pixel: a truncated file has a valid header, and the service would
                # accept the call and fail the task later.
                image.load()
            except (OSError, SyntaxError, ValueError) as exc:
                decode_error = str(exc) or type(exc).__name__
            return LoadedMedia(
                data=data,
                sha256=digest,
                origin=origin,
                passthrough_url=passthrough_url,
                format=image.format,
                width=image.width,
                height=image.height,
                mode=image.mode,
                has_transparency=image.has_transparency_data,
                readable=decode_error is None,
                decode_error=decode_error,
            )
    except (UnidentifiedImageError, OSError):
        return LoadedMedia(data=data, sha256=digest, origin=origin, passthrough_url=passthrough_url, readable=False)


def inspect_audio(data: bytes, *, origin: str, passthrough_url: Optional[str]) -> LoadedMedia:
    digest = hashlib.sha256(data).hexdigest()
    if (passthrough_url or "").startswith("oss://"):
        return LoadedMedia(data=data, sha256=digest, origin=origin, passthrough_url=passthrough_url)
    fmt = None
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        fmt = "WAV"
    elif data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        fmt = "MP3"
    seconds = _audio_seconds(data) if fmt else None
    return LoadedMedia(
        data=data,
        sha256=digest,
        origin=origin,
        passthrough_url=passthrough_url,
        format=fmt,
        readable=fmt is not None and seconds is not None,
        seconds=seconds,
    )


def _audio_seconds(data: bytes) -> Optional[float]:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if container.duration is not None:
                return container.duration / 1_000_000
            stream = container.streams.audio[0]
            if stream.duration is None or stream.time_base is None:
                return None
            return float(stream.duration * stream.time_base)
    except (av.error.FFmpegError, IndexError, ValueError):
        return None


def _encode_pil(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Keep JPEG sources as JPEG; everything else goes lossless.
    if image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK"):
        image.save(buffer, format="JPEG", quality=95)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def _too_big(origin: str, max_bytes: int) -> SourceError:
    return SourceError(f"{origin}: larger than the limit of {max_bytes} bytes")


def _read_local(path: Path, max_bytes: int) -> bytes:
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    if path.stat().st_size > max_bytes:
        raise _too_big(str(path), max_bytes)
    return path.read_bytes()


def _read_fsspec(url: str, max_bytes: int, storage_options: dict[str, Any]) -> bytes:
    try:
        with fsspec.open(url, "rb", **storage_options) as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise SourceError(f"{redact_url(url)}: no such file") from None
    except (OSError, ValueError, ImportError) as exc:
        raise SourceError(f"{redact_url(url)}: could not be read ({type(exc).__name__}: {exc})") from None
    if len(data) > max_bytes:
        raise _too_big(redact_url(url), max_bytes)
    return data


async def _download(url: str, http: httpx.AsyncClient, max_bytes: int) -> bytes:
    origin = redact_url(url)
    try:
        async with http.stream("GET", url, follow_redirects=True) as response:
            if response.status_code != 200:
                raise SourceError(f"{origin}: download answered HTTP {response.status_code}")
            chunks, total = [], 0
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise _too_big(origin, max_bytes)
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise SourceError(f"{origin}: download failed ({type(exc).__name__})") from None
    return b"".join(chunks)


def decode_data_uri(uri: str) -> bytes:
    """The bytes of a ``data:<mime>;base64,<data>`` URI; raises ``SourceError``."""
    header, _, payload = uri.partition(",")
    if not header.endswith(";base64") or not payload:
        raise SourceError("data URI must look like data:<mime>;base64,<data>")
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        raise SourceError("data URI payload is not valid base64") from None
