"""Spend control: plans that send nothing, budgets that hold, costs that reach sidecars and summaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from prefect_wan.archive.record import CostEstimate
from prefect_wan.client.errors import PreflightError
from prefect_wan.client.polling import PollSchedule
from prefect_wan.flows import BatchResult, GenerationOptions, KeyframePair, keyframes_batch, keyframes_storyboard, keyframes_to_video
from prefect_wan.flows.plan import PlannedAction, RunPlan, plan_pairs
from prefect_wan.spend import Budget, SkippedForBudgetError, SpendLedger
from tests.test_flows import FIRST, LAST, read_artifacts

POLL = PollSchedule(initial_delay=0.05, interval=0.1, max_interval=0.3, jitter=0.1, deadline=120)
# 0.1 USD per second in Singapore, 5 s per video: 0.5 USD a pair.
PRICED = dict(model="wan2.1-kf2v-plus", resolution="720P")
PAIR_COST = 0.5


def pairs(count: int, seed: int) -> list[KeyframePair]:
    return [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"shot {i}", seed=seed + i, label=f"shot-{i}") for i in range(count)]


def test_a_budget_is_an_amount_and_its_currency():
    assert Budget.coerce("12.5 CNY") == Budget(amount=12.5, currency="CNY")
    assert Budget.coerce("usd 3") == Budget(amount=3, currency="USD")
    assert Budget.coerce({"amount": 2, "currency": "usd"}) == Budget(amount=2, currency="USD")
    assert Budget.coerce(None) is None
    for bad in ("12.5", "CNY", "-1 CNY", "0 USD", "ten CNY", "USD 3 CNY"):
        with pytest.raises(PreflightError, match=r"max_cost=.*amount and its currency"):
            Budget.coerce(bad)


def test_a_run_where_its_model_has_no_price_says_where_it_has_one():
    from prefect_wan.spend.pricing import unpriced_notice

    assert unpriced_notice("wan2.2-kf2v-flash", "singapore") == (
        "wan2.2-kf2v-flash has no published price in singapore (beijing has one): its costs are not estimated"
    )
    assert unpriced_notice("wan2.7-i2v", "virginia").startswith("wan2.7-i2v has no published price in virginia (beijing and singapore have one)")
    assert "(no region has one)" in unpriced_notice("wan9-unknown", "beijing")


def test_the_ledger_never_commits_past_the_budget():
    ledger = SpendLedger(Budget(amount=1.0, currency="USD"))
    half = CostEstimate(amount=0.5, currency="USD", confirmed=True)
    assert ledger.commit("a", half) and ledger.commit("b", half)
    assert not ledger.commit("a", half)  # the same work is one charge
    with pytest.raises(SkippedForBudgetError, match="c: skipped for budget: .*1.5 USD, past max_cost 1 USD"):
        ledger.commit("c", half, label="c")
    with pytest.raises(SkippedForBudgetError, match="priced in CNY, the budget is in USD"):
        ledger.commit("d", CostEstimate(amount=0.1, currency="CNY"))
    with pytest.raises(SkippedForBudgetError, match="cannot be estimated"):
        ledger.commit("e", CostEstimate())
    ledger.release("b")  # reused after all
    assert ledger.commit("c", half)
    ledger.settle("a", CostEstimate(amount=0.4, currency="USD"))
    assert ledger.totals() == {"USD": 0.9} and ledger.totals(billed_only=True) == {"USD": 0.4}
    assert ledger.commit("f", CostEstimate(amount=5, currency="USD"), check=False)  # paid already: recorded anyway


async def test_plan_sends_nothing_and_says_what_each_pair_would_cost(prefect_harness, emulator, tmp_path):
    todo = pairs(10, seed=7100)
    options = GenerationOptions(**PRICED)
    common = dict(options=options, credentials=emulator.credentials(), destination=str(tmp_path), poll=POLL)
    await keyframes_batch(pairs=todo[:3], **common)
    emulator.reset()

    plan = await keyframes_batch(pairs=todo, dry_run=True, **common)

    assert isinstance(plan, RunPlan)
    assert emulator.counters().api_requests == 0 and emulator.counters().downloads == 0
    assert [p.action for p in plan.pairs] == [PlannedAction.ARCHIVED] * 3 + [PlannedAction.SUBMIT] * 7
    assert plan.to_pay == {"USD": pytest.approx(7 * PAIR_COST)}
    assert plan.summary.startswith("10 pairs: 3 archived, 7 to submit; estimated cost 3.5 USD")
    assert all(p.task_id for p in plan.pairs[:3]) and all(p.output_size for p in plan.pairs)
    artifact = (await read_artifacts())["wan-plan"]
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert [r["action"] for r in rows].count("archived") == 3 and "3.5 USD" in artifact.description


async def test_plan_flags_unconfirmed_prices_refusals_and_live_tasks(prefect_harness, emulator, tmp_path):
    credentials = emulator.credentials()
    from prefect_wan.archive.destination import ArchiveDestination

    todo = [
        KeyframePair(first_frame=FIRST, last_frame=LAST, prompt="a", seed=7201, label="derived", model="wan2.7-i2v", resolution="720P"),
        KeyframePair(first_frame=FIRST, last_frame=LAST, prompt="b", seed=-5, label="bad-seed"),
        KeyframePair(first_frame=FIRST, last_frame=LAST, prompt="c", seed=7202, label="unpriced"),
        KeyframePair(first_frame=FIRST, last_frame=LAST, prompt="d", seed=7203, label="smart", model="wan3.0-video", duration=-1, resolution="480P"),
    ]
    plan = await plan_pairs(todo, GenerationOptions(), credentials, ArchiveDestination.coerce(str(tmp_path)), budget=Budget(amount=100, currency="USD"))
    derived, bad, unpriced, smart = plan.pairs
    assert derived.action is PlannedAction.SUBMIT and derived.cost.amount == pytest.approx(0.5) and not derived.cost.confirmed
    assert "(unconfirmed price)" in plan.rows()[0]["cost"] and "includes unconfirmed prices" in plan.summary
    assert bad.action is PlannedAction.REFUSED and "seed=-5" in bad.detail
    assert unpriced.action is PlannedAction.OVER_BUDGET and "cannot be estimated" in unpriced.detail
    assert smart.seconds == 30 and smart.action is PlannedAction.OVER_BUDGET and "priced in CNY" in smart.detail
    assert emulator.counters().api_requests == 0

    # A live submission recorded for a pair is reused, and costs nothing.
    submitted = await keyframes_to_video(
        FIRST, LAST, prompt="c", options=GenerationOptions(seed=7202), credentials=credentials, destination=str(tmp_path / "elsewhere"), poll=POLL
    )
    again = await plan_pairs([todo[2]], GenerationOptions(), credentials, ArchiveDestination.coerce(str(tmp_path)))
    assert again.pairs[0].action is PlannedAction.REUSE and again.pairs[0].task_id == submitted.task_id


async def test_max_cost_submits_what_it_covers_and_reports_the_rest(prefect_harness, emulator, tmp_path):
    common = dict(pairs=pairs(10, seed=7300), options=GenerationOptions(**PRICED), credentials=emulator.credentials(), destination=str(tmp_path), poll=POLL)

    state = await keyframes_batch(**common, max_cost="2 USD", return_state=True)

    result = await state.aresult()
    assert isinstance(result, BatchResult)
    assert emulator.counters().submissions_accepted == 4
    assert len(result.videos) == 4 and len(result.skipped) == 6 and not result.failures
    assert state.is_completed() and "6 skipped for budget" in state.message
    assert all("past max_cost 2 USD" in s.reason and s.estimated_cost == PAIR_COST for s in result.skipped)
    # Billed cost, from the service's usage, in every sidecar and in the run summary.
    assert all(v.record.cost.amount == PAIR_COST and v.record.cost.billed_seconds == 5 for v in result.videos)
    assert result.billed == {"USD": 2.0} and result.committed == {"USD": 2.0}
    artifacts = await read_artifacts()
    assert "6 skipped for budget" in artifacts["wan-batch"].description and "spent 2 USD" in artifacts["wan-batch"].description
    progress = artifacts["wan-batch-progress"]
    assert progress.data == 100.0 and progress.description.startswith("4/10 done, 0 generating, 0 queued, 0 failed, 6 skipped")

    # Archived pairs cost nothing: the same budget covers four more.
    again = await keyframes_batch(**common, max_cost="2 USD")
    assert isinstance(again, BatchResult)
    assert sum(v.reused for v in again.videos) == 4 and len(again.videos) == 8 and len(again.skipped) == 2
    assert emulator.counters().submissions_accepted == 8


async def test_a_pair_over_budget_is_not_sent(prefect_harness, emulator, tmp_path):
    with pytest.raises(SkippedForBudgetError, match="past max_cost 0.4 USD"):
        await keyframes_to_video(
            FIRST,
            LAST,
            prompt="x",
            options=GenerationOptions(**PRICED, seed=7401),
            credentials=emulator.credentials(),
            destination=str(tmp_path),
            poll=POLL,
            max_cost="0.4 USD",
        )
    with pytest.raises(PreflightError, match="max_cost='lots'"):
        await keyframes_to_video(
            FIRST, LAST, options=GenerationOptions(**PRICED), credentials=emulator.credentials(), destination=str(tmp_path), max_cost="lots"
        )
    assert emulator.counters().submissions_accepted == 0


async def test_a_storyboard_the_budget_cannot_cover_is_refused_whole(prefect_harness, emulator, tmp_path):
    with pytest.raises(SkippedForBudgetError, match="1 of its 2 transitions are not covered"):
        await keyframes_storyboard(
            [FIRST, LAST, FIRST],
            prompts="x",
            options=GenerationOptions(**PRICED, seed=7501),
            label="tight",
            credentials=emulator.credentials(),
            destination=str(tmp_path),
            poll=POLL,
            max_cost="0.6 USD",
        )
    assert emulator.counters().api_requests == 0


def test_the_plan_command_prints_the_table_and_json(prefect_harness, emulator, tmp_path):
    from prefect.settings import PREFECT_API_URL

    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"pairs": [p.model_dump(exclude_none=True) for p in pairs(3, seed=7600)]}))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "200"}
    base = [
        sys.executable,
        "-m",
        "prefect_wan.cli",
        "plan",
        str(manifest),
        "--region",
        "singapore",
        "--base-url",
        emulator.base_url,
        "--model",
        PRICED["model"],
        "--resolution",
        PRICED["resolution"],
        "--dest",
        str(tmp_path / "out"),
    ]
    table = subprocess.run(base + ["--max-cost", "1 USD"], env=env, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr[-2000:]
    assert "3 pairs: 2 to submit, 1 over budget; estimated cost 1 USD; max_cost 1 USD" in " ".join(table.stdout.split())
    as_json = subprocess.run(base + ["--json"], env=env, capture_output=True, text=True, timeout=120)
    plan = RunPlan.model_validate_json(as_json.stdout)
    assert plan.to_pay == {"USD": 1.5} and emulator.counters().api_requests == 0
    refused = subprocess.run(base + ["--max-cost", "1.5"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "max_cost='1.5'" in refused.stderr


async def test_a_daily_budget_holds_across_runs(prefect_harness, emulator, tmp_path):
    from prefect_wan.blocks import WanCoordination
    from prefect_wan.spend.daily import DailyBudget

    coordination = WanCoordination(submissions_url=str(tmp_path / "shared"), daily_budget="1 USD")
    common = dict(
        options=GenerationOptions(**PRICED), credentials=emulator.credentials(), destination=str(tmp_path / "archive"), poll=POLL, coordination=coordination
    )

    first = await keyframes_batch(pairs=pairs(2, seed=7700), **common)
    second = await keyframes_batch(pairs=pairs(2, seed=7710), **common)
    again = await keyframes_batch(pairs=pairs(2, seed=7700), **common)

    assert isinstance(first, BatchResult) and isinstance(second, BatchResult) and isinstance(again, BatchResult)
    assert len(first.videos) == 2 and not first.skipped
    assert not second.videos and all("past its daily budget of 1 USD" in s.reason for s in second.skipped) and len(second.skipped) == 2
    assert all(v.reused for v in again.videos) and len(again.videos) == 2  # archived work costs nothing, even over budget
    assert emulator.counters().submissions_accepted == 2
    daily = DailyBudget(Budget(amount=1, currency="USD"), coordination.journal(), coordination.lock_manager())
    today = await daily.spent_today(emulator.credentials().endpoint)
    assert today.committed("USD") == pytest.approx(1.0) and len(today.entries) == 2
    with pytest.raises(ValueError, match="daily_budget='lots'"):
        WanCoordination(daily_budget="lots")
