"""Spacing task submissions to the account's documented rate, across every client in a process.

Each caller reserves the next free slot under a thread lock and sleeps until it, so pacing works
across event loops and threads and never holds a lock while waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import AsyncIterator, Optional

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


class _Turn:
    """A reentrant turn per event loop: one create call of a model and host outstanding at a time."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.owner: Optional[asyncio.Task] = None


_turns: dict[tuple[int, tuple[str, str]], _Turn] = {}


@contextlib.asynccontextmanager
async def create_turn(key: tuple[str, str]) -> AsyncIterator[None]:
    """Hold the turn to create tasks of ``key`` (host, model) in this event loop.

    With creates one at a time, a create whose answer is lost is the only one of this process
    without an outcome, so reconciling it with the task list can single out its task. Free at the
    documented 1-2 creates per second.
    """
    loop = asyncio.get_running_loop()
    turn = _turns.setdefault((id(loop), key), _Turn())
    current = asyncio.current_task()
    if turn.owner is current:
        yield
        return
    async with turn.lock:
        turn.owner = current
        try:
            yield
        finally:
            turn.owner = None
