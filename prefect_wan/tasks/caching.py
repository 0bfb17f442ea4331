"""How the submit task is deduplicated and retried: a cache key from the request fingerprint, a
lock that stops concurrent twins, and a retry rule that only retries what cannot have created a task."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import httpx
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.locking.protocol import LockManager
from prefect.transactions import IsolationLevel

from prefect_wan.archive.errors import VideoUrlExpiredError
from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.preflight import PreparedRequest, prepare
from prefect_wan.client.request import KeyframeVideoRequest
from prefect_wan.ledger.locks import default_lock_manager


def fingerprint_blocking(request: KeyframeVideoRequest, credentials: WanCredentials) -> str:
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
    answers where it was created. A prepared request brings its fingerprint; a bare one is read
    and hashed here (standalone use of the task).
    """

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> Optional[str]:
        credentials: WanCredentials = inputs["credentials"]
        request = inputs["request"]
        fingerprint = request.fingerprint if isinstance(request, PreparedRequest) else fingerprint_blocking(request, credentials)
        return credentials.submission_key(fingerprint)


def submission_cache_policy(lock_manager: Optional[LockManager] = None) -> CachePolicy:
    """The submit task's policy: SERIALIZABLE under this machine's file locks, or the lock given."""
    return SubmissionCachePolicy().configure(isolation_level=IsolationLevel.SERIALIZABLE, lock_manager=lock_manager or default_lock_manager())


async def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only errors that say so. Async on purpose: a sync condition in an async task gets a
    coroutine from ``state.result()`` and silently never retries."""
    error = await state.aresult(raise_on_failure=False)
    if isinstance(error, VideoUrlExpiredError):
        return False
    if getattr(error, "retryable", False):
        return True
    return isinstance(error, (httpx.TransportError, ConnectionError, TimeoutError))
