"""Shot checks against what Wan gets wrong: detection and false flags on a corpus this bench makes,
and what the checks cost on the archive step's path.

The corpus, in a temporary folder: wide textured pictures (made here, seeded), each with clean camera
moves across it (a pan, a zoom, a drift; the keyframes are cut from the picture where the move starts
and ends), and the same moves spoiled the way users report Wan's first-and-last-frame videos going
wrong, each at three severities (0.3 subtle, 0.6 visible, 1.0 gross): the emulator's own defects
(``prefect_wan.emulator.render``), applied to these moves. Every shot is encoded as the service
encodes (H.264, 30 fps, 5 s) and checked as the archive step checks it.

Prints, per failure, the share of shots its own check caught at each severity (goal: at least 95 %
at the visible ones), the share of clean shots flagged (goal: at most 2 %), and what the checks cost
the archive step of a 5 s 720P clip (goal: at most 10 % of it): the time they add to it (pair runs
with and without them, in turn) and their own processor time in it.

python bench/shots.py [--pictures 16] [--size 832x464]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect_wan.archive.record import FrameRecord, MotionProfile, RequestRecord  # noqa: E402
from prefect_wan.emulator.render import camera_path, spoiled  # noqa: E402
from prefect_wan.media.scan import scan_video  # noqa: E402
from prefect_wan.media.shots import FittedKeyframes, ShotObserver, ShotThresholds, assess  # noqa: E402

SECONDS, FPS = 5, 30
SEVERITIES = (0.3, 0.6, 1.0)
VISIBLE = (0.6, 1.0)
# Each failure users report, as the emulator renders it, and the checks that exist for it: a
# dissolve is a cross-fade, a wipe or an iris; a late morph over two frames is a jump the cut check
# sees, a longer one the morph check.
FAILURES: dict[str, tuple[str, ...]] = {
    "dissolve": ("dissolve",),
    "wipe": ("dissolve",),
    "iris": ("dissolve",),
    "cut": ("cut",),
    "late_morph": ("morph", "cut"),
    "flicker": ("flicker",),
    "colour_drift": ("colour",),
    "revert": ("revert",),
    "miss_last_frame": ("end_window",),
    "freeze": ("frozen",),
}
# Camera moves across the picture: (centre x, centre y, zoom) where the move starts and ends, as
# shares of the picture (zoom 1: the view is a third of the picture's width).
MOVES = {
    "pan": ((0.3, 0.5, 1.0), (0.7, 0.5, 1.0)),
    "zoom": ((0.5, 0.5, 1.0), (0.55, 0.45, 1.8)),
    "drift": ((0.35, 0.4, 1.0), (0.6, 0.6, 1.25)),
}


def picture(seed: int, width: int = 2400, height: int = 1200) -> np.ndarray:
    """A wide textured picture: smooth colour fields, shapes and fine grain (a landscape stand-in)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, size=(6, 12, 3)).astype(np.float32)
    base = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(60):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(float(c) for c in rng.uniform(0, 255, size=3))
        if rng.random() < 0.5:
            cv2.circle(base, centre, int(rng.integers(20, 160)), colour, -1)
        else:
            corner = (centre[0] + int(rng.integers(40, 300)), centre[1] + int(rng.integers(20, 200)))
            cv2.rectangle(base, centre, corner, colour, -1)
    grain = cv2.GaussianBlur(rng.normal(0, 18, size=(height, width, 3)).astype(np.float32), (0, 0), 1.5)
    return np.clip(base + grain, 0, 255).astype(np.uint8)


def view(image: np.ndarray, x: float, y: float, zoom: float, size: tuple[int, int]) -> np.ndarray:
    """What a camera centred at (x, y) (shares of the picture) with ``zoom`` sees, at ``size``."""
    height, width = image.shape[:2]
    out_w, out_h = size
    span_w = width / 3 / zoom
    span_h = span_w * out_h / out_w
    scale = out_w / span_w
    left, top = x * width - span_w / 2, y * height - span_h / 2
    matrix = np.array([[scale, 0, -left * scale], [0, scale, -top * scale]], dtype=np.float32)
    return cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def render(image: np.ndarray, move: str, defect: str | None, severity: float, size: tuple[int, int], path: Path) -> tuple[bytes, bytes]:
    """The shot (an MP4 at ``path``) and its keyframes (PNG bytes)."""
    (x0, y0, z0), (x1, y1, z1) = MOVES[move]
    start, end = view(image, x0, y0, z0, size), view(image, x1, y1, z1, size)
    where = camera_path(defect, severity)
    frames = SECONDS * FPS
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "crf": "26"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for index in range(frames):
            p = where(index / (frames - 1))
            seen = view(image, x0 + (x1 - x0) * p, y0 + (y1 - y0) * p, z0 * (z1 / z0) ** p, size).astype(np.float32)
            frame = av.VideoFrame.from_ndarray(spoiled(seen, defect, severity, index, frames, start, end), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return _png(start), _png(end)


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def checked(path: Path, keyframes: tuple[bytes, bytes], size: tuple[int, int]) -> list[str]:
    """The checks the shot fails, as the archive step checks it."""
    request = RequestRecord(
        model="bench", region="-", family="-", first_frame=FrameRecord(source="-", sha256="-", bytes=0), duration=SECONDS, predicted_size=size
    )
    shot = ShotObserver(keyframes, FittedKeyframes.of(keyframes, *size))
    scan = scan_video(path, observers=[shot])
    return assess(shot.profile(), scan.probe, request, ShotThresholds()).failed


def detection(pictures: int, size: tuple[int, int]) -> None:
    flagged_clean: list[str] = []
    clean = 0
    caught: dict[tuple[str, float], list[bool]] = {}
    others: dict[str, int] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-shots-") as folder:
        for seed in range(pictures):
            image = picture(seed)
            for move in MOVES:
                path = Path(folder) / f"{seed}-{move}.mp4"
                keyframes = render(image, move, None, 1.0, size, path)
                failed = checked(path, keyframes, size)
                clean += 1
                if failed:
                    flagged_clean.append(f"{seed}/{move}: {', '.join(failed)}")
            # Each failure on one move a picture, the moves taken in turn.
            for number, (defect, checks) in enumerate(FAILURES.items()):
                move = list(MOVES)[(seed + number) % len(MOVES)]
                for severity in SEVERITIES:
                    path = Path(folder) / f"{seed}-{defect}-{severity}.mp4"
                    keyframes = render(image, move, defect, severity, size, path)
                    failed = checked(path, keyframes, size)
                    caught.setdefault((defect, severity), []).append(any(name in failed for name in checks))
                    if severity in VISIBLE:
                        others[defect] = others.get(defect, 0) + sum(1 for name in failed if name not in checks)
    seconds = time.perf_counter() - started
    print(
        f"Corpus: {pictures} pictures, {clean} clean camera moves and {sum(len(v) for v in caught.values())} spoiled shots at {size[0]}x{size[1]} ({seconds:.0f} s)"
    )
    print()
    print("| failure (its check) | caught at 0.3 (subtle) | at 0.6 (visible) | at 1.0 (gross) | other checks failed, visible |")
    print("|---|---|---|---|---|")
    for defect, checks in FAILURES.items():
        rates = [sum(caught[(defect, s)]) / len(caught[(defect, s)]) for s in SEVERITIES]
        print(f"| {defect} ({' or '.join(checks)}) | " + " | ".join(f"{r:.0%}" for r in rates) + f" | {others[defect]} |")
    print()
    print(f"Clean moves flagged: {len(flagged_clean)} of {clean} = {len(flagged_clean) / clean:.1%} (goal: at most 2 %)")
    for line in flagged_clean:
        print(f"  {line}")


class StepObserver(ShotObserver):
    """The archive step's observer, as the bench runs it: timed (its thread's processor time), or
    measuring nothing at all (``skip``), to time the step without the checks."""

    skip = False
    seconds: list[float] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.spent = 0.0

    def start(self, width: int, height: int, fps: float) -> None:
        if not self.skip:
            started = time.thread_time()
            super().start(width, height, fps)
            self.spent += time.thread_time() - started

    def observe(self, index: int, frame: av.VideoFrame) -> None:
        if not self.skip:
            started = time.thread_time()
            super().observe(index, frame)
            self.spent += time.thread_time() - started

    def profile(self) -> MotionProfile:
        if self.skip:
            return MotionProfile(fps=30.0, frames=0, size=(0, 0), sample_step=1)
        started = time.thread_time()
        profile = super().profile()
        StepObserver.seconds.append(self.spent + time.thread_time() - started)
        return profile


def cost(runs: int = 8) -> None:
    """The checks' share of the archive step, on the emulator's 5 s 720P clips: pair runs in turn
    with the checks and without them (the observer measuring nothing), each archive step as Prefect
    timed it; the checks' cost on the path is the difference of the medians."""
    from prefect.client.orchestration import get_client

    import prefect_wan.tasks.archive as archive_task
    from prefect_wan.client.polling import PollSchedule
    from prefect_wan.emulator import run_emulator
    from prefect_wan.flows import GenerationOptions, keyframes_to_video

    examples = Path(__file__).resolve().parent.parent / "prefect_wan" / "examples"
    keyframes = ((examples / "first.png").read_bytes(), (examples / "last.png").read_bytes())

    async def archive_task_seconds(label: str) -> float:
        async with get_client() as client:
            found = await client.read_task_runs()
        return next(t.total_run_time.total_seconds() for t in found if t.name == f"archive-{label}")

    steps: dict[bool, list[float]] = {True: [], False: []}
    ahead = []
    archive_task.ShotObserver = StepObserver  # type: ignore[misc]
    timing = {"pending_seconds": 0.05, "running_seconds": 0.3, "submit_rps": 1000.0}
    with run_emulator(region="beijing", **timing) as emu, tempfile.TemporaryDirectory() as folder:
        for run in range(2 * runs + 1):
            checks = run % 2 == 0  # the first run, with the checks (their imports, warm-up), is not counted
            StepObserver.skip = not checks
            video = asyncio.run(
                keyframes_to_video(
                    str(examples / "first.png"),
                    str(examples / "last.png"),
                    prompt=f"timing {run}",
                    options=GenerationOptions(resolution="720P", seed=100 + run),
                    credentials=emu.credentials(),
                    destination=folder,
                    poll=PollSchedule(initial_delay=0.05, interval=0.1, max_interval=0.3),
                )
            )
            if run:
                steps[checks].append(asyncio.run(archive_task_seconds(video.label)))
            request = video.record.request
            assert request.predicted_size is not None
            started = time.perf_counter()
            FittedKeyframes.of(keyframes, *request.predicted_size)
            ahead.append(time.perf_counter() - started)
    step, bare = statistics.median(steps[True]), statistics.median(steps[False])
    added, cpu = step - bare, statistics.median(StepObserver.seconds[1:])  # the uncounted first run's left out
    frames = SECONDS * 30
    print(
        f"Shot checks on a {SECONDS} s 720P clip ({frames} frames), in the archive step (Prefect's times, medians of {runs} pair runs each way):\n"
        f"  the step with the checks {step * 1000:.0f} ms, without them {bare * 1000:.0f} ms: they add {added * 1000:.0f} ms = {added / step:.1%} (goal: at most 10 %)\n"
        f"  their processor time in the step: {cpu * 1000:.0f} ms = {cpu / step:.1%}, {cpu / frames * 1000:.2f} ms a frame\n"
        f"  the keyframes, fitted while the video downloads: {statistics.median(ahead) * 1000:.0f} ms more, off the path"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=16)
    parser.add_argument("--size", default="832x464", help="The corpus's video size.")
    parser.add_argument("--cost-only", action="store_true", help="Only the checks' share of the archive step.")
    arguments = parser.parse_args()
    if not arguments.cost_only:
        width, height = (int(v) for v in arguments.size.split("x"))
        detection(arguments.pictures, (width, height))
        print()
    cost()


if __name__ == "__main__":
    main()
