"""How the submit task is deduplicated: a cache key from the request fingerprint, a lock that
stops concurrent twins, and a retry rule that only retries what cannot have created a task."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import httpx
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.locking.protocol import LockManager
from prefect.settings import get_current_settings
from prefect.transactions import IsolationLevel
from prefect.utilities.hashing import hash_objects

from prefect_wan.client.errors import VideoUrlExpiredError
from prefect_wan.client.preflight import prepare
from prefect_wan.tasks.locking import SubmitLockManager


def default_lock_manager() -> SubmitLockManager:
    """Locks under PREFECT_HOME: shared by every process of this machine. Workers on several
    machines lock with Redis instead (``WanCoordination.redis_url``)."""
    return SubmitLockManager(Path(get_current_settings().home) / "locks" / "prefect-wan")


def submission_key(fingerprint: str, credentials: Any) -> str:
    """One key per piece of work and endpoint: the Prefect cache key and the journal's record name."""
    return f"prefect-wan-submit-{hash_objects(fingerprint, credentials.region, credentials.effective_base_url, credentials.workspace)}"


def fingerprint_blocking(request: Any, credentials: Any) -> str:
    """The request's fingerprint from synchronous code (Prefect computes cache keys synchronously)."""

    async def compute() -> str:
        async with httpx.AsyncClient(timeout=60.0) as http:
            return (await prepare(request, credentials.region, http=http)).fingerprint

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, compute()).result()


@dataclass
class SubmissionCachePolicy(CachePolicy):
    """Key = the work's fingerprint plus the non-secret identity of the endpoint.

    Credentials never enter the key; the region, host and workspace do, since a task id only
    answers where it was created.
    """

    def compute_key(
        self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> Optional[str]:
        credentials = inputs["credentials"]
        fingerprint = inputs.get("fingerprint") or fingerprint_blocking(inputs["request"], credentials)
        return submission_key(fingerprint, credentials)


def submission_cache_policy(lock_manager: Optional[LockManager] = None) -> CachePolicy:
    """The submit task's policy: SERIALIZABLE under this machine's file locks, or the lock given."""
    return SubmissionCachePolicy().configure(
        isolation_level=IsolationLevel.SERIALIZABLE, lock_manager=lock_manager or default_lock_manager()
    )


async def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only errors that say so. Async on purpose: a sync condition in an async task gets a
    coroutine from ``state.result()`` and silently never retries."""
    error = await state.aresult(raise_on_failure=False)
    if isinstance(error, VideoUrlExpiredError):
        return False
    if getattr(error, "retryable", False):
        return True
    return isinstance(error, (httpx.TransportError, ConnectionError, TimeoutError))
