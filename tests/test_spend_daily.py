"""The account's daily budget (spend/daily.py): shared by every run that names the same records,
one entry per piece of work, refusals that name the budget, and nothing taken back twice."""

from __future__ import annotations

import asyncio

import pytest

from prefect_wan.archive.record import CostEstimate
from prefect_wan.ledger.journal import SubmissionJournal
from prefect_wan.ledger.locks import SubmitLockManager
from prefect_wan.spend import Budget, DailyBudget, PairCharge, RunCharges, SkippedForBudgetError, SpendLedger

PAIR = CostEstimate(amount=0.4, currency="USD")


def daily(tmp_path, machine: str) -> DailyBudget:
    # Two "machines": their own lock managers over one records store, as with a shared mount.
    return DailyBudget(Budget(amount=1, currency="USD"), SubmissionJournal(str(tmp_path / "records")), SubmitLockManager(tmp_path / "locks" / machine))


async def test_two_machines_share_one_day(tmp_path):
    one, two = daily(tmp_path, "one"), daily(tmp_path, "two")
    assert await one.commit("acct", "pair-1", PAIR, label="p1", flow_run_id="r1")
    assert await two.commit("acct", "pair-2", PAIR, label="p2", flow_run_id="r2")
    assert not await two.commit("acct", "pair-1", PAIR, label="p1 again", flow_run_id="r2")  # the same work counts once
    with pytest.raises(SkippedForBudgetError, match="past its daily budget of 1 USD"):
        await one.commit("acct", "pair-3", PAIR, label="p3", flow_run_id="r1")
    assert await one.commit("other-account", "pair-3", PAIR, label="p3", flow_run_id="r1")  # budgets are per account
    await two.release("acct", "pair-2")
    assert await one.commit("acct", "pair-3", PAIR, label="p3", flow_run_id="r1")
    today = await one.spent_today("acct")
    assert sorted(today.entries) == ["pair-1", "pair-3"] and today.committed("USD") == pytest.approx(0.8)


async def test_concurrent_commits_under_one_lock_never_overshoot(tmp_path):
    budgets = [daily(tmp_path, "one") for _ in range(4)]  # four processes of one machine: one lock directory

    async def commit(i: int) -> bool:
        try:
            return await budgets[i % 4].commit("acct", f"pair-{i}", PAIR, label=f"p{i}", flow_run_id=None)
        except SkippedForBudgetError:
            return False

    entered = await asyncio.gather(*(commit(i) for i in range(8)))
    assert sum(entered) == 2 and (await budgets[0].spent_today("acct")).committed("USD") == pytest.approx(0.8)


async def test_a_pair_charge_takes_back_only_what_it_entered(tmp_path):
    charges = RunCharges("acct", SpendLedger(Budget(amount=2, currency="USD")), daily(tmp_path, "one"))
    first, twin = charges.pair("pair-1", PAIR, label="a"), charges.pair("pair-1", PAIR, label="a twin")
    await first.commit()
    await twin.commit()
    assert first.held and not twin.held  # identical work shares one task and one charge
    await twin.release()
    assert charges.ledger.committed("USD") == pytest.approx(0.4)
    first.settle(CostEstimate(amount=0.3, currency="USD"))
    assert charges.ledger.totals(billed_only=True) == {"USD": 0.3}
    await first.release()
    await first.release()
    assert charges.ledger.committed("USD") == 0 and not (await charges.daily.spent_today("acct")).entries


async def test_a_charge_refused_by_the_day_leaves_the_run_ledger_as_it_was(tmp_path):
    full = daily(tmp_path, "one")
    await full.commit("acct", "earlier", CostEstimate(amount=0.9, currency="USD"), label="earlier", flow_run_id=None)
    charges = RunCharges("acct", SpendLedger(), full)
    charge: PairCharge = charges.pair("pair-1", PAIR, label="late")
    with pytest.raises(SkippedForBudgetError):
        await charge.commit()
    assert not charge.held and charges.ledger.committed("USD") == 0
    await charge.commit(check=False)  # already paid: entered whatever the budgets say
    assert charge.held and (await full.spent_today("acct")).committed("USD") == pytest.approx(1.3)
