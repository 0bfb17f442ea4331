"""The submit lock for runs on several machines: Prefect's Redis lock manager, with a hold timeout.

Prefect's transactions take their lock with no hold timeout, so a holder killed mid-submit would
wedge its pair for good; here every lock expires after ``hold_timeout`` unless released first.
"""

from __future__ import annotations

from typing import Any, Optional

try:
    from prefect_redis.locking import RedisLockManager
except ImportError as missing:  # pragma: no cover - the [redis] extra is not installed
    raise ImportError("a Redis lock needs prefect-redis: pip install 'prefect-wan[redis]'") from missing

from prefect_wan.tasks.locking import SUBMIT_LOCK_SECONDS


class BoundedRedisLockManager(RedisLockManager):
    """``RedisLockManager`` whose locks always expire (``hold_timeout`` seconds by default)."""

    def __init__(self, *, connection_url: str, hold_timeout: float = SUBMIT_LOCK_SECONDS) -> None:
        super().__init__(connection_url=connection_url)
        self.hold_timeout = hold_timeout

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "hold_timeout": self.hold_timeout}

    def acquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None, hold_timeout: Optional[float] = None) -> bool:
        return super().acquire_lock(key, holder, acquire_timeout, hold_timeout or self.hold_timeout)

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None, hold_timeout: Optional[float] = None) -> bool:
        return await super().aacquire_lock(key, holder, acquire_timeout, hold_timeout or self.hold_timeout)
