"""One pair's charge against what bounds a run's spending: the run's own ledger (``max_cost``) and,
when the coordination names one, the account's daily budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from prefect_wan.archive.record import CostEstimate
from prefect_wan.ledger.journal import current_flow_run_id
from prefect_wan.spend.budget import SpendLedger
from prefect_wan.spend.daily import DailyBudget


@dataclass
class RunCharges:
    """Every charge of one run, on one account (endpoint)."""

    endpoint: str
    ledger: SpendLedger = field(default_factory=SpendLedger)
    daily: Optional[DailyBudget] = None

    def pair(self, key: str, estimate: CostEstimate, *, label: str) -> PairCharge:
        """The charge of one piece of work (``key``: its fingerprint; identical pairs share one)."""
        return PairCharge(self, key, estimate, label)


class PairCharge:
    """Entered before the create is sent, taken back when the work turns out free (reused, refused,
    failed unbilled), settled at what the finished task billed. Only what this charge entered is
    ever taken back."""

    def __init__(self, charges: RunCharges, key: str, estimate: CostEstimate, label: str) -> None:
        self.charges, self.key, self.estimate, self.label = charges, key, estimate, label
        self.held = False  # this charge entered the work in the run's ledger
        self._in_daily = False  # ... and in the account's day

    async def commit(self, *, check: bool = True) -> None:
        """Enter the work, or raise ``SkippedForBudgetError``. ``check=False`` records what was
        already paid, whatever the budgets say."""
        if self.held:
            return
        if not self.charges.ledger.commit(self.key, self.estimate, label=self.label, check=check):
            return  # entered already, by a twin of this pair
        self.held = True
        daily = self.charges.daily
        if daily is None:
            return
        try:
            self._in_daily = await daily.commit(
                self.charges.endpoint, self.key, self.estimate, label=self.label, flow_run_id=current_flow_run_id(), check=check
            )
        except BaseException:
            self.charges.ledger.release(self.key)
            self.held = False
            raise

    async def release(self) -> None:
        """The work costs this run nothing after all."""
        if not self.held:
            return
        self.charges.ledger.release(self.key)
        self.held = False
        if self._in_daily and self.charges.daily is not None:
            self._in_daily = False
            await self.charges.daily.release(self.charges.endpoint, self.key)

    def settle(self, billed: CostEstimate) -> None:
        """Replace the estimate by the bill (a task adopted from an earlier run was paid by that run)."""
        if self.held:
            self.charges.ledger.settle(self.key, billed)
