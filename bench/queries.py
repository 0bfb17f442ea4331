"""Task queries per second the emulator sustains, and scheduler-loop latency while it renders."""

from __future__ import annotations

import asyncio
import io
import time

import httpx
from PIL import Image

from prefect_wan.emulator import run_emulator


async def hammer(base_url: str, key: str, task_ids: list[str], seconds: float, workers: int) -> int:
    done = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, limits=limits) as http:

        async def worker(index: int) -> None:
            nonlocal done
            while time.monotonic() < stop:
                response = await http.get(f"/api/v1/tasks/{task_ids[index % len(task_ids)]}")
                response.raise_for_status()
                done += 1

        await asyncio.gather(*(worker(i) for i in range(workers)))
    return done


async def latencies(base_url: str, key: str, seconds: float) -> list[float]:
    found = []
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}) as http:
        while time.monotonic() < stop:
            started = time.perf_counter()
            (await http.get("/api/v1/tasks/probe")).raise_for_status()
            found.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
    return sorted(found)


def describe(samples: list[float]) -> str:
    pick = lambda q: samples[min(int(q * len(samples)), len(samples) - 1)] * 1000  # noqa: E731
    return f"p50 {pick(0.5):5.1f} ms  p99 {pick(0.99):5.1f} ms  max {samples[-1] * 1000:6.1f} ms  (n={len(samples)})"


async def during_renders(emu) -> list[float]:
    """Query latency while two 1080P videos render (renders run in worker threads)."""
    from prefect_wan.client import KeyframeVideoRequest

    def frame(shade: int) -> bytes:
        buffer = io.BytesIO()
        Image.radial_gradient("L").resize((1920, 1080)).point(lambda v: (v + shade) % 256).convert("RGB").save(buffer, format="PNG")
        return buffer.getvalue()

    async with emu.credentials(min_submit_interval=0).get_client() as client:
        for shade in (0, 128):  # different frames: two real renders, not one cached
            await client.submit(KeyframeVideoRequest(first_frame=frame(shade), last_frame=frame(shade + 64), resolution="1080P"))
    await asyncio.sleep(0.2)  # both are RUNNING and rendering now
    return await latencies(emu.base_url, emu.api_key, 3.0)


def main() -> None:
    with run_emulator(pending_seconds=0, running_seconds=0, submit_rps=1000) as emu:
        ids = [f"bench-{i}" for i in range(100)]
        for workers in (1, 8, 32):
            seconds = 3.0
            count = asyncio.run(hammer(emu.base_url, emu.api_key, ids, seconds, workers))
            print(f"{workers:>3} concurrent clients: {count / seconds:8.0f} queries/s")
        print(f"query latency, idle:             {describe(asyncio.run(latencies(emu.base_url, emu.api_key, 2.0)))}")
        print(f"query latency, two 1080P renders: {describe(asyncio.run(during_renders(emu)))}")
        print(f"renders started: {emu.counters().renders}")


if __name__ == "__main__":
    main()
