"""One run setup for every flow: credentials, coordination, destination and budget resolved once;
pairs prepared once; then the pair pipeline with its capacity, charges and hooks.

The pair, batch and storyboard flows and fan-out are thin entry points over it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar, Union
from uuid import UUID

import httpx
from prefect import flow, get_run_logger

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.blocks.coordination import WanCoordination, resolve_coordination
from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.polling import PollSchedule
from prefect_wan.client.preflight import prepare
from prefect_wan.flows.cancellation import cancel_queued_work, remember_run_credentials
from prefect_wan.flows.models import GenerationOptions, KeyframePair
from prefect_wan.flows.parameters import RunParameters
from prefect_wan.flows.pipeline import Capacity, PairRun
from prefect_wan.flows.prepared import PreparedPair, take_handed_over
from prefect_wan.flows.quality import QualityGate
from prefect_wan.flows.started import run_started
from prefect_wan.ledger.journal import COORDINATION_ENV
from prefect_wan.media.shots import ShotThresholds
from prefect_wan.signatures import expand_groups
from prefect_wan.spend.budget import Budget, SpendLedger
from prefect_wan.spend.charges import RunCharges
from prefect_wan.spend.daily import DailyBudget

R = TypeVar("R")

PREPARE_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
# Work pools whose flow runs execute on the worker's own host (and so share its PREFECT_HOME).
_SAME_HOST_POOL_TYPES = ("process",)


def wan_flow(name: str, flow_run_name: Union[str, Callable[[], str]]) -> Callable[[Callable[..., R]], Any]:
    """A prefect-wan flow: its parameter groups shown as parameters, and the hooks that cancel
    its queued tasks when it is cancelled or crashes."""

    def decorate(fn: Callable[..., R]) -> Any:
        return flow(
            name=name,
            flow_run_name=flow_run_name,
            on_cancellation=[cancel_queued_work],
            on_crashed=[cancel_queued_work],
        )(expand_groups(fn))

    return decorate


async def resolve_credentials(credentials: Union[WanCredentials, str, None]) -> WanCredentials:
    """A block, a saved block's name, or None (DASHSCOPE_API_KEY, Singapore)."""
    if isinstance(credentials, WanCredentials):
        return credentials
    if isinstance(credentials, str):
        return await WanCredentials.aload(credentials)
    return WanCredentials()


@dataclass
class RunSetup:
    """What a run resolved from its parameters, before anything is sent."""

    credentials: WanCredentials
    destination: ArchiveDestination
    coordination: WanCoordination
    budget: Optional[Budget]
    options: GenerationOptions
    force: bool
    poll: Optional[PollSchedule]
    dry_run: bool
    frame_storage_options: Optional[dict[str, Any]] = None
    quality: Optional[QualityGate] = None

    @property
    def thresholds(self) -> ShotThresholds:
        return self.quality.thresholds if self.quality is not None else ShotThresholds()

    @classmethod
    async def resolve(cls, run: RunParameters, frame_storage_options: Optional[dict[str, Any]] = None) -> RunSetup:
        """``frame_storage_options``: fsspec options for reading fsspec-URL frames."""
        run_started()
        budget = Budget.coerce(run.max_cost)
        return cls(
            credentials=await resolve_credentials(run.credentials),
            destination=ArchiveDestination.coerce(run.destination, run.storage_options),
            coordination=await resolve_coordination(run.coordination),
            budget=budget,
            options=run.options,
            force=run.force,
            poll=run.poll,
            dry_run=run.dry_run,
            frame_storage_options=frame_storage_options,
            quality=run.quality,
        )

    async def prepare(self, pair: KeyframePair) -> PreparedPair:
        """Read, check and hash the pair's frames (``PreflightError`` naming what is wrong). Sends nothing."""
        request = pair.to_request(self.options, self.frame_storage_options)
        prepared = take_handed_over(request, self.credentials.region)
        if prepared is None:
            # No key is needed: nothing is sent to DashScope (frames on http(s) are fetched).
            async with httpx.AsyncClient(timeout=PREPARE_TIMEOUT) as http:
                prepared = await prepare(request, self.credentials.region, http=http)
        return PreparedPair.of(pair, prepared)

    async def prepare_all(self, pairs: list[KeyframePair]) -> list[PreparedPair]:
        """Every pair prepared, in order; the first refusal is raised."""
        return [await self.prepare(pair) for pair in pairs]

    async def start(self, *, in_flight: int, concurrency_limit: Optional[str] = None, rate_limit: Optional[str] = None) -> PairRun:
        """Check the shared state (refused before anything is sent), remember the credentials for
        the cancellation hook, and open the run's capacity and charges."""
        await prepare_coordination(self.coordination)
        remember_run_credentials(self.credentials, self.coordination)
        daily_budget = Budget.coerce(self.coordination.daily_budget, field="daily_budget")
        journal = self.coordination.journal()
        lock_manager = self.coordination.lock_manager()
        daily = DailyBudget(daily_budget, journal, lock_manager) if daily_budget is not None else None
        capacity = Capacity(
            asyncio.Semaphore(in_flight),
            concurrency_limit or self.coordination.concurrency_limit,
            rate_limit or self.coordination.rate_limit,
        )
        charges = RunCharges(self.credentials.endpoint, SpendLedger(self.budget), daily)
        return PairRun(self, capacity, charges, journal, lock_manager)


async def prepare_coordination(coordination: WanCoordination) -> None:
    """Refused when the shared state is configured for several machines but lives on one, or when
    its Redis or store cannot be reached; a warning when the run executes on container
    infrastructure with this machine's state."""
    await coordination.check()
    local = coordination.local_parts()
    if local and (pool := await _work_pool_of_this_run()) is not None and pool[1] not in _SAME_HOST_POOL_TYPES:
        get_run_logger().warning(
            "This run executes on work pool %r (type %s), whose flow runs may start on a fresh container or another host, "
            "but it keeps %s: a run rescheduled elsewhere, or a second worker, would pay for the same pairs again. "
            "Save a WanCoordination block with a shared submissions_url and a redis_url (many_machines=True) and pass its "
            "name as coordination=, or set %s in the work pool's environment.",
            pool[0],
            pool[1],
            " and ".join(local),
            COORDINATION_ENV,
        )


async def _work_pool_of_this_run() -> Optional[tuple[str, str]]:
    """(name, type) of the work pool running this flow run, if it runs on one."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if run_id is None:
        return None
    try:
        async with get_client() as client:
            run = await client.read_flow_run(UUID(run_id))
            if not run.work_pool_name:
                return None
            pool = await client.read_work_pool(run.work_pool_name)
    except Exception:  # the warning is advice: an API hiccup must not fail the run
        return None
    return pool.name, pool.type
