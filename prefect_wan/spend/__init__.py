"""Spend control: what a run will cost, what it may spend, and stopping work that would still bill."""

from prefect_wan.spend.budget import Budget, SkippedForBudgetError, SpendLedger
from prefect_wan.spend.pricing import estimate_cost, estimate_request_cost

__all__ = ["Budget", "SkippedForBudgetError", "SpendLedger", "estimate_cost", "estimate_request_cost"]
