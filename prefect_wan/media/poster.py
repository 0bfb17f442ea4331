"""Posters: a contact sheet of chosen frames of a video, as one PNG a person can glance at."""

from __future__ import annotations

from pathlib import Path

import av
from PIL import Image

THUMB_HEIGHT = 180
GAP = 4


def frame_indices_for(frames: int) -> list[int]:
    """First, middle and last frame of a video."""
    return sorted({0, frames // 2, max(frames - 1, 0)})


def contact_sheet(video: Path, out: Path, indices: list[int]) -> Path:
    """Decode the frames at ``indices`` and lay them side by side in ``out`` (PNG)."""
    wanted = set(indices)
    thumbs: dict[int, Image.Image] = {}
    with av.open(str(video)) as container:
        for index, frame in enumerate(container.decode(container.streams.video[0])):
            if index in wanted:
                image = frame.to_image()
                width = max(1, round(image.width * THUMB_HEIGHT / image.height))
                thumbs[index] = image.resize((width, THUMB_HEIGHT))
            if index >= max(wanted):
                break
    if not thumbs:
        raise ValueError(f"{video.name}: no frame could be decoded for a poster")
    ordered = [thumbs[i] for i in sorted(thumbs)]
    sheet = Image.new("RGB", (sum(t.width for t in ordered) + GAP * (len(ordered) - 1), THUMB_HEIGHT), (0, 0, 0))
    x = 0
    for thumb in ordered:
        sheet.paste(thumb, (x, 0))
        x += thumb.width + GAP
    sheet.save(out, format="PNG")
    return out
