"""Shot checks: does a video start on its first keyframe and reach its last, does it move between
them as a shot (not a dissolve, a cut, a revert), without flicker, a colour cast, black or a freeze,
and is it as long and as large as asked?

Every check reads the shot's ``MotionProfile`` (``prefect_wan.media.profile``), measured in the
scan's one decode; ``assess`` is a pure function of the profile, the probe and the request, so a
threshold applied again to a stored profile gives exactly what a fresh decode gives. The keyframes
are fitted to the video's size as the output-size rule does (centred crop to the video's aspect,
then resized: the emulator's fit; how the real model fits a frame of another aspect is
UNCONFIRMED), from the predicted size while the video downloads (``FittedKeyframes``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field

from prefect_wan.archive.record import MotionProfile, RequestRecord, ShotCheck, ShotChecks, VideoProbe
from prefect_wan.media.profile import ProfileObserver, lab_of_image, profile_size, reduce_image

# Where in a shot the transition checks look: its middle (the keyframes hold its ends).
MIDDLE = (0.15, 0.85)
# Samples a dissolve is read over (its median): 0.6 s at five a second.
DISSOLVE_SAMPLES = 3
# Frames each side a frame's change is read against (PySceneDetect's AdaptiveDetector: window_width 2).
CUT_WINDOW = 2


class ShotThresholds(BaseModel):
    """Where each check draws its line. Calibrated on ``bench/shots.py``'s corpus and the emulator's
    renders; UNCONFIRMED for the real model: set them from your own shots (per model, if need be)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    first_frame: float = Field(default=0.75, ge=-1, le=1, description="Least SSIM of the video's first frame to the first keyframe.")
    end_window: float = Field(default=0.75, ge=-1, le=1, description="Least best-SSIM to the last keyframe over the video's last 0.2 s.")
    dissolve: float = Field(
        default=0.07,
        ge=0,
        le=1,
        description="Most share of fine detail only the two keyframes together explain in place, in the shot's most mixed 0.6 s (its median).",
    )
    cut: float = Field(default=3.0, ge=0, description="Most ratio of a frame's change to the frames' around it (PySceneDetect's adaptive threshold).")
    morph: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Most share of an end frame's fine detail only the last keyframe and the picture half a second earlier explain together.",
    )
    morph_elsewhere: float = Field(
        default=0.5, ge=-1, le=1, description="A shot whose likeness to the last keyframe half a second before its end is below this was elsewhere."
    )
    cut_content: float = Field(default=8.0, ge=0, description="A frame whose change (PySceneDetect's content score) is below this is no cut.")
    flicker: float = Field(default=1.0, ge=0, description="Most frame-to-frame pumping of the mean luma (its typical second difference, 0-255).")
    motion: float = Field(default=0.1, ge=0, le=1, description="Least share of sample pairs that move (VBench's dynamic degree).")
    moving_flow: float = Field(default=3 / 256, ge=0, description="A pair moves when its top-5 % flow exceeds this share of the frame's short side.")
    colour: float = Field(default=10.0, ge=0, description="Most colour difference (CIE76) of a frame from the keyframe whose picture it matches.")
    revert: float = Field(default=0.33, ge=0, le=2, description="Most rise of the likeness to the first keyframe after its low point.")
    black: float = Field(default=0.5, ge=0, description="Most seconds of black frames.")
    frozen: float = Field(default=2.0, ge=0, description="Most seconds of the longest stretch of near-identical frames.")
    duration: float = Field(default=0.5, ge=0, description="Most seconds the video's length may differ from the request's.")
    black_luma: float = Field(default=16.0, ge=0, le=255, description="A frame whose mean luma (0-255) is below this is black.")
    still_difference: float = Field(default=0.2, ge=0, description="Consecutive frames whose mean absolute difference (0-255) is below this are identical.")


def fitted_rgb(image_bytes: bytes, width: int, height: int) -> np.ndarray:
    """A keyframe as a ``width`` x ``height`` video shows it, at the profile's size, in RGB."""
    with Image.open(io.BytesIO(image_bytes)) as image:
        # Cropped to the video's aspect and scaled once, straight to the profile size.
        fit = ImageOps.fit(image.convert("RGB"), profile_size(width, height), method=Image.Resampling.BILINEAR)
    return np.asarray(fit, dtype=np.uint8)


@dataclass(frozen=True)
class FittedKeyframes:
    """The first and last keyframe fitted for videos of one profile size (None: not given)."""

    size: tuple[int, int]
    first: Optional[np.ndarray]
    last: Optional[np.ndarray]
    first_colour: Optional[tuple[float, float, float]]
    last_colour: Optional[tuple[float, float, float]]

    @classmethod
    def of(cls, keyframes: tuple[Optional[bytes], Optional[bytes]], width: int, height: int) -> FittedKeyframes:
        rgb = [fitted_rgb(frame, width, height) if frame is not None else None for frame in keyframes]
        luma = [reduce_image(image) if image is not None else None for image in rgb]
        colours = [lab_of_image(image) if image is not None else None for image in rgb]
        return cls(profile_size(width, height), luma[0], luma[1], colours[0], colours[1])


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two luma images of one size (scikit-image), in [-1, 1]."""
    # Imported at the first comparison: it loads scipy.ndimage (0.24 s here), which every run would
    # otherwise pay before its first submission.
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, data_range=255))


class ShotObserver(ProfileObserver):
    """The profile observer of one video, with its keyframes fitted to the size the decode finds
    (the ones fitted ahead from the predicted size, when it is that size)."""

    def __init__(self, keyframes: tuple[Optional[bytes], Optional[bytes]] = (None, None), fitted: Optional[FittedKeyframes] = None) -> None:
        super().__init__()
        self.keyframes, self.fitted = keyframes, fitted

    def start(self, width: int, height: int, fps: float) -> None:
        fitted = self.fitted
        if self.keyframes != (None, None) and (fitted is None or fitted.size != profile_size(width, height)):
            fitted = FittedKeyframes.of(self.keyframes, width, height)
        if fitted is not None:
            self.first_key, self.last_key, self.key_colours = fitted.first, fitted.last, (fitted.first_colour, fitted.last_colour)
        super().start(width, height, fps)


def _middle(values: list[Any]) -> range:
    count = len(values)
    return range(int(count * MIDDLE[0]), max(int(count * MIDDLE[0]) + 1, int(count * MIDDLE[1])))


def _check(name: str, value: float, threshold: float, *, at_least: bool = False, frames: Optional[list[int]] = None) -> ShotCheck:
    passed = value >= threshold if at_least else value <= threshold
    return ShotCheck(name=name, value=round(value, 3), threshold=threshold, passed=passed, frames=[] if passed else (frames or [])[:20], at_least=at_least)


def transition_checks(profile: MotionProfile, limits: ShotThresholds) -> list[ShotCheck]:
    """The checks of what happens between the keyframes."""
    items: list[ShotCheck] = []
    if profile.end_ssim:
        best = max(profile.end_ssim)
        items.append(_check("end_window", best, limits.end_window, at_least=True, frames=[profile.frames - 1]))
    step = profile.sample_step
    middle = [i for i in _middle(profile.mix) if i < len(profile.mix) and profile.mix[i] is not None]
    if middle:
        # The shot's most mixed stretch: the median of three samples (0.6 s), so one odd sample is
        # no dissolve while a brief one is.
        width = DISSOLVE_SAMPLES
        windows = [middle[start : start + width] for start in range(max(1, len(middle) - width + 1))]
        value, window = max((float(np.median([profile.mix[i] or 0.0 for i in w])), w) for w in windows)
        items.append(_check("dissolve", value, limits.dissolve, frames=[i * step for i in window]))
    if len(profile.difference) > CUT_WINDOW + 1:
        # PySceneDetect's adaptive reading: a frame's change against the mean of the frames around
        # it, so a fast camera move (every frame changing) is no cut, and a jump is; read on one
        # frame and on two (a jump spread over two frames, as a two-frame morph is), to the very
        # last frames (fewer neighbours there). The first frame has no change of its own.
        content = np.concatenate([[0.0], profile.difference])  # each frame's change: PySceneDetect's content score
        total = np.concatenate([[0.0], np.cumsum(content)])  # sums of any stretch, at once
        count = len(content)
        worst, at = 0.0, 0
        for length in (1, 2):
            start = np.arange(1, count - length + 1)
            change = (total[start + length] - total[start]) / length
            left, right = np.maximum(1, start - CUT_WINDOW), np.minimum(count, start + length + CUT_WINDOW)
            around = (total[start] - total[left]) + (total[right] - total[start + length])
            neighbours = (start - left) + (right - start - length)
            ratio = np.where((change >= limits.cut_content) & (neighbours > 0), change / np.maximum(around / np.maximum(neighbours, 1), 1e-3), 0.0)
            if len(ratio) and float(ratio.max()) > worst:
                worst, at = float(ratio.max()), int(start[int(ratio.argmax())])
        items.append(_check("cut", worst, limits.cut, frames=[at]))
    reached = bool(profile.end_ssim) and max(profile.end_ssim) >= limits.end_window
    if reached and profile.end_reference is not None and profile.end_reference < len(profile.to_last):
        # A late morph: the shot ends on its last keyframe (else end_window says what is wrong), but
        # half a second before its end it was still elsewhere (not like the last keyframe), and its
        # last frames are that picture and the last keyframe mixed in place.
        elsewhere = profile.to_last[profile.end_reference] < limits.morph_elsewhere
        mixes = [m for m in profile.end_mix if m is not None] if elsewhere else []
        worst = max(mixes, default=0.0)
        at = profile.frames - len(profile.end_mix) + (profile.end_mix.index(worst) if mixes else 0)
        items.append(_check("morph", worst, limits.morph, frames=[profile.end_reference * step, at]))
    if len(profile.luma) > 2:
        luma = np.array(profile.luma)
        pumping = np.abs(luma[1:-1] - (luma[:-2] + luma[2:]) / 2)
        pumped = [int(i) + 1 for i in np.argsort(pumping)[-5:]]
        items.append(_check("flicker", float(np.percentile(pumping, 75)), limits.flicker, frames=sorted(pumped)))
    if profile.motion:
        moving_at = limits.moving_flow * min(profile.size)
        moving = sum(1 for m in profile.motion if m > moving_at) / len(profile.motion)
        items.append(_check("motion", moving, limits.motion, at_least=True, frames=[]))
    if profile.first_colour is not None and profile.last_colour is not None and profile.colour_l:
        # A cast, not a change of content: a frame that matches its keyframe's picture (the first
        # frame, the end) should match its colour too. Luma alone misses a hue cast.
        seen = np.stack([profile.colour_l, profile.colour_a, profile.colour_b], axis=1)
        drifts: list[tuple[int, float]] = []
        if profile.first_ssim is not None and profile.first_ssim >= limits.first_frame:
            drifts.append((0, float(np.linalg.norm(seen[0] - np.array(profile.first_colour)))))
        if profile.end_colour is not None and profile.end_ssim and max(profile.end_ssim) >= limits.end_window:
            drifts.append((profile.frames - 1, float(np.linalg.norm(np.array(profile.end_colour) - np.array(profile.last_colour)))))
        if drifts:
            at, drift = max(drifts, key=lambda d: d[1])
            items.append(_check("colour", drift, limits.colour, frames=[at]))
    if len(profile.to_first) > 2:
        # Back toward the first keyframe after getting away from it: closer to it again than the
        # shot's low point, beyond what the last keyframe's own likeness to it explains. Read on
        # the shot before its last part (the end belongs to the last keyframe).
        curve = np.array(profile.to_first)
        body = curve[: max(2, int(len(curve) * MIDDLE[1]))]
        floor = np.maximum(np.minimum.accumulate(body), curve[-1])
        rebound = np.clip(body - floor, 0.0, None)
        back = int(np.argmax(rebound))
        items.append(_check("revert", float(rebound[back]), limits.revert, frames=[back * step]))
    return items


def assess(profile: MotionProfile, probe: VideoProbe, request: RequestRecord, limits: ShotThresholds) -> ShotChecks:
    """Every check's value, threshold and verdict, from the profile (a keyframe not given is not checked)."""
    fps = profile.fps or probe.fps or 30.0
    items: list[ShotCheck] = []
    if profile.first_ssim is not None:
        items.append(_check("first_frame", profile.first_ssim, limits.first_frame, at_least=True, frames=[0]))
    items += transition_checks(profile, limits)
    black = [i for i, luma in enumerate(profile.luma) if luma < limits.black_luma]
    items.append(_check("black", len(black) / fps, limits.black, frames=black))
    longest, run, end = 0, 0, 0
    for i, difference in enumerate(profile.difference):
        run = run + 1 if difference < limits.still_difference else 0
        if run > longest:
            longest, end = run, i + 1
    items.append(_check("frozen", longest / fps, limits.frozen, frames=list(range(end - longest, end + 1, max(1, longest // 10))) if longest else []))
    if request.duration is not None and request.duration > 0:
        off = abs(probe.duration_seconds - request.duration)
        items.append(_check("duration", off, limits.duration))
    if request.predicted_size:
        same = (probe.width, probe.height) == tuple(request.predicted_size)
        size = f"{probe.width}x{probe.height}"
        expected = f"{request.predicted_size[0]}x{request.predicted_size[1]}"
        items.append(ShotCheck(name="size", value=size, threshold=expected, passed=same))
    return ShotChecks(passed=all(item.passed for item in items), items=items)
