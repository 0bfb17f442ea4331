"""``WanCoordination``: where the state that makes "each pair is paid for once" lives, for runs
that may execute on different machines (containers, pods, hosts)."""

from __future__ import annotations

import asyncio
import os
from typing import Optional
from urllib.parse import urlsplit

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from prefect.blocks.core import Block
from prefect.locking.protocol import LockManager
from prefect.types import SecretDict
from pydantic import Field, SecretStr, field_validator

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.errors import ArchiveDestinationError
from prefect_wan.client.errors import WanError
from prefect_wan.ledger.journal import COORDINATION_ENV, SubmissionJournal, default_journal_url
from prefect_wan.ledger.locks import SUBMIT_LOCK_SECONDS, default_lock_manager
from prefect_wan.spend.budget import Budget

REDIS_CHECK_TIMEOUT = 5.0


class CoordinationError(WanError):
    """The shared state a run is configured for cannot be used; nothing was submitted."""


class WanCoordination(Block):
    """Where submission records are kept and which lock guards a submission.

    The default (no block) keeps both on this machine, under ``PREFECT_HOME``: right for one
    machine, wrong for workers that start a fresh container per flow run or run on several hosts,
    where each would submit (and pay for) the same pair again. For those, keep the records in a
    shared store (any fsspec URL: S3, GCS, a shared filesystem) and lock with Redis.

    Example:
        Save it once, then name it in flows (``coordination="BLOCK_NAME"``) or set
        ``PREFECT_WAN_COORDINATION=BLOCK_NAME`` in the work pool's environment:
        ```python
        from prefect_wan.blocks import WanCoordination

        WanCoordination(
            submissions_url="s3://media/prefect-wan/submissions",
            redis_url="redis://redis.internal:6379/0",
            many_machines=True,
        ).save("BLOCK_NAME")
        coordination = WanCoordination.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Wan Coordination"
    _block_type_slug = "wan-coordination"
    _logo_url = "https://img.alicdn.com/imgextra/i4/O1CN01EfJVFQ1uZPd7W4W6i_!!6000000006051-2-tps-112-112.png"  # type: ignore[assignment]
    _documentation_url = "https://github.com/PrefectHQ/prefect/tree/main/src/integrations/prefect-redis"  # type: ignore[assignment]

    submissions_url: Optional[str] = Field(
        default=None,
        title="Submissions URL",
        description="fsspec URL of the submission records (s3://bucket/prefect-wan/submissions). "
        "Empty: PREFECT_WAN_SUBMISSIONS_URL, else PREFECT_HOME on this machine.",
    )
    submissions_storage_options: SecretDict = Field(
        default_factory=lambda: SecretDict({}),
        description="fsspec options for the submissions store (kept secret: keys may be in here).",
    )
    redis_url: Optional[SecretStr] = Field(
        default=None,
        title="Redis URL",
        description="redis://[:password@]host:port/db of the submit lock (Prefect's Redis lock manager). "
        "Empty: file locks under PREFECT_HOME, shared by the processes of one machine only.",
    )
    lock_hold_seconds: float = Field(
        default=SUBMIT_LOCK_SECONDS,
        gt=0,
        description="A submit lock expires after this long, so a holder killed mid-submit cannot wedge its pair.",
    )
    many_machines: bool = Field(
        default=False,
        description="Runs may execute on different machines: refuse to start with records or locks that live on one machine.",
    )
    concurrency_limit: Optional[str] = Field(
        default=None, description="Prefect global concurrency limit held while a pair is in flight (the account's running slots)."
    )
    daily_budget: Optional[str] = Field(
        default=None,
        description="Most the account may commit per UTC day, across runs and machines, with its currency ('200 CNY'). "
        "Kept beside the submission records; pairs past it are skipped for budget.",
    )
    rate_limit: Optional[str] = Field(default=None, description="Prefect rate limit (slot decay) taken before each submission (the account's submission rate).")

    @field_validator("daily_budget")
    @classmethod
    def _daily_budget(cls, value: Optional[str]) -> Optional[str]:
        if value:
            Budget.coerce(value, field="daily_budget")
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:
        if value is None or not value.get_secret_value():
            return None
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"):
            raise ValueError(f"redis_url must start with redis://, rediss:// or unix:// (got {scheme or 'no scheme'}://)")
        return value

    # -- what a run uses -------------------------------------------------------------------

    @property
    def journal_url(self) -> str:
        return self.submissions_url or default_journal_url()

    def journal(self) -> SubmissionJournal:
        return SubmissionJournal(self.journal_url, self.submissions_storage_options.get_secret_value())

    def lock_manager(self) -> LockManager:
        """A new lock manager for one run (Redis clients belong to the event loop that uses them)."""
        if self.redis_url is None:
            return default_lock_manager()
        from prefect_wan.ledger.redis_lock import BoundedRedisLockManager

        return BoundedRedisLockManager(connection_url=self.redis_url.get_secret_value(), hold_timeout=self.lock_hold_seconds)

    @property
    def redis_location(self) -> Optional[str]:
        """The lock server's address without its credentials, for messages."""
        if self.redis_url is None:
            return None
        parts = urlsplit(self.redis_url.get_secret_value())
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path or ''}"

    def local_parts(self) -> list[str]:
        """What lives on one machine only."""
        parts = []
        fs, _ = url_to_fs(self.journal_url, **self.submissions_storage_options.get_secret_value())
        if isinstance(fs, LocalFileSystem):
            parts.append(f"submission records on this machine's disk ({self.journal_url})")
        if self.redis_url is None:
            parts.append("file locks under this machine's PREFECT_HOME")
        return parts

    async def check(self) -> None:
        """Refuse, before anything is submitted, a configuration that cannot keep its promise."""
        local = self.local_parts()
        if self.many_machines and local:
            raise CoordinationError(
                "this run is configured for several machines (many_machines=True) but keeps "
                + " and ".join(local)
                + ": another machine would not see them and would pay for the same pairs again. Set submissions_url to a "
                "shared store (s3://..., gs://..., a shared mount) and redis_url to a Redis server reachable by every worker"
            )
        if self.redis_url is not None:
            await asyncio.to_thread(self._ping_redis)
        if self.submissions_url is not None:
            await asyncio.to_thread(self._probe_store)

    def _ping_redis(self) -> None:
        import redis

        assert self.redis_url is not None
        client = redis.Redis.from_url(self.redis_url.get_secret_value(), socket_connect_timeout=REDIS_CHECK_TIMEOUT, socket_timeout=REDIS_CHECK_TIMEOUT)
        try:
            client.ping()
        except redis.RedisError as error:
            raise CoordinationError(
                f"cannot reach the submit lock's Redis server at {self.redis_location} ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else 'no answer'}); nothing was submitted. Start it, or fix "
                "redis_url in the WanCoordination block"
            ) from None
        finally:
            client.close()

    def _probe_store(self) -> None:
        store = ArchiveDestination(url=self.journal_url, storage_options=self.submissions_storage_options.get_secret_value())
        try:
            store.check_writable(what="the submission records at")
        except ArchiveDestinationError as error:
            raise CoordinationError(f"{error}; nothing was submitted") from None


async def resolve_coordination(coordination: WanCoordination | str | None) -> WanCoordination:
    """A block, a saved block's name, or None: the block named by PREFECT_WAN_COORDINATION, else
    this machine's defaults."""
    if isinstance(coordination, WanCoordination):
        return coordination
    name = coordination or os.environ.get(COORDINATION_ENV)
    if name:
        try:
            return await WanCoordination.aload(name)
        except ValueError as error:
            raise CoordinationError(f"no WanCoordination block named {name!r} ({error}); nothing was submitted") from None
    return WanCoordination()
