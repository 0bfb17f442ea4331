"""Opening a video with PyAV to prove it decodes and to learn what it is."""

from __future__ import annotations

from pathlib import Path

import av

from prefect_wan.archive.errors import CorruptVideoError
from prefect_wan.archive.record import VideoProbe


def probe_video(path: Path) -> VideoProbe:
    """Decode every video frame (cheap at these sizes) and report what is there."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise CorruptVideoError(f"{path.name}: no video stream")
            stream = container.streams.video[0]
            audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
            frames = sum(1 for _ in container.decode(stream))
            seconds = container.duration / av.time_base if container.duration else frames / float(stream.average_rate or 30)
            return VideoProbe(
                codec=stream.codec_context.name,
                fps=float(stream.average_rate or 0),
                duration_seconds=round(float(seconds), 3),
                width=stream.width,
                height=stream.height,
                frames=frames,
                audio_codec=audio,
            )
    except av.error.FFmpegError as exc:
        raise CorruptVideoError(f"{path.name}: not a decodable video ({exc})") from None
