"""Budgets: the most a run may commit, and the ledger that holds each submission to it."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from prefect_wan.archive.record import CostEstimate
from prefect_wan.client.errors import PreflightError, PreflightViolation, WanError

_BUDGET_TEXT = re.compile(r"^\s*(?:(?P<pre>[A-Za-z]{3})\s*)?(?P<amount>\d+(?:\.\d+)?)\s*(?P<post>[A-Za-z]{3})?\s*$")
# Float sums of prices (0.1 + 0.2...) must not refuse a pair that exactly fits.
_EPSILON = 1e-9


class Budget(BaseModel):
    """The most a run may spend, in one currency (list prices, as the catalog gives them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount: float = Field(gt=0, description="Largest committed spend of the run.")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="CNY or USD, as the model's price in its region.")

    def __str__(self) -> str:
        return f"{self.amount:g} {self.currency}"

    def refusal(self, estimate: CostEstimate, committed: float, *, spend: str, limit: str) -> Optional[str]:
        """Why ``estimate`` may not be added to ``committed`` (``spend``, held to ``limit``), or None."""
        if estimate.amount is None:
            return "its cost cannot be estimated (no published price for its model, region and resolution)"
        if estimate.currency != self.currency:
            return f"it is priced in {estimate.currency}, the budget is in {self.currency}"
        after = committed + estimate.amount
        if after > self.amount + _EPSILON:
            return f"its {estimate.amount:g} {estimate.currency} would take {spend} to {after:g} {estimate.currency}, past {limit}"
        return None

    @classmethod
    def coerce(cls, value: Union[Budget, str, dict[str, Any], None], field: str = "max_cost") -> Optional[Budget]:
        """A Budget from a flow parameter: ``"12.5 CNY"``, ``{"amount": 12.5, "currency": "CNY"}`` or a Budget."""
        if value is None or isinstance(value, Budget):
            return value
        if isinstance(value, dict):
            try:
                return cls.model_validate({**value, "currency": str(value.get("currency", "")).upper()})
            except ValueError as error:
                raise PreflightError([PreflightViolation(field, value, f"not a budget: {error}")]) from None
        match = _BUDGET_TEXT.match(str(value))
        currency = match and (match["pre"] or match["post"])
        if not match or not currency or (match["pre"] and match["post"]) or float(match["amount"]) <= 0:
            raise PreflightError([PreflightViolation(field, value, "give a positive amount and its currency, e.g. '12.5 CNY' or '3 USD'")])
        return cls(amount=float(match["amount"]), currency=currency.upper())


class SkippedForBudgetError(WanError):
    """Submitting this pair would take the run's committed spend past its budget; nothing was sent."""

    def __init__(self, label: str, reason: str, estimate: Optional[CostEstimate] = None) -> None:
        self.label, self.reason, self.estimate = label, reason, estimate
        super().__init__(f"{label}: skipped for budget: {reason}")


class SpendLedger:
    """What one run has committed: estimates of the tasks it submitted, replaced by what they billed.

    Reused and archived work costs nothing and is never entered. Every entry happens before the
    create call is sent, and without an ``await`` between the check and the entry, so concurrent
    pairs can never jointly overshoot the budget.
    """

    def __init__(self, budget: Optional[Budget] = None) -> None:
        self.budget = budget
        self._charges: dict[str, CostEstimate] = {}
        self._billed: set[str] = set()

    def commit(self, key: str, estimate: CostEstimate, *, label: Optional[str] = None, check: bool = True) -> bool:
        """Enter a submission about to be sent, or raise ``SkippedForBudgetError``.

        ``key`` names the work (its fingerprint: identical pairs share one task and one charge).
        ``check=False`` records spending that has already happened. True when this call entered it.
        """
        if key in self._charges:
            return False
        if check and self.budget is not None:
            reason = self.budget.refusal(estimate, self.committed(self.budget.currency), spend="the run's committed spend", limit=f"max_cost {self.budget}")
            if reason is not None:
                raise SkippedForBudgetError(label or key, reason, estimate)
        self._charges[key] = estimate
        return True

    def release(self, key: str) -> None:
        """The submission was not needed after all (reused), or provably did not bill."""
        self._charges.pop(key, None)
        self._billed.discard(key)

    def settle(self, key: str, billed: CostEstimate) -> None:
        """Replace the estimate by what the finished task billed (from ``usage``)."""
        if billed.amount is not None:
            self._charges[key] = billed
            self._billed.add(key)

    def committed(self, currency: str) -> float:
        return sum(c.amount or 0.0 for c in self._charges.values() if c.currency == currency)

    def totals(self, *, billed_only: bool = False) -> dict[str, float]:
        """Committed (or billed) spend per currency."""
        sums: dict[str, float] = defaultdict(float)
        for key, charge in self._charges.items():
            if charge.amount is not None and charge.currency and (key in self._billed or not billed_only):
                sums[charge.currency] += charge.amount
        return {currency: round(amount, 6) for currency, amount in sums.items()}

    def describe(self) -> str:
        """``0.6 CNY committed (0.4 billed) of max_cost 1 CNY``."""
        unknown = sum(1 for charge in self._charges.values() if charge.amount is None)
        if unknown and not self.totals():  # said once, at the start, by the command: here only that it is not counted
            return "not estimated" + (f", max_cost {self.budget}" if self.budget else "")
        committed = ", ".join(f"{a:g} {c}" for c, a in self.totals().items()) or "nothing"
        billed = ", ".join(f"{a:g} {c}" for c, a in self.totals(billed_only=True).items()) or "nothing"
        text = f"{committed} committed ({billed} billed)"
        if unknown and self.totals():
            text += f", {unknown} submission(s) with no published price left out"
        return text + (f" of max_cost {self.budget}" if self.budget else "")
