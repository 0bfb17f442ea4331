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
- ``to_first`` / ``to_last``: correlation of each frame's shapes with each keyframe's (a band of
  detail: broad colour fields left out, which stay alike while a camera moves) — reverts, late morphs;
- ``mix``: how much of each frame's fine detail only the two keyframes together explain, in place
  (where each keyframe has it), as a cross-fade's, a wipe's or an iris's frames are — dissolves;
- ``colour``: mean L*a*b* — colour casts;
- ``end_mix``: how much of each end-window frame's fine detail only the last keyframe and the sample
  half a second earlier explain together, in place, as a morph's frames are — late morphs;
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
# A late morph is read on the end window against the sample this long before the shot's end.
ARRIVAL_SECONDS = 0.5
# The dissolve's and the morph's measure read fine detail at the profile size (the image less its
# blur at this sigma, in pixels), fitted to the keyframes' in squares of MIX_BLOCK pixels: calibrated
# on bench/shots.py's corpus (finer or smaller read a camera move's texture as a mix more often).
DETAIL_SIGMA = 2.0
MIX_BLOCK = 16
# The likeness to each keyframe reads this band of the samples (sigmas in pixels of the sample).
SHAPE_SIGMAS = (1.0, 3.0)
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


def grid_luma(frame: av.VideoFrame) -> np.ndarray:
    """The frame's luma sampled at the centre of each grid cell, as decoded (uint8; limited range
    unless the frame is full range): kept per frame, measured for the whole shot at once."""
    if frame.format.name not in _PLANAR:
        return frame.to_ndarray(format="gray", width=GRID[0], height=GRID[1])
    columns, rows = GRID
    step_y, step_x = max(1, frame.height // rows), max(1, frame.width // columns)
    return np.ascontiguousarray(_plane_view(frame, 0)[step_y // 2 :: step_y, step_x // 2 :: step_x][:rows, :columns])


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
        cb, cr = (float(_plane_view(frame, index)[::8, ::8].mean()) for index in (1, 2))
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


def detail(image: np.ndarray) -> np.ndarray:
    """The fine detail of a small luma image: the image less its Gaussian blur (OpenCV)."""
    import cv2

    image = image.astype(np.float32)
    return image - cv2.GaussianBlur(image, (0, 0), DETAIL_SIGMA)


def shapes(image: np.ndarray) -> np.ndarray:
    """The shapes of a small luma image: a band of its detail (a difference of two Gaussian blurs,
    OpenCV), so a likeness reads where things are, not broad colour fields a moving camera keeps."""
    import cv2

    image = image.astype(np.float32)
    return cv2.GaussianBlur(image, (0, 0), SHAPE_SIGMAS[0]) - cv2.GaussianBlur(image, (0, 0), SHAPE_SIGMAS[1])


def _blocks(image: np.ndarray) -> np.ndarray:
    """The image cut into ``MIX_BLOCK`` squares, one row of pixels a square."""
    rows, columns = image.shape[0] // MIX_BLOCK, image.shape[1] // MIX_BLOCK
    cut = image[: rows * MIX_BLOCK, : columns * MIX_BLOCK]
    return cut.reshape(rows, MIX_BLOCK, columns, MIX_BLOCK).swapaxes(1, 2).reshape(rows * columns, MIX_BLOCK * MIX_BLOCK)


def in_place_mix(frame: np.ndarray, first: np.ndarray, last: np.ndarray) -> Optional[float]:
    """How much of a frame's fine detail the two keyframes explain only together, in place: the
    share a best mix of both explains, square by square, less the share the better one alone does.

    A cross-fade, a wipe or an iris shows both keyframes' detail where each keyframe has it, so the
    mix explains much more than either (0.3 mid-fade); a camera move shifts the detail, which then
    matches neither in place, and a frame that is one keyframe is explained by it alone (both ~0).
    The arguments are ``detail`` images of one size; None when the keyframes' detail is alike almost
    everywhere (no mix to tell apart)."""
    y, f, g = _blocks(frame), _blocks(first), _blocks(last)
    ff, gg, fg = (f * f).sum(1), (g * g).sum(1), (f * g).sum(1)
    yf, yg, yy = (y * f).sum(1), (y * g).sum(1), (y * y).sum(1)
    determinant = ff * gg - fg * fg
    # Squares where both keyframes have detail and it differs (not one the other's multiple).
    differ = (determinant > 0.25 * ff * gg) & (ff > 1.0) & (gg > 1.0)
    energy = float(yy[differ].sum())
    if differ.sum() < 0.2 * len(differ) or energy <= 0.0:
        return None
    safe = np.where(differ, determinant, 1.0)
    a, b = (yf * gg - yg * fg) / safe, (yg * ff - yf * fg) / safe
    both = float((a * yf + b * yg)[differ].sum()) / energy
    alone = max(float((yf * yf / np.maximum(ff, 1e-6))[differ].sum()), float((yg * yg / np.maximum(gg, 1e-6))[differ].sum())) / energy
    return both - alone


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
        self.grids: list[np.ndarray] = []  # every frame's luma grid, measured at the end in one go
        self.full_range = True
        self.ycbcr: list[tuple[float, float, float]] = []
        self.content: list[float] = []
        self.motion: list[float] = []
        self.to_first: list[float] = []
        self.to_last: list[float] = []
        self.mix: list[Optional[float]] = []
        self.first_detail: Optional[np.ndarray] = None
        self.last_detail: Optional[np.ndarray] = None
        self.first_shapes: Optional[np.ndarray] = None
        self.last_shapes: Optional[np.ndarray] = None
        self.first_small: Optional[np.ndarray] = None
        self.end: deque[av.VideoFrame] = deque()  # reduced once the end is known
        self.recent: deque[tuple[int, np.ndarray]] = deque()  # the last samples' detail, by sample number
        self._previous_sample: Optional[np.ndarray] = None
        self._flow: Any = None
        self._detector: Any = None

    def start(self, width: int, height: int, fps: float) -> None:
        import cv2
        from scenedetect.detectors import ContentDetector

        self.size, self.sampled_at, self.fps = profile_size(width, height), sample_size(width, height), fps or 30.0
        self.step = max(1, round(self.fps / SAMPLES_PER_SECOND))
        self.end = deque(maxlen=max(1, round(self.fps * END_WINDOW_SECONDS)))
        self.recent = deque(maxlen=int(SAMPLES_PER_SECOND * (ARRIVAL_SECONDS + END_WINDOW_SECONDS)) + 2)
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)  # type: ignore[attr-defined]
        # Luma only, every frame: a cut is one frame's change, which a sampled stream would confuse
        # with a fast camera move (PySceneDetect's AdaptiveDetector compares it with its neighbours).
        self._detector = ContentDetector(weights=ContentDetector.Components(delta_hue=0.0, delta_sat=0.0, delta_lum=1.0, delta_edges=0.0))
        if self.first_key is not None:
            self.first_sample = cv2.resize(self.first_key, self.sampled_at, interpolation=cv2.INTER_AREA)
            self.first_shapes = shapes(self.first_sample)
        if self.last_key is not None:
            self.last_sample = cv2.resize(self.last_key, self.sampled_at, interpolation=cv2.INTER_AREA)
            self.last_shapes = shapes(self.last_sample)
        if self.first_key is not None and self.last_key is not None:
            # At the profile size: more squares to read a mix on than the samples' size gives.
            self.first_detail, self.last_detail = detail(self.first_key), detail(self.last_key)

    def observe(self, index: int, frame: av.VideoFrame) -> None:
        if self.size is None:  # not started by the scan: its rate unknown
            self.start(frame.width, frame.height, 30.0)
        assert self.size is not None
        grid = grid_luma(frame)
        if index == 0:
            self.full_range = frame.format.name not in _PLANAR or _full_range(frame)
            self.first_small = frame_luma(frame, self.size)
        self.grids.append(grid)
        self.content.append(_content_score(self._detector, grid[::2, ::2]))
        self.end.append(frame)
        if index % self.step == 0:
            self._sample(frame)

    def _sample(self, frame: av.VideoFrame) -> None:
        """The transition's measures, on every ``step``-th frame, small."""
        # Straight from the plane at each size: an area resize of the larger would blur away the fine
        # lines the flow follows on flat pictures.
        assert self.size is not None  # started before the first frame
        reduced, small = frame_luma(frame, self.size), frame_luma(frame, self.sampled_at)
        self.ycbcr.append(frame_colour(frame, small))
        if self._previous_sample is not None:
            self.motion.append(_flow_magnitude(self._flow, self._previous_sample, small))
        self._previous_sample = small
        if self.first_shapes is not None or self.last_shapes is not None:
            seen = shapes(small)
            if self.first_shapes is not None:
                self.to_first.append(correlation(seen, self.first_shapes))
            if self.last_shapes is not None:
                self.to_last.append(correlation(seen, self.last_shapes))
        if self.first_detail is not None and self.last_detail is not None:
            fine = detail(reduced)
            self.mix.append(in_place_mix(fine, self.first_detail, self.last_detail))
            self.recent.append((len(self.mix) - 1, fine))

    def profile(self) -> MotionProfile:
        """The curves, rounded as the sidecar keeps them (checks read this, fresh or stored alike)."""
        from prefect_wan.media.shots import similarity

        colour = lab_of_ycbcr(np.array(self.ycbcr, dtype=np.float64)) if self.ycbcr else np.zeros((0, 3))
        # Every frame's brightness and change, from its grid, in one go (full range: limited range
        # puts black at 16 and white at 235, so its changes are 219/255 of the same change).
        scale = 1.0 if self.full_range else 255.0 / 219.0
        grids = np.stack(self.grids).astype(np.float32) if self.grids else np.zeros((0, GRID[1], GRID[0]), np.float32)
        luma = np.clip((grids.mean(axis=(1, 2)) - (0.0 if self.full_range else 16.0)) * scale, 0.0, 255.0)
        difference = np.abs(np.diff(grids, axis=0)).mean(axis=(1, 2)) * scale
        content = np.array(self.content) * scale
        self.grids.clear()
        first_ssim = similarity(self.first_small, self.first_key) if self.first_small is not None and self.first_key is not None else None
        size = self.size or (0, 0)
        end_small = [frame_luma(frame, size) for frame in self.end] if self.last_key is not None else []  # each end frame reduced once
        end_ssim = [similarity(small, self.last_key) for small in end_small] if self.last_key is not None else []
        end_colour = None
        if end_ssim:  # the colour of the end frame that best matches the last keyframe's picture
            best = self.end[int(np.argmax(end_ssim))]
            end_colour = lab_of_ycbcr(np.array([frame_colour(best, frame_luma(best, self.sampled_at))], dtype=np.float64))[0]
        # The sample half a second before the end, and the end window read against it and the last keyframe.
        frames = len(luma)
        reference = next((n for n, _ in reversed(self.recent) if n * self.step <= frames - 1 - ARRIVAL_SECONDS * self.fps), None)
        end_mix: list[Optional[float]] = []
        if reference is not None and self.last_detail is not None:
            earlier = next(fine for n, fine in self.recent if n == reference)
            end_mix = [in_place_mix(detail(small), earlier, self.last_detail) for small in end_small]
        self.end.clear()
        self.recent.clear()
        return MotionProfile(
            fps=round(self.fps, 3),
            frames=len(luma),
            size=self.size or (0, 0),
            sample_step=self.step,
            luma=_rounded(luma),
            difference=_rounded(difference),
            content=_rounded(content),
            motion=_rounded(self.motion),
            to_first=_rounded(self.to_first),
            to_last=_rounded(self.to_last),
            mix=[None if m is None else round(m, DECIMALS) for m in self.mix],
            colour_l=_rounded(colour[:, 0]),
            colour_a=_rounded(colour[:, 1]),
            colour_b=_rounded(colour[:, 2]),
            first_colour=[round(c, DECIMALS) for c in self.key_colours[0]] if self.key_colours[0] is not None else None,
            last_colour=[round(c, DECIMALS) for c in self.key_colours[1]] if self.key_colours[1] is not None else None,
            first_ssim=round(first_ssim, DECIMALS) if first_ssim is not None else None,
            end_ssim=_rounded(end_ssim),
            end_colour=_rounded(end_colour) if end_colour is not None else None,
            end_reference=reference if end_mix else None,
            end_mix=[None if m is None else round(m, DECIMALS) for m in end_mix],
        )


def _content_score(detector: Any, grid: np.ndarray) -> float:
    """PySceneDetect's content score of this frame's luma grid against the previous frame's (0 for the first)."""
    import cv2

    grey = cv2.cvtColor(grid, cv2.COLOR_GRAY2BGR)
    # ContentDetector keeps the previous frame's planes; its score is the weighted mean change.
    return float(detector._calculate_frame_score(0, grey))


def _flow_magnitude(flow: Any, before: np.ndarray, after: np.ndarray) -> float:
    """The mean of the top 5 % optical-flow magnitudes from ``before`` to ``after`` (VBench's dynamic degree)."""
    import cv2

    field = flow.calc(before.astype(np.uint8), after.astype(np.uint8), None)
    magnitude = cv2.magnitude(field[..., 0], field[..., 1]).ravel()
    top = max(1, int(len(magnitude) * 0.05))
    return float(np.partition(magnitude, len(magnitude) - top)[-top:].mean())
