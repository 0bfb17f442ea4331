"""The submit lock for runs on several machines: Prefect's Redis lock manager, with two fixes.

- Prefect's transactions take their lock with no hold timeout, so a holder killed mid-submit
  would wedge its pair for good; here every lock expires after ``hold_timeout``.
- An async task's transaction takes the lock with ``aacquire_lock`` but gives it back with the
  synchronous ``release_lock``, which in prefect-redis 0.3.0 calls the async lock's ``release()``
  without awaiting it: the lock is never released, and every later submission of the pair, on any
  machine, waits out the hold timeout. Here the release runs on the synchronous client.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

try:
    from prefect_redis.locking import RedisLockManager
    from redis.asyncio.lock import Lock as AsyncLock
    from redis.lock import Lock
except ImportError as missing:  # pragma: no cover - the [redis] extra is not installed
    raise ImportError("a Redis lock needs prefect-redis: pip install 'prefect-wan[redis]'") from missing

from prefect_wan.ledger.locks import SUBMIT_LOCK_SECONDS


class BoundedRedisLockManager(RedisLockManager):
    """``RedisLockManager`` whose locks always expire (``hold_timeout`` seconds by default)."""

    def __init__(self, *, connection_url: str, hold_timeout: float = SUBMIT_LOCK_SECONDS) -> None:
        if "connection_url" in inspect.signature(RedisLockManager.__init__).parameters:
            super().__init__(connection_url=connection_url)
        else:  # prefect-redis before 0.3 (the one Prefect before 3.7.4 takes) wants the URL's parts
            from redis.connection import SSLConnection, parse_url

            parts = parse_url(connection_url)
            super().__init__(
                host=parts.get("host", "localhost"),
                port=parts.get("port", 6379),
                db=parts.get("db", 0),
                username=parts.get("username"),
                password=parts.get("password"),
                ssl=parts.get("connection_class") is SSLConnection,
            )
        self.hold_timeout = hold_timeout

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "hold_timeout": self.hold_timeout}

    def acquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None, hold_timeout: Optional[float] = None) -> bool:
        return super().acquire_lock(key, holder, acquire_timeout, hold_timeout or self.hold_timeout)

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None, hold_timeout: Optional[float] = None) -> bool:
        return await super().aacquire_lock(key, holder, acquire_timeout, hold_timeout or self.hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        lock_name = self._lock_name_for_key(key)
        if isinstance(self._locks.get(lock_name), AsyncLock) and self.is_lock_holder(key, holder):
            # The same atomic check-and-delete, on the synchronous client.
            lock = Lock(self.client, lock_name, thread_local=False)
            lock.local.token = holder.encode()
            lock.release()
            del self._locks[lock_name]
            return
        super().release_lock(key, holder)
