"""Whether a process of this host still lives: how a lock or a partial upload left by a killed
run is recognised as abandoned at once, instead of after a timeout."""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Optional


def host_tag() -> str:
    """A short, stable tag of this host, safe in object names."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def process_started(pid: int) -> Optional[float]:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # The command name may hold spaces; fields resume after its closing parenthesis.
            fields = stat.read().rsplit(b")", 1)[1].split()
        return float(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def process_alive(pid: int, started: Optional[float]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    if started is not None:
        now_started = process_started(pid)
        if now_started is not None and now_started != started:
            return False  # the pid was reused by a newer process
    return True
