"""Shot checks: does a video start on its first keyframe and end on its last, does it stay out of
black, does it move, and is it as long and as large as asked?

The measures come from the scan's one decode (``ShotObserver`` sees every frame); the keyframes
are compared with scikit-image's SSIM, on luma, after being fitted to the video's size as the
output-size rule does (centred crop to the video's aspect, then resized: the emulator's fit; how
the real model fits a frame of another aspect is UNCONFIRMED). The keyframes are fitted from the
predicted size while the video downloads (``FittedKeyframes``), so their decoding is off the
archive step's path.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import av
import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field

from prefect_wan.archive.record import RequestRecord, ShotCheck, ShotChecks, VideoProbe

# Frames are compared on luma at this longest side: SSIM's verdict on "is this the keyframe" needs
# neither colour nor full resolution (a 720P frame in colour cost 40 times as much).
COMPARE_SIDE = 160
# Frames are watched for black and for motion on this grid of luma samples (columns, rows).
WATCH_SIZE = (64, 36)
# Pixel formats whose first plane is the luma, at full size, one byte a sample.
_LUMA_FIRST = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21")
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


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


def compare_size(width: int, height: int) -> tuple[int, int]:
    scale = COMPARE_SIDE / max(width, height)
    return max(8, round(width * scale)), max(8, round(height * scale))


def fitted(image_bytes: bytes, width: int, height: int) -> np.ndarray:
    """A keyframe as a ``width`` x ``height`` video shows it, in luma at the compare size."""
    with Image.open(io.BytesIO(image_bytes)) as image:
        # Cropped to the video's aspect and scaled once, straight to the compare size (the
        # video's frames are scaled to it too).
        fit = ImageOps.fit(image.convert("L"), compare_size(width, height), method=Image.Resampling.BILINEAR)
    return np.asarray(fit, dtype=np.uint8)


@dataclass(frozen=True)
class FittedKeyframes:
    """The first and last keyframe fitted for videos of one compare size (None: not given)."""

    size: tuple[int, int]
    first: Optional[np.ndarray]
    last: Optional[np.ndarray]

    @classmethod
    def of(cls, keyframes: tuple[Optional[bytes], Optional[bytes]], width: int, height: int) -> FittedKeyframes:
        first, last = (fitted(frame, width, height) if frame is not None else None for frame in keyframes)
        return cls(compare_size(width, height), first, last)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two luma images of one size (scikit-image), in [-1, 1]."""
    # Imported at the first comparison: it loads scipy.ndimage (0.24 s here), which every run would
    # otherwise pay before its first submission.
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, data_range=255))


def watched_luma(frame: av.VideoFrame) -> np.ndarray:
    """The frame's luma (0-255, full range) sampled on the watch grid.

    Read straight from the decoder's luma plane, a sample at the centre of each grid cell: a
    software rescale of the whole frame (``to_ndarray(width=, height=)``) cost 0.8 ms a 720P frame,
    this 4 us. A frozen picture decodes to the same samples (the encoder copies its blocks), so
    its frames differ by nothing."""
    if frame.format.name not in _LUMA_FIRST:
        return frame.to_ndarray(format="gray", width=WATCH_SIZE[0], height=WATCH_SIZE[1]).astype(np.float32)
    plane = frame.planes[0]
    luma = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
    columns, rows = WATCH_SIZE
    step_y, step_x = max(1, frame.height // rows), max(1, frame.width // columns)
    samples = luma[step_y // 2 :: step_y, step_x // 2 :: step_x][:rows, :columns].astype(np.float32)
    if frame.color_range == _FULL_RANGE or frame.format.name.startswith("yuvj"):
        return samples
    # Limited ("TV") range: black is 16 and white 235.
    return np.clip((samples - 16.0) * (255.0 / 219.0), 0.0, 255.0)


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

    @staticmethod
    def _luma(frame: av.VideoFrame) -> np.ndarray:
        width, height = compare_size(frame.width, frame.height)
        return frame.to_ndarray(format="gray", width=width, height=height)

    def observe(self, index: int, frame: av.VideoFrame) -> None:
        if index == 0:
            self.first = self._luma(frame)
        self._last = frame
        small = watched_luma(frame)
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
        return self._luma(self._last) if self._last is not None else None


def check_shot(
    observer: ShotObserver,
    probe: VideoProbe,
    request: RequestRecord,
    keyframes: tuple[Optional[bytes], Optional[bytes]],
    fitted_ahead: Optional[FittedKeyframes] = None,
) -> ShotChecks:
    """Every check's value, threshold and verdict. A keyframe not given is not checked.
    ``fitted_ahead``: the keyframes fitted for the predicted size, used when the video has it."""
    limits, fps = observer.thresholds, probe.fps or 30.0
    references = fitted_ahead
    if references is None or references.size != compare_size(probe.width, probe.height):
        references = FittedKeyframes.of(keyframes, probe.width, probe.height)
    items: list[ShotCheck] = []
    for name, frame, reference, threshold in (
        ("first_frame", observer.first, references.first, limits.first_frame),
        ("last_frame", observer.last, references.last, limits.last_frame),
    ):
        if frame is not None and reference is not None:
            score = similarity(frame, reference)
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
