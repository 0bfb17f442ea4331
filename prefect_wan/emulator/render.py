"""The emulator's stand-in for the model: a crossfade from the first frame to the last, encoded as
the service encodes its output (MP4, H.264, 30 fps; wan2.7 adds an audio track)."""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path
from typing import Optional

import av
import numpy as np
from PIL import Image, ImageOps

FPS = 30
AUDIO_RATE = 48_000


def _fit(data: bytes, width: int, height: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        rgb = ImageOps.fit(image.convert("RGB"), (width, height), method=Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def render_transition(
    first: bytes,
    last: bytes | None,
    width: int,
    height: int,
    path: Path,
    *,
    seconds: int = 5,
    fps: int = FPS,
    audio: bool = False,
    defect: Optional[str] = None,
) -> Path:
    """Write an MP4 of ``seconds`` at ``fps`` to ``path``: ``first`` dissolving into ``last``.

    ``defect`` renders a bad take on purpose: ``miss_last_frame`` dissolves into the last frame's
    negative instead of the last frame, ``freeze`` holds one frame from 20 % to 80 % of the video,
    ``black`` turns black from 40 % on.
    """
    start = _fit(first, width, height)
    end = _fit(last, width, height) if last else start[:, ::-1].copy()
    if defect == "miss_last_frame":
        end = 255 - end
    delta = end.astype(np.int16) - start.astype(np.int16)
    frames = seconds * fps
    tmp = path.with_suffix(".partial")
    with av.open(str(tmp), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "26"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=AUDIO_RATE, layout="mono") if audio else None
        for index in range(frames):
            shown = index
            if defect == "freeze" and 0.2 * frames <= index < 0.8 * frames:
                shown = int(0.2 * frames)
            t = shown / max(frames - 1, 1)
            eased = t * t * (3 - 2 * t)  # smoothstep: ease in and out
            pixels = (start + (delta * eased).astype(np.int16)).astype(np.uint8)
            if defect == "black" and index >= 0.4 * frames:
                pixels = np.zeros_like(pixels)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            _write_tone(container, sound, seconds)
    tmp.rename(path)
    return path


def _write_tone(container, stream, seconds: int) -> None:
    """A quiet two-note chime, so the track is audible and verifiable."""
    samples_per_frame = 1024
    total = seconds * AUDIO_RATE
    for offset in range(0, total, samples_per_frame):
        count = min(samples_per_frame, total - offset)
        t = (np.arange(offset, offset + count) / AUDIO_RATE).astype(np.float32)
        pitch = 440.0 if t[0] < seconds / 2 else 660.0
        wave = (0.2 * np.sin(2 * math.pi * pitch * t)).astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = offset
        frame.time_base = Fraction(1, AUDIO_RATE)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
