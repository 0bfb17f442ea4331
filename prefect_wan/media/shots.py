"""Shot checks: does a video start on its first keyframe and end on its last, does it stay out of
black, does it move, and is it as long and as large as asked?

The measures come from the scan's one decode (``ShotObserver`` sees every frame); the keyframes
are compared with scikit-image's SSIM after being fitted to the video's size as the output-size
rule does (centred crop to the video's aspect, then resized: the emulator's fit; how the real model
fits a frame of another aspect is UNCONFIRMED).
"""

from __future__ import annotations

import io
from typing import Optional

import av
import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field
from skimage.metrics import structural_similarity

from prefect_wan.archive.record import RequestRecord, ShotCheck, ShotChecks, VideoProbe

# Frames are compared at this longest side: SSIM's verdict does not need full resolution, and a
# 1080P frame would cost 20 times as much.
COMPARE_SIDE = 256
# Frames are watched for black and for motion at this size.
WATCH_SIZE = (64, 36)


class ShotThresholds(BaseModel):
    """Where each check draws its line. Calibrated on the emulator's renders (tests/test_shots.py);
    UNCONFIRMED for the real model: set them from your own shots."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    first_frame: float = Field(default=0.75, ge=-1, le=1, description="Least SSIM of the video's first frame to the first keyframe.")
    last_frame: float = Field(default=0.75, ge=-1, le=1, description="Least SSIM of the video's last frame to the last keyframe.")
    black: float = Field(default=0.5, ge=0, description="Most seconds of black frames.")
    frozen: float = Field(default=2.0, ge=0, description="Most seconds of the longest stretch of near-identical frames.")
    duration: float = Field(default=0.5, ge=0, description="Most seconds the video's length may differ from the request's.")
    black_luma: float = Field(default=16.0, ge=0, le=255, description="A frame whose mean luma (0-255) is below this is black.")
    still_difference: float = Field(default=0.2, ge=0, description="Consecutive frames whose mean absolute difference (0-255) is below this are identical.")


def _compare_size(width: int, height: int) -> tuple[int, int]:
    scale = COMPARE_SIDE / max(width, height)
    return max(8, round(width * scale)), max(8, round(height * scale))


def fitted(image_bytes: bytes, width: int, height: int) -> np.ndarray:
    """A keyframe as the video shows it: fitted to the video's aspect and size, at the compare size."""
    with Image.open(io.BytesIO(image_bytes)) as image:
        fit = ImageOps.fit(image.convert("RGB"), (width, height), method=Image.Resampling.BILINEAR)
    return np.asarray(fit.resize(_compare_size(width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two RGB images of one size (scikit-image), in [-1, 1]."""
    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


class ShotObserver:
    """Watches every decoded frame: keeps the first and last (for the keyframe checks), counts black
    frames and the longest run of near-identical ones."""

    def __init__(self, thresholds: ShotThresholds) -> None:
        self.thresholds = thresholds
        self.first: Optional[np.ndarray] = None
        self._last: Optional[av.VideoFrame] = None
        self._previous: Optional[np.ndarray] = None
        self.black_frames = 0
        self._still_run = 0
        self.longest_still = 0  # frames that repeat the one before, in the longest run

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = _compare_size(frame.width, frame.height)
        return frame.to_ndarray(format="rgb24", width=width, height=height)

    def observe(self, index: int, frame: av.VideoFrame) -> None:
        if index == 0:
            self.first = self._rgb(frame)
        self._last = frame
        small = frame.to_ndarray(format="gray", width=WATCH_SIZE[0], height=WATCH_SIZE[1]).astype(np.int16)
        if small.mean() < self.thresholds.black_luma:
            self.black_frames += 1
        if self._previous is not None and np.abs(small - self._previous).mean() < self.thresholds.still_difference:
            self._still_run += 1
            self.longest_still = max(self.longest_still, self._still_run)
        else:
            self._still_run = 0
        self._previous = small

    @property
    def last(self) -> Optional[np.ndarray]:
        return self._rgb(self._last) if self._last is not None else None


def check_shot(observer: ShotObserver, probe: VideoProbe, request: RequestRecord, keyframes: tuple[Optional[bytes], Optional[bytes]]) -> ShotChecks:
    """Every check's value, threshold and verdict. A keyframe not given is not checked."""
    limits, fps = observer.thresholds, probe.fps or 30.0
    items: list[ShotCheck] = []
    for name, frame, keyframe, threshold in (
        ("first_frame", observer.first, keyframes[0], limits.first_frame),
        ("last_frame", observer.last, keyframes[1], limits.last_frame),
    ):
        if frame is not None and keyframe is not None:
            score = similarity(frame, fitted(keyframe, probe.width, probe.height))
            items.append(ShotCheck(name=name, value=round(score, 4), threshold=threshold, passed=score >= threshold))
    black = observer.black_frames / fps
    items.append(ShotCheck(name="black", value=round(black, 3), threshold=limits.black, passed=black <= limits.black))
    frozen = observer.longest_still / fps
    items.append(ShotCheck(name="frozen", value=round(frozen, 3), threshold=limits.frozen, passed=frozen <= limits.frozen))
    if request.duration is not None and request.duration > 0:
        off = abs(probe.duration_seconds - request.duration)
        items.append(ShotCheck(name="duration", value=round(off, 3), threshold=limits.duration, passed=off <= limits.duration))
    if request.predicted_size:
        same = (probe.width, probe.height) == tuple(request.predicted_size)
        size = f"{probe.width}x{probe.height}"
        expected = f"{request.predicted_size[0]}x{request.predicted_size[1]}"
        items.append(ShotCheck(name="size", value=size, threshold=expected, passed=same))
    return ShotChecks(passed=all(item.passed for item in items), items=items)
