"""The account's limits as Prefect global concurrency limits, shared by every run on every machine:
one for the tasks in flight (the account's running slots), one with slot decay for the submission rate."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.exceptions import ObjectNotFound


async def ensure_account_limits(name: str, *, running: int, submits_per_second: float) -> tuple[str, str]:
    """Create or update ``name`` (``running`` at once) and ``name-submit`` (a rate of ``submits_per_second``)."""
    if running < 1 or submits_per_second <= 0:
        raise ValueError("running must be at least 1 and submits_per_second above 0")
    rate_name = f"{name}-submit"
    # A rate limit is a limit of 1 whose slot decays; for rates above 1/s, more slots decaying faster.
    rate_slots = max(1, round(submits_per_second))
    wanted = {
        name: GlobalConcurrencyLimitCreate(name=name, limit=running),
        rate_name: GlobalConcurrencyLimitCreate(name=rate_name, limit=rate_slots, slot_decay_per_second=submits_per_second),
    }
    async with get_client() as client:
        for limit_name, limit in wanted.items():
            try:
                await client.read_global_concurrency_limit_by_name(limit_name)
            except ObjectNotFound:
                await client.create_global_concurrency_limit(limit)
            else:
                await client.update_global_concurrency_limit(
                    limit_name, GlobalConcurrencyLimitUpdate(limit=limit.limit, slot_decay_per_second=limit.slot_decay_per_second)
                )
    return name, rate_name
