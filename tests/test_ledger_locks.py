"""The submit locks (ledger/locks.py, ledger/redis_lock.py): never shared, never crashed by a half-written
lock, taken over from dead or expired holders, released for real."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from prefect_wan.ledger.locks import LockInfo, SubmitLockManager
from prefect_wan.ledger.redis_lock import BoundedRedisLockManager


def test_two_lock_managers_racing_for_one_key_never_crash_and_never_share(tmp_path):
    managers = [SubmitLockManager(tmp_path), SubmitLockManager(tmp_path)]
    inside, overlaps, errors = [0], [0], []
    barrier = threading.Barrier(2)

    def worker(manager: SubmitLockManager, name: str) -> None:
        try:
            for round_ in range(60):
                barrier.wait()
                holder = f"{name}-{round_}"
                assert manager.acquire_lock("key", holder, acquire_timeout=10)
                inside[0] += 1
                overlaps[0] += inside[0] > 1
                time.sleep(0.001)
                inside[0] -= 1
                manager.release_lock("key", holder)
        except Exception as exc:  # noqa: BLE001 - any error fails the test below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(m, f"m{i}")) for i, m in enumerate(managers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and overlaps == [0]


def test_prefects_own_lock_manager_has_the_race_we_avoid(tmp_path):
    # Prefect touches the lock file before writing it: a reader in between parses an empty file.
    from prefect.locking.filesystem import FileSystemLockManager

    manager = FileSystemLockManager(tmp_path)
    (tmp_path / "key.lock").touch()
    with pytest.raises(ValueError, match="EOF"):
        manager.is_locked("key")
    ours = SubmitLockManager(tmp_path)
    assert ours.is_locked("key")  # a half-written lock counts as held, never as a crash


def test_locks_of_dead_and_live_holders(tmp_path, caplog):
    manager = SubmitLockManager(tmp_path, hold_timeout=600)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    later = datetime.now(timezone.utc) + timedelta(minutes=10)
    (tmp_path / "dead.lock").write_text(LockInfo(holder="x", expiration=later, host=socket.gethostname(), pid=dead.pid).model_dump_json())
    (tmp_path / "elsewhere.lock").write_text(LockInfo(holder="y", expiration=later, host="another-host", pid=1).model_dump_json())
    (tmp_path / "expired.lock").write_text(
        LockInfo(holder="z", expiration=datetime.now(timezone.utc) - timedelta(seconds=1), host="another-host", pid=1).model_dump_json()
    )
    with caplog.at_level(logging.INFO):
        assert manager.acquire_lock("dead", "me", acquire_timeout=1)
        assert manager.acquire_lock("expired", "me", acquire_timeout=1)
        assert not manager.acquire_lock("elsewhere", "me", acquire_timeout=0.3)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert f"process {dead.pid} on this host, is gone" in messages
    assert "held by process 1 on another-host" in messages


def test_a_redis_lock_expires_when_its_holder_dies(redis_server):
    holder = BoundedRedisLockManager(connection_url=redis_server.url, hold_timeout=1.0)
    rival = BoundedRedisLockManager(connection_url=redis_server.url, hold_timeout=1.0)
    assert holder.acquire_lock("pair-x", holder="run-1")  # and never released, as by a killed process
    assert not rival.acquire_lock("pair-x", holder="run-2", acquire_timeout=0.3)
    assert rival.acquire_lock("pair-x", holder="run-2", acquire_timeout=5)
    rival.release_lock("pair-x", holder="run-2")


def test_a_redis_lock_released_by_its_holder_is_free_at_once(redis_server):
    # prefect-redis 0.3 never awaited the async release: every later submission waited out the hold.
    import asyncio

    manager = BoundedRedisLockManager(connection_url=redis_server.url, hold_timeout=60)
    assert asyncio.run(manager.aacquire_lock("pair-y", holder="run-1", acquire_timeout=1))
    manager.release_lock("pair-y", holder="run-1")
    other = BoundedRedisLockManager(connection_url=redis_server.url, hold_timeout=60)
    started = time.monotonic()
    assert other.acquire_lock("pair-y", holder="run-2", acquire_timeout=5) and time.monotonic() - started < 1
    other.release_lock("pair-y", holder="run-2")


def test_releasing_a_lock_one_does_not_hold_is_refused(tmp_path):
    manager = SubmitLockManager(tmp_path)
    assert manager.acquire_lock("key", "me", acquire_timeout=1)
    with pytest.raises(ValueError, match="No lock held by you"):
        manager.release_lock("key", "you")
    assert manager.is_lock_holder("key", "me") and not manager.is_lock_holder("key", "you")
    manager.release_lock("key", "me")
    assert not manager.is_locked("key")
