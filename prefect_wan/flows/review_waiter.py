"""Whether the process of a paused run still waits for its answer.

A paused run keeps its process (a suspended one ends it by design). When that process dies, Prefect
still shows the run Paused, and resuming it would leave it Running for ever with the person's answer
lost. The waiting process says who it is (host, pid) and beats a heartbeat into the run's input;
a reviewer on the same host asks the operating system, any other looks at the heartbeat's age.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Optional
from uuid import UUID

from prefect.input.actions import acreate_flow_run_input, adelete_flow_run_input, aread_flow_run_input

from prefect_wan.flows.review_form import Waiter
from prefect_wan.ledger.liveness import host_tag, process_alive, process_started

HEARTBEAT_SECONDS = 10.0
# Six beats missed: a process stopped in a debugger or a slow server is not taken for dead.
STALE_AFTER = timedelta(seconds=60)


def this_process() -> Waiter:
    pid = os.getpid()
    return Waiter(host=host_tag(), pid=pid, started=process_started(pid))


@contextlib.asynccontextmanager
async def heartbeat(key: str) -> AsyncIterator[None]:
    """Beat ``key`` (this run's input: the time, now) while the body waits."""

    async def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a beat missed is a beat late, not a failure
                await adelete_flow_run_input(key)
            with contextlib.suppress(Exception):
                await acreate_flow_run_input(key, {"at": datetime.now(timezone.utc).isoformat()})
            await asyncio.sleep(HEARTBEAT_SECONDS)

    beating = asyncio.ensure_future(beat())
    try:
        yield
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


async def gone(waiter: Optional[Waiter], run_id: UUID, key: str, *, now: Optional[datetime] = None) -> Optional[str]:
    """Why the waiting process is known to be gone, or None (alive, or not known)."""
    if waiter is None:
        return None
    if waiter.host == host_tag():
        if process_alive(waiter.pid, waiter.started):
            return None
        return f"its process (pid {waiter.pid} on this host) has ended"
    beat: Any = await aread_flow_run_input(key, flow_run_id=run_id)
    if not isinstance(beat, dict) or "at" not in beat:
        return None
    age = (now or datetime.now(timezone.utc)) - datetime.fromisoformat(beat["at"])
    if age <= STALE_AFTER:
        return None
    return f"its process (pid {waiter.pid} on host {waiter.host}) has not been heard from for {age.total_seconds():.0f} s"
