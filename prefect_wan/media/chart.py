"""A shot's motion profile as a small chart a person reads at a glance, drawn once at archive time
with Pillow: how close each frame is to each keyframe, how much it moves, its brightness, how much
it is the two keyframes mixed in place (a dissolve), and a
red mark, named, wherever a check failed."""

from __future__ import annotations

from typing import Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

from prefect_wan.archive.record import MotionProfile, ShotChecks

HEIGHT = 170
_MARGIN_X, _TOP, _BOTTOM = 8, 30, 18
_BACKGROUND, _GRID, _TEXT, _FAILED = (250, 250, 250), (222, 222, 222), (40, 40, 40), (214, 39, 40)
# name, colour, what it shows
_CURVES = (
    ("to first keyframe", (31, 119, 180)),
    ("to last keyframe", (255, 127, 14)),
    ("motion", (44, 160, 44)),
    ("brightness", (127, 127, 127)),
    ("keyframes mixed", (148, 103, 189)),
)
# The in-place mix of a cross-fade at its middle, drawn at the chart's top.
_MIXED_FULL = 0.3


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _series(profile: MotionProfile) -> list[tuple[str, tuple[int, int, int], list[tuple[float, float]]]]:
    """Each curve as (frame, 0..1) points."""
    series: list[tuple[str, tuple[int, int, int], list[tuple[float, float]]]] = []
    frames = max(profile.frames - 1, 1)
    step = profile.sample_step
    if profile.to_first:
        series.append((*_CURVES[0], [(float(i * step), max(0.0, v)) for i, v in enumerate(profile.to_first)]))
    if profile.to_last:
        series.append((*_CURVES[1], [(float(i * step), max(0.0, v)) for i, v in enumerate(profile.to_last)]))
    if profile.motion:
        top = max(max(profile.motion), 0.1)
        series.append((*_CURVES[2], [(float(min(frames, (i + 1) * step)), v / top) for i, v in enumerate(profile.motion)]))
    if profile.luma:
        series.append((*_CURVES[3], [(float(i), v / 255.0) for i, v in enumerate(profile.luma)]))
    if any(m is not None for m in profile.mix):
        mixed = [(float(i * step), min(1.0, max(0.0, m) / _MIXED_FULL)) for i, m in enumerate(profile.mix) if m is not None]
        series.append((*_CURVES[4], mixed))
    return series


def profile_chart(profile: MotionProfile, checks: Optional[ShotChecks], width: int = 640) -> Image.Image:
    """The chart, ``width`` pixels wide."""
    image = Image.new("RGB", (width, HEIGHT), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    small, label = _font(11), _font(12)
    left, right, top, bottom = _MARGIN_X, width - _MARGIN_X, _TOP, HEIGHT - _BOTTOM
    frames = max(profile.frames - 1, 1)

    def x_of(frame: float) -> float:
        return left + (right - left) * frame / frames

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * min(max(value, 0.0), 1.0)

    for fraction in (0.0, 0.5, 1.0):
        draw.line([(left, y_of(fraction)), (right, y_of(fraction))], fill=_GRID)
    seconds = profile.frames / (profile.fps or 30.0)
    for second in range(int(seconds) + 1):
        x = x_of(second * (profile.fps or 30.0))
        draw.line([(x, bottom), (x, bottom + 3)], fill=_TEXT)
        draw.text((x + 2, bottom + 2), f"{second}s", fill=_TEXT, font=small)
    failed = [item for item in (checks.items if checks else []) if not item.passed]
    for item in failed:
        for frame in item.frames or []:
            draw.line([(x_of(frame), top), (x_of(frame), bottom)], fill=_FAILED, width=2)
        if item.frames:
            draw.text((min(x_of(item.frames[0]) + 3, right - 70), top + 2), item.name, fill=_FAILED, font=small)
    for _name, colour, points in _series(profile):
        if len(points) > 1:
            draw.line([(x_of(f), y_of(v)) for f, v in points], fill=colour, width=2)
    # The title says the verdict in words; the legend names each curve in its colour.
    verdict = "every check passed" if checks is None or checks.passed else "failed: " + ", ".join(item.name for item in failed)
    draw.text((left, 4), f"motion profile: {verdict}", fill=_FAILED if failed else _TEXT, font=label)
    x = left + 8 + draw.textlength(f"motion profile: {verdict}", font=label) + 12
    for name, colour, _points in _series(profile):
        if x > right - 60:
            break
        draw.line([(x, 11), (x + 14, 11)], fill=colour, width=3)
        draw.text((x + 18, 5), name, fill=_TEXT, font=small)
        x += 26 + draw.textlength(name, font=small)
    return image


def with_chart(sheet: Image.Image, chart: Optional[Image.Image]) -> Image.Image:
    """The poster's frames with the chart below them, one picture."""
    if chart is None:
        return sheet
    if chart.width != sheet.width:
        chart = chart.resize((sheet.width, round(chart.height * sheet.width / chart.width)))
    both = Image.new("RGB", (sheet.width, sheet.height + chart.height), _BACKGROUND)
    both.paste(sheet, (0, 0))
    both.paste(chart, (0, sheet.height))
    return both


def chart_for(thumbs: Sequence[Image.Image], profile: Optional[MotionProfile], checks: Optional[ShotChecks]) -> Optional[Image.Image]:
    """The chart at the width the poster's frames take (None without a profile)."""
    if profile is None or not thumbs or profile.frames < 2:
        return None
    from prefect_wan.media.poster import GAP

    return profile_chart(profile, checks, width=max(480, sum(t.width for t in thumbs) + GAP * (len(thumbs) - 1)))
