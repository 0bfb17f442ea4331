"""Helpers shared by the tests (kept out of conftest, which must be imported only once)."""

from __future__ import annotations

import io

from PIL import Image

FAKE_KEY = "sk-test-SECRET-0123456789abcdef"


def make_image(width: int, height: int, color=(200, 40, 40), fmt: str = "PNG", mode: str = "RGB") -> bytes:
    image = Image.new(mode, (width, height), color if mode == "RGB" else color + (128,))
    # A diagonal band so crossfades and codecs have something to work on.
    for x in range(0, min(width, height), 4):
        image.putpixel((x, x), (255, 255, 255) if mode == "RGB" else (255, 255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()
