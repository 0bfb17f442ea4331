"""Spacing task submissions to the account's documented rate, across every client in a process.

Each caller reserves the next free slot under a thread lock and sleeps until it, so pacing works
across event loops and threads and never holds a lock while waiting.
"""

from __future__ import annotations

import asyncio
import threading
import time

_lock = threading.Lock()
_next_slot: dict[tuple[str, str], float] = {}


async def wait_for_submit_slot(key: tuple[str, str], interval: float) -> None:
    if interval <= 0:
        return
    with _lock:
        now = time.monotonic()
        slot = max(now, _next_slot.get(key, now))
        _next_slot[key] = slot + interval
    if slot > now:
        await asyncio.sleep(slot - now)
