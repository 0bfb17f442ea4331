"""The lock that keeps two runs of one machine from submitting the same pair at once.

Prefect's ``FileSystemLockManager`` has two flaws that cost money or time here: it creates the
lock file empty and writes its JSON afterwards, so a concurrent acquirer can read an empty file
and crash (``EOF while parsing a value``); and a lock whose holder was killed stays until its
expiry, with nothing said about why a re-run is waiting. These locks are created atomically,
with their content, and name the holder's host and process, so a dead holder on this host is
detected at once and a live one is reported while we wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ValidationError

from prefect_wan.ledger.liveness import process_alive, process_started
from prefect_wan.ledger.places import home_or_prefects

SUBMIT_LOCK_SECONDS = 600.0
_POLL = 0.1
_REPORT_EVERY = 30.0


def _logger() -> logging.Logger | logging.LoggerAdapter:
    # The run's logger when there is one, so the wait shows in the UI beside the task. Before
    # Prefect is loaded (a command sending ahead of it) there is no run: the standard logger.
    if "prefect.logging" not in sys.modules:
        return logging.getLogger("prefect_wan.locking")
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_logger, get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("prefect_wan.locking")


class LockInfo(BaseModel):
    holder: str
    expiration: Optional[datetime] = None
    host: str = ""
    pid: int = 0
    process_started: Optional[float] = None
    acquired_at: Optional[datetime] = None

    def expired(self) -> bool:
        return self.expiration is not None and self.expiration <= datetime.now(timezone.utc)


class SubmitLockManager:
    """File locks under one directory, shared by every process of this machine.

    Implements Prefect's ``LockManager`` protocol. ``hold_timeout`` bounds how long a lock can
    outlive a holder on another host (one on this host is detected as dead at once).
    """

    def __init__(self, lock_files_directory: Path, hold_timeout: float = SUBMIT_LOCK_SECONDS) -> None:
        self.lock_files_directory = Path(lock_files_directory).expanduser().resolve()
        self.hold_timeout = hold_timeout
        self._host = socket.gethostname()

    def _path(self, key: str) -> Path:
        return self.lock_files_directory / f"{key}.lock"

    def read(self, key: str) -> Optional[LockInfo]:
        """The lock's current content, or None when it is free (or its file is unreadable junk)."""
        try:
            return LockInfo.model_validate(json.loads(self._path(key).read_bytes()))
        except FileNotFoundError:
            return None
        except (ValueError, ValidationError):
            # Written by something else (an older prefect-wan, or Prefect's own manager mid-write):
            # treat as held until it is old enough to be surely abandoned.
            try:
                age = time.time() - self._path(key).stat().st_mtime
            except FileNotFoundError:
                return None
            expiry = datetime.now(timezone.utc) + timedelta(seconds=max(0.0, self.hold_timeout - age))
            return LockInfo(holder="unknown", expiration=expiry)

    def _stale_reason(self, info: LockInfo) -> Optional[str]:
        if info.expired():
            return f"its hold expired at {info.expiration:%H:%M:%S} UTC"
        if info.host == self._host and info.pid and not process_alive(info.pid, info.process_started):
            return f"its holder, process {info.pid} on this host, is gone"
        return None

    def _break(self, key: str, info: LockInfo, reason: str) -> None:
        _logger().info("Taking over the submit lock %s: %s", key[-16:], reason)
        try:
            current = self.read(key)
            if current is not None and current.holder == info.holder:
                self._path(key).unlink(missing_ok=True)
        except OSError:
            pass

    def _try_create(self, key: str, holder: str, hold_timeout: Optional[float]) -> bool:
        self.lock_files_directory.mkdir(parents=True, exist_ok=True)
        now = datetime.now(timezone.utc)
        pid = os.getpid()
        info = LockInfo(
            holder=holder,
            expiration=now + timedelta(seconds=hold_timeout or self.hold_timeout),
            host=self._host,
            pid=pid,
            process_started=process_started(pid),
            acquired_at=now,
        )
        staged = self.lock_files_directory / f".{key}.{uuid.uuid4().hex}.tmp"
        staged.write_bytes(info.model_dump_json().encode())
        try:
            # link() fails if the lock exists, and the lock appears with its content: no reader
            # ever sees an empty or half-written lock.
            os.link(staged, self._path(key))
            return True
        except FileExistsError:
            return False
        finally:
            staged.unlink(missing_ok=True)

    def _attempt(self, key: str, holder: str, hold_timeout: Optional[float]) -> tuple[bool, Optional[LockInfo]]:
        info = self.read(key)
        if info is not None:
            if info.holder == holder:
                return True, info
            reason = self._stale_reason(info)
            if reason is None:
                return False, info
            self._break(key, info, reason)
        return self._try_create(key, holder, hold_timeout), info

    def _report_wait(self, key: str, info: Optional[LockInfo], waited: float) -> None:
        if info is None:
            return
        who = f"process {info.pid} on {info.host}" if info.pid else "another process"
        until = f"{info.expiration:%H:%M:%S} UTC" if info.expiration else "its release"
        _logger().info(
            "Waiting for the submit lock %s held by %s since %s (%.0f s so far); it is released when "
            "that run finishes submitting, or taken over at %s if that run died",
            key[-16:],
            who,
            f"{info.acquired_at:%H:%M:%S} UTC" if info.acquired_at else "an unknown time",
            waited,
            until,
        )

    def acquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None, hold_timeout: Optional[float] = None) -> bool:
        waiting = _Waiting(self, key, acquire_timeout)
        while not (outcome := self._attempt(key, holder, hold_timeout))[0]:
            if waiting.gives_up(outcome[1]):
                return False
            time.sleep(_POLL)
        return True

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None, hold_timeout: Optional[float] = None) -> bool:
        waiting = _Waiting(self, key, acquire_timeout)
        while not (outcome := await asyncio.to_thread(self._attempt, key, holder, hold_timeout))[0]:
            if waiting.gives_up(outcome[1]):
                return False
            await asyncio.sleep(_POLL)
        return True

    def release_lock(self, key: str, holder: str) -> None:
        info = self.read(key)
        if info is None or info.holder != holder:
            raise ValueError(f"No lock held by {holder} for transaction with key {key}")
        self._path(key).unlink(missing_ok=True)

    def is_locked(self, key: str) -> bool:
        info = self.read(key)
        return info is not None and self._stale_reason(info) is None

    def is_lock_holder(self, key: str, holder: str) -> bool:
        info = self.read(key)
        return info is not None and info.holder == holder and self._stale_reason(info) is None

    def wait_for_lock(self, key: str, timeout: Optional[float] = None) -> bool:
        started = time.monotonic()
        while self.is_locked(key):
            if timeout is not None and time.monotonic() - started >= timeout:
                return False
            time.sleep(_POLL)
        return True

    async def await_for_lock(self, key: str, timeout: Optional[float] = None) -> bool:
        started = time.monotonic()
        while await asyncio.to_thread(self.is_locked, key):
            if timeout is not None and time.monotonic() - started >= timeout:
                return False
            await asyncio.sleep(_POLL)
        return True


class _Waiting:
    """One acquisition's wait: when it gives up, and when to say again whom it waits for."""

    def __init__(self, manager: SubmitLockManager, key: str, timeout: Optional[float]) -> None:
        self.manager, self.key, self.timeout = manager, key, timeout
        self.started = time.monotonic()
        self.next_report = 0.0

    def gives_up(self, holder: Optional[LockInfo]) -> bool:
        waited = time.monotonic() - self.started
        if self.timeout is not None and waited >= self.timeout:
            return True
        if waited >= self.next_report:
            self.manager._report_wait(self.key, holder, waited)
            self.next_report = waited + _REPORT_EVERY
        return False


def default_lock_manager(home: Optional[Path] = None) -> SubmitLockManager:
    """Locks under ``home`` (Prefect's own home when not given): shared by every process of this
    machine. Workers on several machines lock with Redis instead (``WanCoordination.redis_url``)."""
    return SubmitLockManager(home_or_prefects(home) / "locks" / "prefect-wan")
