"""Task queries per second the emulator sustains, and scheduler-loop latency while it renders."""

from __future__ import annotations

import asyncio
import time

import httpx

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


def main() -> None:
    with run_emulator(pending_seconds=0, running_seconds=0, submit_rps=1000) as emu:
        ids = [f"bench-{i}" for i in range(100)]
        for workers in (1, 8, 32):
            seconds = 3.0
            count = asyncio.run(hammer(emu.base_url, emu.api_key, ids, seconds, workers))
            print(f"{workers:>3} concurrent clients: {count / seconds:8.0f} queries/s")


if __name__ == "__main__":
    main()
