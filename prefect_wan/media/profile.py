"""A shot's motion profile, measured from the scan's one decode: the per-frame curves every shot
check reads, kept small in the sidecar so any threshold can be applied again later without
downloading or decoding the video again.

Every frame is reduced once, straight from the decoder's planes, to a grid of luma samples; every
sixth or so (5 a second) also to two small luma images, each straight from the plane, and its
mean colour. From those come each curve (per frame: ``luma``, ``difference``; per sample: the rest):

- ``luma``: mean luma (0-255, full range) — black frames, flicker;
- ``difference``: mean absolute difference to the previous frame (these two on a grid of luma
  samples, every frame) — frozen stretches, and cuts, read against the frames around them as
  PySceneDetect's ``AdaptiveDetector`` reads them. It is PySceneDetect's content score with its luma
  weight alone (its ``ContentDetector``'s mean absolute change of HSV value, which on luma is the
  luma's), taken for the whole shot at once: the detector, called a frame at a time, also converts
  to HSV and scores hue and saturation it then weighs by zero (a quarter of the checks' time, when
  it did); ``tests/test_shots.py`` holds the two equal;
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
# few microseconds a 720P frame, where a resize of the whole plane costs ten times that (64 x 36
# would take half that, and its mean luma pumps on a clean pan over bold shapes: false flicker).
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


class Likeness:
    """Pearson correlation with one reference image, its side worked out once for every frame read against it."""

    def __init__(self, reference: np.ndarray) -> None:
        self.centred = reference - reference.mean()
        self.energy = float((self.centred * self.centred).sum())

    def __call__(self, image: np.ndarray) -> float:
        centred = image - image.mean()
        norm = float(np.sqrt((centred * centred).sum() * self.energy))
        return float((centred * self.centred).sum() / norm) if norm > 1e-6 else 0.0


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


class InPlaceMix:
    """How much of a frame's fine detail two pictures explain only together, in place: the share a
    best mix of both explains, square by square, less the share the better one alone does.

    A cross-fade, a wipe or an iris shows both keyframes' detail where each keyframe has it, so the
    mix explains much more than either (0.3 mid-fade); a camera move shifts the detail, which then
    matches neither in place, and a frame that is one keyframe is explained by it alone (both ~0).
    Made of two ``detail`` images (their side of the sums worked out once for every frame read
    against them) and called with a frame's ``detail`` image of the same size; None when the two are
    alike almost everywhere (no mix to tell apart)."""

    def __init__(self, first: np.ndarray, last: np.ndarray) -> None:
        self.f, self.g = _blocks(first), _blocks(last)
        ff, gg, fg = (self.f * self.f).sum(1), (self.g * self.g).sum(1), (self.f * self.g).sum(1)
        determinant = ff * gg - fg * fg
        # Squares where both pictures have detail and it differs (not one the other's multiple).
        self.differ = (determinant > 0.25 * ff * gg) & (ff > 1.0) & (gg > 1.0)
        self.enough = bool(self.differ.sum() >= 0.2 * len(self.differ))
        safe = np.where(self.differ, determinant, 1.0)
        self.ff, self.gg, self.fg, self.safe = ff, gg, fg, safe
        self.alone_f, self.alone_g = 1.0 / np.maximum(ff, 1e-6), 1.0 / np.maximum(gg, 1e-6)

    def __call__(self, frame: np.ndarray) -> Optional[float]:
        if not self.enough:
            return None
        y = _blocks(frame)
        yf, yg, yy = (y * self.f).sum(1), (y * self.g).sum(1), (y * y).sum(1)
        energy = float(yy[self.differ].sum())
        if energy <= 0.0:
            return None
        a, b = (yf * self.gg - yg * self.fg) / self.safe, (yg * self.ff - yf * self.fg) / self.safe
        both = float((a * yf + b * yg)[self.differ].sum()) / energy
        alone = max(float((yf * yf * self.alone_f)[self.differ].sum()), float((yg * yg * self.alone_g)[self.differ].sum())) / energy
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
        self.motion: list[float] = []
        self.to_first: list[float] = []
        self.to_last: list[float] = []
        self.mix: list[Optional[float]] = []
        self.last_detail: Optional[np.ndarray] = None
        self.like_first: Optional[Likeness] = None
        self.like_last: Optional[Likeness] = None
        self.keyframes_mixed: Optional[InPlaceMix] = None
        self.first_small: Optional[np.ndarray] = None
        self.end: deque[av.VideoFrame] = deque()  # reduced once the end is known
        self.recent: deque[tuple[int, np.ndarray]] = deque()  # the last samples' detail, by sample number
        self._previous_sample: Optional[np.ndarray] = None
        self._flow: Any = None

    def start(self, width: int, height: int, fps: float) -> None:
        import cv2

        self.size, self.sampled_at, self.fps = profile_size(width, height), sample_size(width, height), fps or 30.0
        self.step = max(1, round(self.fps / SAMPLES_PER_SECOND))
        self.end = deque(maxlen=max(1, round(self.fps * END_WINDOW_SECONDS)))
        self.recent = deque(maxlen=int(SAMPLES_PER_SECOND * (ARRIVAL_SECONDS + END_WINDOW_SECONDS)) + 2)
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)  # type: ignore[attr-defined]
        if self.first_key is not None:
            self.first_sample = cv2.resize(self.first_key, self.sampled_at, interpolation=cv2.INTER_AREA)
            self.like_first = Likeness(shapes(self.first_sample))
        if self.last_key is not None:
            self.last_sample = cv2.resize(self.last_key, self.sampled_at, interpolation=cv2.INTER_AREA)
            self.like_last = Likeness(shapes(self.last_sample))
        if self.first_key is not None and self.last_key is not None:
            # At the profile size: more squares to read a mix on than the samples' size gives.
            self.last_detail = detail(self.last_key)
            self.keyframes_mixed = InPlaceMix(detail(self.first_key), self.last_detail)

    def observe(self, index: int, frame: av.VideoFrame) -> None:
        if self.size is None:  # not started by the scan: its rate unknown
            self.start(frame.width, frame.height, 30.0)
        assert self.size is not None
        grid = grid_luma(frame)
        if index == 0:
            self.full_range = frame.format.name not in _PLANAR or _full_range(frame)
            self.first_small = frame_luma(frame, self.size)
        self.grids.append(grid)
        self.end.append(frame)
        if index % self.step == 0:
            self._sample(frame)

    def _sample(self, frame: av.VideoFrame) -> None:
        """The transition's measures, on every ``step``-th frame, small."""
        assert self.size is not None  # started before the first frame
        # Straight from the plane at each size: the smaller made from the larger loses the fine lines
        # the flow follows on flat pictures (a storyboard's drafts then read as still).
        reduced, small = frame_luma(frame, self.size), frame_luma(frame, self.sampled_at)
        self.ycbcr.append(frame_colour(frame, small))
        if self._previous_sample is not None:
            self.motion.append(_flow_magnitude(self._flow, self._previous_sample, small))
        self._previous_sample = small
        if self.like_first is not None or self.like_last is not None:
            seen = shapes(small)
            if self.like_first is not None:
                self.to_first.append(self.like_first(seen))
            if self.like_last is not None:
                self.to_last.append(self.like_last(seen))
        if self.keyframes_mixed is not None:
            fine = detail(reduced)
            self.mix.append(self.keyframes_mixed(fine))
            self.recent.append((len(self.mix) - 1, fine))

    def profile(self) -> MotionProfile:
        """The curves, rounded as the sidecar keeps them (checks read this, fresh or stored alike)."""
        from prefect_wan.media.shots import similarity

        colour = lab_of_ycbcr(np.array(self.ycbcr, dtype=np.float64)) if self.ycbcr else np.zeros((0, 3))
        # Every frame's brightness and change, from its grid, in one go (full range: limited range
        # puts black at 16 and white at 235, so its changes are 219/255 of the same change).
        scale = 1.0 if self.full_range else 255.0 / 219.0
        luma, difference = _changes(self.grids, scale, 0.0 if self.full_range else 16.0)
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
            arriving = InPlaceMix(earlier, self.last_detail)
            end_mix = [arriving(detail(small)) for small in end_small]
        self.end.clear()
        self.recent.clear()
        return MotionProfile(
            fps=round(self.fps, 3),
            frames=len(luma),
            size=self.size or (0, 0),
            sample_step=self.step,
            luma=_rounded(luma),
            difference=_rounded(difference),
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


def _changes(grids: list[np.ndarray], scale: float, black: float) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's mean luma, and each frame's mean absolute change from the one before, from the
    stacked grids at once."""
    import cv2

    if not grids:
        return np.zeros(0), np.zeros(0)
    flat = np.stack(grids).reshape(len(grids), -1)
    luma = np.clip((flat.mean(axis=1) - black) * scale, 0.0, 255.0)
    difference = cv2.absdiff(flat[1:], flat[:-1]).mean(axis=1) * scale if len(grids) > 1 else np.zeros(0)
    return luma, difference


def _flow_magnitude(flow: Any, before: np.ndarray, after: np.ndarray) -> float:
    """The mean of the top 5 % optical-flow magnitudes from ``before`` to ``after`` (VBench's dynamic degree)."""
    import cv2

    field = flow.calc(before.astype(np.uint8), after.astype(np.uint8), None)
    magnitude = cv2.magnitude(field[..., 0], field[..., 1]).ravel()
    top = max(1, int(len(magnitude) * 0.05))
    return float(np.partition(magnitude, len(magnitude) - top)[-top:].mean())
