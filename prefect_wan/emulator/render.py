"""The emulator's stand-in for the model: a camera move from the first keyframe to the last (the
camera tilts down a tall picture made of the two, the first above the last), encoded as the service
encodes its output (MP4, H.264, 30 fps; wan2.7 adds an audio track). It is the emulator's rendering,
not the model's: real motion a clean shot's checks pass, and each failure the model is reported to
make, on demand and at a severity, for the checks and retakes that exist to catch it."""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import av
import numpy as np
from PIL import Image, ImageOps

from prefect_wan.media.scan import EMULATOR_MARK

FPS = 30
AUDIO_RATE = 48_000
# What the emulator can get wrong on purpose (``inject(op="render", action=...)``).
DEFECTS = ("dissolve", "wipe", "iris", "cut", "late_morph", "flicker", "colour_drift", "revert", "miss_last_frame", "freeze", "black")


def _fit(data: bytes, width: int, height: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        rgb = ImageOps.fit(image.convert("RGB"), (width, height), method=Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _smooth(t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    return t * t * (3 - 2 * t)  # smoothstep: ease in and out


def camera_path(defect: Optional[str], severity: float) -> Callable[[float], float]:
    """Where the camera is at time ``t`` (0..1): 0 on the first keyframe, 1 on the last."""
    if defect == "cut":  # the camera jumps forward mid-shot, by half the way at full severity
        jump = 0.5 * severity
        return lambda t: _smooth(t) * (1 - jump) + (jump if t >= 0.5 else 0.0)
    if defect == "freeze":  # stops from 20 % to 80 %, then moves on (faster) to the last keyframe
        held = _smooth(0.2)
        return lambda t: _smooth(t) if t < 0.2 else held if t < 0.8 else held + (1 - held) * _smooth((t - 0.8) / 0.2)
    if defect == "revert":  # out, back toward the first keyframe, then on to the last late
        return lambda t: 0.9 * severity * math.sin(math.pi * t / 0.7) if t < 0.7 else _smooth((t - 0.7) / 0.3)
    if defect == "miss_last_frame":  # stops short of the last keyframe
        return lambda t: _smooth(t) * (1 - 0.6 * severity)
    if defect == "late_morph":  # heads back up, away from the last keyframe, and stays, until the morph at the end
        return lambda t: -0.3 * severity * _smooth(t / 0.85)
    return _smooth


def _wiped(defect: str, t: float, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The keyframes as a wipe (an edge crossing left to right) or an iris (a circle opening from the
    centre) shows them at time ``t``: the last keyframe inside, the first outside, a soft edge."""
    height, width = start.shape[:2]
    progress = _smooth(t)
    if defect == "wipe":
        place = np.broadcast_to(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, width))
    else:
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        place = np.hypot((x - width / 2) / width, (y - height / 2) / height) / np.hypot(0.5, 0.5)
    edge = 0.04
    inside = np.clip((progress * (1 + edge) - place) / edge, 0.0, 1.0)[..., None]
    return start + (end.astype(np.float32) - start) * inside


def spoiled(pixels: np.ndarray, defect: Optional[str], severity: float, index: int, frames: int, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Frame ``index`` of ``frames`` (float RGB, the camera's view) with what ``defect`` does to its
    pixels; ``start`` and ``end`` are the keyframes as the video shows them."""
    t = index / max(frames - 1, 1)
    if defect == "dissolve":
        fade = start + (end.astype(np.float32) - start) * _smooth(t)
        pixels = (1 - severity) * pixels + severity * fade
    elif defect in ("wipe", "iris"):
        pixels = (1 - severity) * pixels + severity * _wiped(defect, t, start, end)
    elif defect == "late_morph":
        morph = max(2, round(0.15 * frames * (1 - severity) + 2))  # frames the morph takes: fewer, worse
        if index >= frames - morph:
            mix = (index - (frames - morph) + 1) / morph
            pixels = (1 - mix) * pixels + mix * end
    elif defect == "flicker":
        pixels = pixels * (1 + 0.1 * severity * (1 if index % 2 else -1))
    elif defect == "colour_drift":
        cast = 50.0 * severity * t
        pixels = pixels + np.array([-cast, -0.3 * cast, cast], dtype=np.float32)
    elif defect == "black" and index >= 0.4 * frames:
        pixels = np.zeros_like(pixels)
    return np.clip(pixels, 0, 255).astype(np.uint8)


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
    severity: float = 1.0,
) -> Path:
    """Write an MP4 of ``seconds`` at ``fps`` to ``path``: the camera moving from ``first`` to ``last``.

    ``defect`` renders a bad take on purpose, ``severity`` (0-1] how badly: ``dissolve`` mixes in a
    cross-fade, ``wipe`` and ``iris`` a wipe and an iris between the keyframes, ``cut`` jumps mid-shot, ``late_morph`` heads elsewhere and morphs into the last
    keyframe in the last frames, ``flicker`` pumps the brightness, ``colour_drift`` grows a colour
    cast toward the end, ``revert`` goes out and back before moving on, ``miss_last_frame`` stops
    short of the last keyframe, ``freeze`` stops the camera from 20 % to 80 %, ``black`` turns black
    from 40 % on.
    """
    start = _fit(first, width, height)
    end = _fit(last, width, height) if last else start[::-1].copy()
    # The tall picture the camera tilts down: the first keyframe above the last, and (for a path
    # that heads away from the last) the first mirrored above it.
    canvas = np.concatenate([start[::-1], start, end]).astype(np.int16)
    frames = seconds * fps
    path_at = camera_path(defect, severity)
    tmp = path.with_suffix(".partial")
    with av.open(str(tmp), "w", format="mp4") as container:
        container.metadata["comment"] = EMULATOR_MARK
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "26"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=AUDIO_RATE, layout="mono") if audio else None
        for index in range(frames):
            t = index / max(frames - 1, 1)
            top = height + round(path_at(t) * height)
            pixels = spoiled(canvas[top : top + height].astype(np.float32), defect, severity, index, frames, start, end)
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
