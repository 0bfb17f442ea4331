"""Money only: what work costs (list prices), what a run may spend, and the account's daily budget."""

from prefect_wan.spend.budget import Budget, SkippedForBudgetError, SpendLedger
from prefect_wan.spend.charges import PairCharge, RunCharges
from prefect_wan.spend.daily import DailyBudget
from prefect_wan.spend.pricing import estimate_cost, estimate_request_cost

__all__ = [
    "Budget",
    "DailyBudget",
    "PairCharge",
    "RunCharges",
    "SkippedForBudgetError",
    "SpendLedger",
    "estimate_cost",
    "estimate_request_cost",
]
