"""A daily budget per account that holds across runs and machines.

One document per account (endpoint identity) and UTC day, beside the submission records (the
shared store of a ``WanCoordination`` block), read and written under the coordination's lock:
Redis across machines, a file lock on one. Each entry is one piece of work (its fingerprint), so
two runs of the same pair count it once, and a run that adopts a recorded task adds nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Callable, Optional

from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, Field

from prefect_wan.archive.record import CostEstimate
from prefect_wan.ledger.atomic import replace_atomically
from prefect_wan.ledger.journal import SubmissionJournal
from prefect_wan.spend.budget import Budget, SkippedForBudgetError

if TYPE_CHECKING:
    from prefect.locking.protocol import LockManager

# The document is held only for a read and a write; a holder killed meanwhile frees it this soon.
LOCK_HOLD_SECONDS = 30.0
LOCK_WAIT_SECONDS = 60.0


class DailyEntry(BaseModel):
    label: str
    amount: float
    currency: str
    flow_run_id: Optional[str] = None
    at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


class DailySpend(BaseModel):
    """What one account has committed on one UTC day, piece of work by piece of work."""

    day: date
    endpoint: str
    entries: dict[str, DailyEntry] = Field(default_factory=dict)

    def committed(self, currency: str) -> float:
        return sum(e.amount for e in self.entries.values() if e.currency == currency)


class DailyBudget:
    """The account's budget for the day, shared by every run that names the same coordination."""

    def __init__(self, budget: Budget, journal: SubmissionJournal, lock_manager: LockManager) -> None:
        self.budget, self.journal, self.lock_manager = budget, journal, lock_manager

    def _names(self, endpoint: str) -> tuple[str, str]:
        day = datetime.now(timezone.utc).date().isoformat()
        account = hashlib.sha256(endpoint.encode()).hexdigest()[:16]
        return f"{self.journal.root}/daily-spend/{account}-{day}.json", f"prefect-wan-daily-{account}-{day}"

    async def commit(self, endpoint: str, key: str, estimate: CostEstimate, *, label: str, flow_run_id: Optional[str], check: bool = True) -> bool:
        """Enter this work in today's spend of the account, or raise ``SkippedForBudgetError``.
        True when this call entered it (and so may take it back)."""

        def change(spend: DailySpend) -> bool:
            if key in spend.entries or estimate.amount is None or estimate.currency is None:
                return False  # counted already (another run of the same work), or nothing to count
            if check:
                reason = self.budget.refusal(
                    estimate, spend.committed(self.budget.currency), spend="the account's spend today", limit=f"its daily budget of {self.budget}"
                )
                if reason is not None:
                    raise SkippedForBudgetError(label, reason, estimate)
            spend.entries[key] = DailyEntry(label=label, amount=estimate.amount, currency=estimate.currency, flow_run_id=flow_run_id)
            return True

        return await self._update(endpoint, change, label)

    async def release(self, endpoint: str, key: str) -> None:
        """The work was not paid by this run after all (adopted, or refused by the service)."""
        await self._update(endpoint, lambda spend: spend.entries.pop(key, None) is not None, key)

    async def spent_today(self, endpoint: str) -> DailySpend:
        path, _ = self._names(endpoint)
        return await asyncio.to_thread(self._read, path, endpoint)

    async def _update(self, endpoint: str, change: Callable[[DailySpend], bool], label: str) -> bool:
        path, lock_key = self._names(endpoint)
        holder = uuid.uuid4().hex
        if not await self.lock_manager.aacquire_lock(lock_key, holder, acquire_timeout=LOCK_WAIT_SECONDS, hold_timeout=LOCK_HOLD_SECONDS):
            raise SkippedForBudgetError(label, f"the account's daily spend record stayed locked for {LOCK_WAIT_SECONDS:g} s; nothing was sent")
        try:
            spend = await asyncio.to_thread(self._read, path, endpoint)
            changed = change(spend)
            if changed:
                await asyncio.to_thread(self._write, path, spend)
            return changed
        finally:
            self.lock_manager.release_lock(lock_key, holder)

    def _read(self, path: str, endpoint: str) -> DailySpend:
        try:
            return DailySpend.model_validate(json.loads(self.journal.fs.cat_file(path)))
        except FileNotFoundError:
            return DailySpend(day=datetime.now(timezone.utc).date(), endpoint=endpoint)

    def _write(self, path: str, spend: DailySpend) -> None:
        fs = self.journal.fs
        if isinstance(fs, LocalFileSystem):
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        document = spend.model_dump_json(indent=1).encode()
        replace_atomically(fs, path, lambda partial: fs.pipe_file(partial, document))
