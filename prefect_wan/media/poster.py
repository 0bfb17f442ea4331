"""Posters: thumbnails of chosen frames of a video side by side, as one PNG a person can glance at."""

from __future__ import annotations

import io
from typing import Optional, Sequence

from PIL import Image

from prefect_wan.media.chart import with_chart

GAP = 4


def contact_sheet(thumbs: Sequence[Image.Image], chart: Optional[Image.Image] = None) -> bytes:
    """The thumbnails (of one height, from ``scan_video``) laid side by side, as PNG bytes; with the
    shot's motion profile ``chart`` below them when given."""
    if not thumbs:
        raise ValueError("no frame could be decoded for a poster")
    height = thumbs[0].height
    sheet = Image.new("RGB", (sum(t.width for t in thumbs) + GAP * (len(thumbs) - 1), height), (0, 0, 0))
    x = 0
    for thumb in thumbs:
        sheet.paste(thumb, (x, 0))
        x += thumb.width + GAP
    out = io.BytesIO()
    with_chart(sheet, chart).save(out, format="PNG")
    return out.getvalue()
