"""A shot's motion profile, measured from the scan's one decode: the per-frame curves every shot
check reads, kept small in the sidecar so any threshold can be applied again later without
downloading or decoding the video again.

Every frame is reduced once, straight from the decoder's planes, to a small luma image; every
sixth or so (5 a second) also to a smaller one with its colour. From those come
each curve (per frame: ``luma``, ``difference``; per sample: the rest):

- ``luma``: mean luma (0-255, full range) — black frames, flicker;
- ``difference``: mean absolute difference to the previous frame — frozen stretches (these two on
  a grid of luma samples, every frame);
- ``content``: PySceneDetect's content score (its ``ContentDetector``, on the luma grid, every
  frame) — cuts, read against the frames around them as its ``AdaptiveDetector`` reads them;
- ``motion``: optical flow (OpenCV's DIS) between samples, the mean of each pair's top 5 %
  magnitudes, in pixels of the sample (VBench's dynamic degree);
- ``to_first`` / ``to_last``: correlation of each frame with each keyframe — reverts;
- ``alpha``, ``blend`` and ``between``: each frame as the best mix of the two keyframes, how far it
  is from that mix, and how much of it lies between them, as a cross-fade's frames do — dissolves;
- ``colour``: mean L*a*b* — colour casts;
- ``first_ssim`` and ``end_ssim``: SSIM (scikit-image) of the first frame with the first keyframe
  and of each of the last frames with the last keyframe.

No model weights: every measure is classical, made by the library made for it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

import av
import numpy as np

from prefect_wan.archive.record import MotionProfile

# Every frame is reduced to this longest side (even sides: the colour planes are half the luma's):
# brightness, stillness and the keyframe SSIMs read it.
PROFILE_SIDE = 160
# The transition's measures read five frames a second (VBench samples eight; five keep the checks
# within a tenth of the archive step), at this side: motion, cuts, likeness to the keyframes, colour.
SAMPLE_SIDE = 96
SAMPLES_PER_SECOND = 5
# The end of a shot, where the last keyframe must be met (some pipelines drop the very last frame).
END_WINDOW_SECONDS = 0.2
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG
_PLANAR = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p")
DECIMALS = 4


def _even_size(width: int, height: int, side: int) -> tuple[int, int]:
    scale = side / max(width, height)
    return max(8, 2 * round(width * scale / 2)), max(8, 2 * round(height * scale / 2))


def profile_size(width: int, height: int) -> tuple[int, int]:
    return _even_size(width, height, PROFILE_SIDE)


def sample_size(width: int, height: int) -> tuple[int, int]:
    return _even_size(width, height, SAMPLE_SIDE)


def _rounded(values: Any) -> list[float]:
    return [round(float(v), DECIMALS) for v in values]


def lab_of_ycbcr(ycbcr: np.ndarray) -> np.ndarray:
    """Mean colours (N x 3, full-range Y, Cb, Cr, 0-255) as L*a*b* (L 0-100, a and b about -128..127)."""
    import cv2

    if len(ycbcr) == 0:
        return np.zeros((0, 3), dtype=np.float32)
    # OpenCV's YCrCb order, one pixel a colour; float32 in [0, 1] gives true L*a*b*.
    ycrcb = np.clip(ycbcr[:, [0, 2, 1]], 0, 255).astype(np.uint8).reshape(1, -1, 3)
    rgb = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB).astype(np.float32) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).reshape(-1, 3)


def lab_of_image(rgb: np.ndarray) -> tuple[float, float, float]:
    """The mean L*a*b* of an RGB image (uint8), measured as a video frame's is: through its mean YCbCr."""
    import cv2

    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).reshape(-1, 3).astype(np.float64).mean(axis=0)
    lab = lab_of_ycbcr(np.array([[ycrcb[0], ycrcb[2], ycrcb[1]]]))[0]
    return float(lab[0]), float(lab[1]), float(lab[2])


def _plane_view(frame: av.VideoFrame, index: int) -> np.ndarray:
    """One plane of a planar YUV frame as an array, read in place (no copy, no software rescale)."""
    plane = frame.planes[index]
    rows = frame.height if index == 0 else plane.height
    columns = frame.width if index == 0 else plane.width
    return np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)[:rows, :columns]


def _full_range(frame: av.VideoFrame) -> bool:
    return frame.color_range == _FULL_RANGE or frame.format.name.startswith("yuvj")


def _luma_full_range(frame: av.VideoFrame, luma: Any) -> Any:
    """Luma (an array or a number) on the full 0-255 range: limited ("TV") range puts black at 16 and white at 235."""
    return luma if _full_range(frame) else np.clip((luma - 16.0) * (255.0 / 219.0), 0.0, 255.0)


# Brightness, stillness and cuts read every frame on this grid of luma samples (columns, rows): a
# few microseconds a 720P frame, where a resize of the whole plane costs ten times that.
GRID = (128, 72)


def grid_luma(frame: av.VideoFrame) -> tuple[float, np.ndarray]:
    """The frame's luma sampled at the centre of each grid cell (float32, 0-255 full range), and its
    mean (over enough samples that texture moving under the grid does not read as flicker)."""
    if frame.format.name not in _PLANAR:
        grid = frame.to_ndarray(format="gray", width=GRID[0], height=GRID[1]).astype(np.float32)
        return float(grid.mean()), grid
    columns, rows = GRID
    step_y, step_x = max(1, frame.height // rows), max(1, frame.width // columns)
    grid = _plane_view(frame, 0)[step_y // 2 :: step_y, step_x // 2 :: step_x][:rows, :columns].astype(np.float32)
    return float(_luma_full_range(frame, float(grid.mean()))), _luma_full_range(frame, grid)


def frame_luma(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """The frame's luma at ``size`` (float32, 0-255 full range)."""
    import cv2

    if frame.format.name in _PLANAR:
        return _luma_full_range(frame, cv2.resize(_plane_view(frame, 0), size, interpolation=cv2.INTER_LINEAR).astype(np.float32))
    return frame.to_ndarray(format="gray", width=size[0], height=size[1]).astype(np.float32)


def frame_colour(frame: av.VideoFrame, luma: np.ndarray) -> tuple[float, float, float]:
    """The frame's mean full-range Y, Cb, Cr (``luma``: the frame's small luma, for its mean)."""
    import cv2

    if frame.format.name in _PLANAR:
        cb, cr = (float(_plane_view(frame, index)[::4, ::4].mean()) for index in (1, 2))
        if not _full_range(frame):  # limited range chroma: 16-240 about 128
            cb, cr = (cb - 128.0) * 255.0 / 224.0 + 128.0, (cr - 128.0) * 255.0 / 224.0 + 128.0
        return float(luma.mean()), cb, cr
    rgb = frame.to_ndarray(format="rgb24", width=luma.shape[1], height=luma.shape[0])
    mean = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).reshape(-1, 3).astype(np.float64).mean(axis=0)
    return float(mean[0]), float(mean[2]), float(mean[1])


def reduce_image(image_rgb: np.ndarray) -> np.ndarray:
    """A keyframe (RGB, fitted to the video's profile size) as the profile's luma."""
    import cv2

    return cv2.cvtColor(image_rgb, cv2.COLOR_RGB2YCrCb)[:, :, 0].astype(np.float32)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images of one size: 1 alike, 0 unrelated (blind to brightness and contrast)."""
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 1e-6 else 0.0


def blend_of(frame: np.ndarray, first: np.ndarray, last: np.ndarray) -> Optional[tuple[float, float, float]]:
    """``frame`` as the best mix of the two keyframes (``alpha``: 1 all first, 0 all last), how far
    it is from that mix relative to how much they differ (~0 for a cross-fade, large for motion),
    and the share of the pixels where the keyframes differ that lie between them (most, mid-fade; few
    in a wipe or a slide, each pixel one keyframe's or the other's). None when the keyframes are
    alike (a mix of them is no transition to tell apart)."""
    difference = first - last
    spread = float(np.abs(difference).mean())
    if spread < 4.0:
        return None
    alpha = float(np.clip(((frame - last) * difference).sum() / float((difference * difference).sum()), 0.0, 1.0))
    residual = float(np.abs(frame - last - alpha * difference).mean() / spread)
    differing = np.abs(difference) > 20.0
    if not differing.any():
        return alpha, residual, 0.0
    # Where the frame stands between the two (0: the last keyframe's value, 1: the first's).
    way = (frame[differing] - last[differing]) / difference[differing]
    return alpha, residual, float(((way > 0.15) & (way < 0.85)).mean())


class ProfileObserver:
    """Sees every decoded frame of a scan and builds the shot's ``MotionProfile``."""

    def __init__(self) -> None:
        # The keyframes at the profile size (SSIM) and at the sample size, and their mean L*a*b*;
        # set before the first frame (see ``ShotObserver``), or left None: not checked against.
        self.first_key: Optional[np.ndarray] = None
        self.last_key: Optional[np.ndarray] = None
        self.first_sample: Optional[np.ndarray] = None
        self.last_sample: Optional[np.ndarray] = None
        self.key_colours: tuple[Any, Any] = (None, None)
        self.size: Optional[tuple[int, int]] = None
        self.sampled_at: tuple[int, int] = (0, 0)
        self.fps = 30.0
        self.step = 4
        self.luma: list[float] = []
        self.difference: list[float] = []
        self.ycbcr: list[tuple[float, float, float]] = []
        self.content: list[float] = []
        self.motion: list[float] = []
        self.to_first: list[float] = []
        self.to_last: list[float] = []
        self.blend: list[Optional[float]] = []
        self.alpha: list[Optional[float]] = []
        self.between: list[Optional[float]] = []
        self.first_small: Optional[np.ndarray] = None
        self.end: deque[av.VideoFrame] = deque()  # reduced once the end is known
        self._previous: Optional[np.ndarray] = None
        self._previous_sample: Optional[np.ndarray] = None
        self._flow: Any = None
        self._detector: Any = None

    def start(self, width: int, height: int, fps: float) -> None:
        import cv2
        from scenedetect.detectors import ContentDetector

        self.size, self.sampled_at, self.fps = profile_size(width, height), sample_size(width, height), fps or 30.0
        self.step = max(1, round(self.fps / SAMPLES_PER_SECOND))
        self.end = deque(maxlen=max(1, round(self.fps * END_WINDOW_SECONDS)))
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)  # type: ignore[attr-defined]
        # Luma only, every frame: a cut is one frame's change, which a sampled stream would confuse
        # with a fast camera move (PySceneDetect's AdaptiveDetector compares it with its neighbours).
        self._detector = ContentDetector(weights=ContentDetector.Components(delta_hue=0.0, delta_sat=0.0, delta_lum=1.0, delta_edges=0.0))
        if self.first_key is not None:
            self.first_sample = cv2.resize(self.first_key, self.sampled_at, interpolation=cv2.INTER_AREA)
        if self.last_key is not None:
            self.last_sample = cv2.resize(self.last_key, self.sampled_at, interpolation=cv2.INTER_AREA)

    def observe(self, index: int, frame: av.VideoFrame) -> None:
        if self.size is None:  # not started by the scan: its rate unknown
            self.start(frame.width, frame.height, 30.0)
        assert self.size is not None
        mean, grid = grid_luma(frame)
        self.luma.append(mean)
        self.content.append(_content_score(self._detector, grid[::2, ::2]))
        if self._previous is not None:
            self.difference.append(float(np.abs(grid - self._previous).mean()))
        self._previous = grid
        if index == 0:
            self.first_small = frame_luma(frame, self.size)
        self.end.append(frame)
        if index % self.step == 0:
            self._sample(frame)

    def _sample(self, frame: av.VideoFrame) -> None:
        """The transition's measures, on every ``step``-th frame, small."""
        small = frame_luma(frame, self.sampled_at)
        self.ycbcr.append(frame_colour(frame, small))
        if self._previous_sample is not None:
            self.motion.append(_flow_magnitude(self._flow, self._previous_sample, small))
        self._previous_sample = small
        if self.first_sample is not None:
            self.to_first.append(correlation(small, self.first_sample))
        if self.last_sample is not None:
            self.to_last.append(correlation(small, self.last_sample))
        if self.first_sample is not None and self.last_sample is not None:
            mix = blend_of(small, self.first_sample, self.last_sample)
            self.alpha.append(mix[0] if mix else None)
            self.blend.append(mix[1] if mix else None)
            self.between.append(mix[2] if mix else None)

    def profile(self) -> MotionProfile:
        """The curves, rounded as the sidecar keeps them (checks read this, fresh or stored alike)."""
        from prefect_wan.media.shots import similarity

        colour = lab_of_ycbcr(np.array(self.ycbcr, dtype=np.float64)) if self.ycbcr else np.zeros((0, 3))
        first_ssim = similarity(self.first_small, self.first_key) if self.first_small is not None and self.first_key is not None else None
        size = self.size or (0, 0)
        end_ssim = [similarity(frame_luma(frame, size), self.last_key) for frame in self.end] if self.last_key is not None else []
        end_colour = None
        if end_ssim:  # the colour of the end frame that best matches the last keyframe's picture
            best = self.end[int(np.argmax(end_ssim))]
            end_colour = lab_of_ycbcr(np.array([frame_colour(best, frame_luma(best, self.sampled_at))], dtype=np.float64))[0]
        self.end.clear()
        return MotionProfile(
            fps=round(self.fps, 3),
            frames=len(self.luma),
            size=self.size or (0, 0),
            sample_step=self.step,
            luma=_rounded(self.luma),
            difference=_rounded(self.difference),
            content=_rounded(self.content),
            motion=_rounded(self.motion),
            to_first=_rounded(self.to_first),
            to_last=_rounded(self.to_last),
            blend=[None if b is None else round(b, DECIMALS) for b in self.blend],
            alpha=[None if a is None else round(a, DECIMALS) for a in self.alpha],
            between=[None if b is None else round(b, DECIMALS) for b in self.between],
            colour_l=_rounded(colour[:, 0]),
            colour_a=_rounded(colour[:, 1]),
            colour_b=_rounded(colour[:, 2]),
            first_colour=[round(c, DECIMALS) for c in self.key_colours[0]] if self.key_colours[0] is not None else None,
            last_colour=[round(c, DECIMALS) for c in self.key_colours[1]] if self.key_colours[1] is not None else None,
            first_ssim=round(first_ssim, DECIMALS) if first_ssim is not None else None,
            end_ssim=_rounded(end_ssim),
            end_colour=_rounded(end_colour) if end_colour is not None else None,
        )


def _content_score(detector: Any, grid: np.ndarray) -> float:
    """PySceneDetect's content score of this frame's luma grid against the previous frame's (0 for the first)."""
    import cv2

    grey = cv2.cvtColor(np.clip(grid, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    # ContentDetector keeps the previous frame's planes; its score is the weighted mean change.
    return float(detector._calculate_frame_score(0, grey))


def _flow_magnitude(flow: Any, before: np.ndarray, after: np.ndarray) -> float:
    """The mean of the top 5 % optical-flow magnitudes from ``before`` to ``after`` (VBench's dynamic degree)."""
    import cv2

    field = flow.calc(before.astype(np.uint8), after.astype(np.uint8), None)
    magnitude = cv2.magnitude(field[..., 0], field[..., 1]).ravel()
    top = max(1, int(len(magnitude) * 0.05))
    return float(np.partition(magnitude, len(magnitude) - top)[-top:].mean())
