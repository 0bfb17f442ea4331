"""The shot checks on any video file, and again on archived shots from their stored profiles.

``check_video`` decodes a video once (a path or an fsspec URL) and returns the ``ShotChecks`` an
archived video's sidecar holds; ``recheck`` applies other thresholds to a sidecar's stored motion
profile, reading no video.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from fsspec.core import url_to_fs

from prefect_wan.archive.record import ArchiveRecord, FrameRecord, MotionProfile, RequestRecord, ShotChecks
from prefect_wan.client.errors import WanError
from prefect_wan.media.scan import CorruptVideoError, scan_video
from prefect_wan.media.shots import ShotObserver, ShotThresholds, assess


class VideoCheckError(WanError, ValueError):
    """The video or a keyframe to check it against cannot be read; nothing was checked."""


def _read(source: Union[str, Path], what: str, storage_options: Optional[dict[str, Any]]) -> bytes:
    try:
        fs, path = url_to_fs(str(source), **(storage_options or {}))
        return bytes(fs.cat_file(path))
    except FileNotFoundError:
        raise VideoCheckError(f"{what} {source}: no such file") from None
    except (OSError, ValueError, ImportError) as error:
        raise VideoCheckError(f"{what} {source}: cannot be read ({type(error).__name__}: {error})") from None


def check_video_profile(
    video: Union[str, Path],
    *,
    first_frame: Union[str, Path, None] = None,
    last_frame: Union[str, Path, None] = None,
    duration: Optional[float] = None,
    thresholds: Optional[ShotThresholds] = None,
    storage_options: Optional[dict[str, Any]] = None,
) -> tuple[ShotChecks, MotionProfile]:
    """``check_video``, with the motion profile it measured."""
    keyframes = tuple(
        _read(frame, label, storage_options) if frame is not None else None for frame, label in ((first_frame, "first frame"), (last_frame, "last frame"))
    )
    data = _read(video, "video", storage_options)
    with tempfile.TemporaryDirectory(prefix="prefect-wan-check-") as spool:
        path = Path(spool) / "video"
        path.write_bytes(data)
        shot = ShotObserver(keyframes)  # type: ignore[arg-type]
        try:
            scan = scan_video(path, observers=[shot])
        except CorruptVideoError:
            raise VideoCheckError(f"video {video}: not a decodable video") from None
    if scan.probe.frames == 0:
        raise VideoCheckError(f"video {video}: no frame could be decoded")
    profile = shot.profile()
    request = RequestRecord(
        model="-",
        region="-",
        family="-",
        first_frame=FrameRecord(source=str(first_frame or "-"), sha256="-", bytes=0),
        duration=round(duration) if duration else None,
    )
    return assess(profile, scan.probe, request, thresholds or ShotThresholds()), profile


def check_video(
    video: Union[str, Path],
    *,
    first_frame: Union[str, Path, None] = None,
    last_frame: Union[str, Path, None] = None,
    duration: Optional[float] = None,
    thresholds: Optional[ShotThresholds] = None,
    storage_options: Optional[dict[str, Any]] = None,
) -> ShotChecks:
    """The shot checks of ``video`` (a path or an fsspec URL) against its keyframes (each optional:
    a keyframe not given is not checked against) and its requested ``duration`` in seconds.
    ``VideoCheckError`` names what cannot be read."""
    return check_video_profile(
        video, first_frame=first_frame, last_frame=last_frame, duration=duration, thresholds=thresholds, storage_options=storage_options
    )[0]


def recheck(record: ArchiveRecord, thresholds: ShotThresholds) -> Optional[ShotChecks]:
    """The archived shot's checks under ``thresholds``, from its stored profile (None: archived
    without one, by an older version). Exactly what a fresh decode gives."""
    if record.profile is None:
        return None
    return assess(record.profile, record.probe, record.request, thresholds)
