"""Replacing an object so that no reader ever sees it half-written: a unique partial object,
then a move into place; partials a killed writer left behind are recognised and removed."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable

from prefect_wan.ledger.liveness import host_tag, process_alive

# A partial object older than this is abandoned wherever its writer ran.
PARTIAL_MAX_AGE = timedelta(hours=1)


def _partial_name(final: str) -> str:
    # Who wrote it, so a later run can tell an abandoned partial from one being written.
    return f"{final}.partial-{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _abandoned(fs, path: str) -> bool:
    try:
        host, pid, _ = path.rsplit(".partial-", 1)[1].split("-", 2)
        if host == host_tag() and not process_alive(int(pid), None):
            return True
    except ValueError:
        pass  # an older name without its writer: judged by age alone
    try:
        modified = fs.modified(path)
    except (NotImplementedError, FileNotFoundError, OSError):
        return False
    modified = modified if modified.tzinfo else modified.replace(tzinfo=timezone.utc)
    return datetime.now(timezone.utc) - modified > PARTIAL_MAX_AGE


def sweep_partials(fs, final: str) -> list[str]:
    """Remove the partial objects beside ``final`` that a killed run left behind."""
    removed = []
    for path in fs.glob(f"{final}.partial-*"):
        if _abandoned(fs, path):
            fs.rm(path)
            removed.append(path)
    return removed


def replace_atomically(fs, final: str, write: Callable[[str], None]) -> None:
    """``write`` fills a unique partial object beside ``final``, which is then moved into place."""
    sweep_partials(fs, final)
    partial = _partial_name(final)
    try:
        write(partial)
        fs.mv(partial, final)
    finally:
        if fs.exists(partial):
            fs.rm(partial)
