"""One pass over a video: every frame decoded once, and everything that needs the frames served
from that pass (the probe, the poster's thumbnails, and any observer such as the shot checks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import av
from PIL import Image

from prefect_wan.archive.record import VideoProbe
from prefect_wan.client.errors import WanError

THUMB_HEIGHT = 180
# The emulator writes this in every video's metadata, so nobody mistakes its rendering for the model's.
EMULATOR_MARK = "rendered by the prefect-wan emulator"
DECODE_THREADS = 2


class CorruptVideoError(WanError):
    """The downloaded bytes are not a decodable video."""

    retryable = True


class FrameObserver(Protocol):
    """Sees every decoded frame of a scan, in order."""

    def observe(self, index: int, frame: av.VideoFrame) -> None: ...


def first_middle_last(frames: int, fps: float) -> list[int]:
    """First, middle and last frame (``-1``: the last one decoded)."""
    return [0, frames // 2, -1] if frames > 2 else [0, -1]


@dataclass
class VideoScan:
    """What one decode found: the probe and the poster's thumbnails, in order."""

    probe: VideoProbe
    thumbs: list[Image.Image] = field(default_factory=list)


def _thumb(frame: av.VideoFrame, height: int) -> Image.Image:
    width = max(1, round(frame.width * height / frame.height))
    return frame.to_image(width=width, height=height)


def scan_video(
    path: Path,
    poster_at: Callable[[int, float], Sequence[int]] = first_middle_last,
    observers: Sequence[FrameObserver] = (),
    thumb_height: int = THUMB_HEIGHT,
) -> VideoScan:
    """Decode every frame of ``path`` once. ``poster_at(frames, fps)`` names the frames to keep as
    thumbnails from the container's own frame count (``-1`` is the last frame decoded)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise CorruptVideoError(f"{path.name}: no video stream")
            stream = container.streams.video[0]
            # Frame threads, two: about twice as fast on two cores (frames still come in order), and a
            # bounded number of frames in memory whatever the machine's size.
            stream.thread_type, stream.thread_count = "AUTO", DECODE_THREADS
            fps = float(stream.average_rate or 0)
            expected = stream.frames or round(float(container.duration or 0) / av.time_base * (fps or 30))
            wanted = sorted({i for i in poster_at(expected, fps) if i >= 0})
            keep_last = -1 in poster_at(expected, fps)
            for observer in observers:
                if (start := getattr(observer, "start", None)) is not None:
                    start(stream.width, stream.height, fps or 30.0)  # the size and rate, before the first frame
            thumbs: dict[int, Image.Image] = {}
            index, last = -1, None
            for index, frame in enumerate(container.decode(stream)):
                if wanted and index in wanted:
                    thumbs[index] = _thumb(frame, thumb_height)
                for observer in observers:
                    observer.observe(index, frame)
                last = frame
            frames = index + 1
            if keep_last and last is not None and (frames - 1) not in thumbs:
                thumbs[frames - 1] = _thumb(last, thumb_height)
            seconds = container.duration / av.time_base if container.duration else frames / (fps or 30.0)
            probe = VideoProbe(
                codec=stream.codec_context.name,
                fps=fps,
                duration_seconds=round(float(seconds), 3),
                width=stream.width,
                height=stream.height,
                frames=frames,
                audio_codec=container.streams.audio[0].codec_context.name if container.streams.audio else None,
                rendered_by="the prefect-wan emulator" if container.metadata.get("comment") == EMULATOR_MARK else None,
            )
            return VideoScan(probe, [thumbs[i] for i in sorted(thumbs)])
    except av.error.FFmpegError as exc:
        raise CorruptVideoError(f"{path.name}: not a decodable video ({exc})") from None
