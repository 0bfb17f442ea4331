"""Stitching 10 clips of 5 s at 720P: remux against re-encode, time and size.

python bench/stitch.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from prefect_wan.emulator.render import render_transition
from prefect_wan.media import stitch

EXAMPLES = Path(__file__).resolve().parent.parent / "prefect_wan" / "examples"


def main(count: int = 10) -> None:
    first, last = (EXAMPLES / "first.png").read_bytes(), (EXAMPLES / "last.png").read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        clips = []
        for index in range(count):
            path = Path(folder) / f"clip{index}.mp4"
            ends = (first, last) if index % 2 == 0 else (last, first)
            render_transition(*ends, 1280, 720, path, seconds=5, audio=True)
            clips.append(path)
        inputs = sum(p.stat().st_size for p in clips)
        print(f"stitch: {count} clips of 5 s at 1280x720 with audio, {inputs / 2**20:.1f} MiB in all")
        for label, kwargs in (("remux", {}), ("re-encode", {"reencode": True})):
            out = Path(folder) / f"{label}.mp4"
            started = time.perf_counter()
            result = stitch(clips, out, drop_boundary=True, **kwargs)
            elapsed = time.perf_counter() - started
            print(
                f"  {label:9} {elapsed:6.2f} s  {out.stat().st_size / 2**20:6.1f} MiB  {result.frames} frames, {result.duration_seconds:.2f} s ({result.method})"
            )


if __name__ == "__main__":
    main()
