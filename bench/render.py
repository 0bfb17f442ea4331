"""Emulator render time per resolution tier (prints figures; not a test)."""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

from PIL import Image

from prefect_wan.client.sizing import predict_output_size
from prefect_wan.emulator.render import render_transition


def keyframe(color: tuple[int, int, int], size=(1280, 720)) -> bytes:
    image = Image.radial_gradient("L").resize(size).convert("RGB")
    image = Image.blend(image, Image.new("RGB", size, color), 0.5)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    first, last = keyframe((220, 80, 20)), keyframe((20, 80, 220))
    print("tier   size        audio  seconds  MiB")
    with tempfile.TemporaryDirectory() as tmp:
        for tier in ("480P", "720P", "1080P"):
            for audio in (False, True):
                width, height = predict_output_size(1280, 720, tier)
                path = Path(tmp) / f"{tier}-{audio}.mp4"
                started = time.perf_counter()
                render_transition(first, last, width, height, path, seconds=5, audio=audio)
                elapsed = time.perf_counter() - started
                print(f"{tier:<6} {width}x{height:<6} {str(audio):<6} {elapsed:7.2f}  {path.stat().st_size / 2**20:5.2f}")


if __name__ == "__main__":
    main()
