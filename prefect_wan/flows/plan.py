"""The plan of a run, made before paying: every pair preflighted, what it would cost, nothing sent."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from enum import Enum
from typing import Any, Mapping, Optional, Sequence, Union

from pydantic import BaseModel, Field

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.record import CostEstimate
from prefect_wan.archive.store import find_archived
from prefect_wan.blocks.coordination import WanCoordination
from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.errors import PreflightError
from prefect_wan.flows.drafts import Review, draft_of
from prefect_wan.flows.models import GenerationOptions, KeyframePair
from prefect_wan.flows.prepared import PreparedPair
from prefect_wan.flows.setup import RunSetup
from prefect_wan.ledger.journal import SubmissionJournal
from prefect_wan.spend.budget import Budget, SkippedForBudgetError, SpendLedger

# Frames read at once while planning: enough to hide fsspec latency, few enough for memory.
PLAN_CONCURRENCY = 8


class PlannedAction(str, Enum):
    ARCHIVED = "archived"  # in the archive already: nothing to pay or download
    REUSE = "reuse"  # a live task is recorded for this work: the run adopts it, nothing to pay
    SUBMIT = "submit"  # would be submitted and paid for
    OVER_BUDGET = "over budget"  # would be submitted, but the budget does not cover it
    REFUSED = "refused"  # breaks a rule of the service; would never be sent


class PlannedPair(BaseModel):
    label: str
    action: PlannedAction
    model: Optional[str] = None
    resolution: Optional[str] = None
    seconds: Optional[float] = Field(default=None, description="Billed seconds if submitted (the longest for a smart duration).")
    output_size: Optional[tuple[int, int]] = None
    cost: CostEstimate = Field(default_factory=CostEstimate, description="What submitting it costs at list price.")
    task_id: Optional[str] = Field(default=None, description="The archived or recorded task, for archived and reuse.")
    fingerprint: Optional[str] = None
    detail: str = ""


class RunPlan(BaseModel):
    """What a run would do and pay, pair by pair, in manifest order."""

    pairs: list[PlannedPair]
    budget: Optional[Budget] = None
    reviewed: bool = Field(default=False, description="Each pair is planned as its draft and its final.")

    @property
    def to_pay(self) -> dict[str, float]:
        """Estimated spend per currency of the pairs that would be submitted."""
        sums: dict[str, float] = defaultdict(float)
        for pair in self.pairs:
            if pair.action is PlannedAction.SUBMIT and pair.cost.amount is not None and pair.cost.currency:
                sums[pair.cost.currency] += pair.cost.amount
        return {currency: round(amount, 6) for currency, amount in sums.items()}

    @property
    def unpriced(self) -> int:
        return sum(1 for p in self.pairs if p.action is PlannedAction.SUBMIT and p.cost.amount is None)

    @property
    def unconfirmed(self) -> bool:
        return any(p.action is PlannedAction.SUBMIT and p.cost.amount is not None and not p.cost.confirmed for p in self.pairs)

    @property
    def summary(self) -> str:
        counts = Counter(p.action for p in self.pairs)
        parts = [f"{counts[a]} {a.value if a is not PlannedAction.SUBMIT else 'to submit'}" for a in PlannedAction if counts[a]]
        # An unknown price is never a zero: a total says how many pairs it leaves out.
        total = " + ".join(f"{amount:g} {currency}" for currency, amount in self.to_pay.items()) or ("unknown" if self.unpriced else "0")
        text = f"{len(self.pairs)} {'drafts and finals' if self.reviewed else 'pairs'}: {', '.join(parts)}; estimated cost {total}"
        if self.unconfirmed:
            text += " (includes unconfirmed prices)"
        if self.unpriced:
            text += f"; {self.unpriced} pair(s) with no published price left out" if self.to_pay else f" ({self.unpriced} pair(s) with no published price)"
        if self.budget is not None:
            text += f"; max_cost {self.budget}"
        return text

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per pair, for a table artifact, a terminal table or JSON."""
        return [
            {
                "label": p.label,
                "action": p.action.value,
                "model": p.model or "",
                "resolution": p.resolution or "",
                "size": f"{p.output_size[0]}x{p.output_size[1]}" if p.output_size else "",
                "seconds": p.seconds if p.seconds is not None else "",
                "cost": cost_text(p.cost) if p.action in (PlannedAction.SUBMIT, PlannedAction.OVER_BUDGET) else "0",
                "task_id": p.task_id or "",
                "detail": p.detail,
            }
            for p in self.pairs
        ]


def cost_text(cost: CostEstimate) -> str:
    if cost.amount is None:
        return "unknown"
    return f"{cost.amount:g} {cost.currency}" + ("" if cost.confirmed else " (unconfirmed price)")


async def plan_run(
    setup: RunSetup,
    items: Sequence[Union[KeyframePair, PreparedPair]],
    review: Optional[Review] = None,
    drafts: Optional[Mapping[str, PreparedPair]] = None,
) -> RunPlan:
    """Say what the run would do with each pair (preparing those not prepared yet). Sends nothing
    to DashScope. Budget is allotted in order: the first pairs to submit are covered, later ones
    marked over budget. With ``review``, each pair is its draft and its final, covered together or
    not at all (a draft whose final cannot be paid for is money lost); ``drafts`` are the drafts
    the run made already, by label (made here otherwise)."""
    gate = asyncio.Semaphore(PLAN_CONCURRENCY)
    journal = setup.coordination.journal()

    async def inspect(item: Union[KeyframePair, PreparedPair]) -> list[PlannedPair]:
        label = item.label if isinstance(item, PreparedPair) else item.display_label()
        async with gate:
            try:
                final = item if isinstance(item, PreparedPair) else await setup.prepare(item)
                if review is not None:
                    draft = drafts[label] if drafts is not None and label in drafts else draft_of(review, final, setup.options)
                    works = [draft, final]
                else:
                    works = [final]
            except PreflightError as refused:
                return [PlannedPair(label=label, action=PlannedAction.REFUSED, detail="; ".join(map(str, refused.violations)))]
            planned = [await _planned(work, setup, journal) for work in works]
        if review is not None:
            planned[0].detail = planned[0].detail or "draft: a retake costs as much again"
            planned[1].detail = planned[1].detail or "final, if the draft is approved"
        return planned

    groups = list(await asyncio.gather(*(inspect(item) for item in items)))
    ledger = SpendLedger(setup.budget)
    for group in groups:
        to_submit = [pair for pair in group if pair.action is PlannedAction.SUBMIT]
        try:
            for pair in to_submit:
                ledger.commit(pair.fingerprint or pair.label, pair.cost, label=pair.label)
        except SkippedForBudgetError as skipped:
            for pair in to_submit:
                ledger.release(pair.fingerprint or pair.label)
                pair.action, pair.detail = PlannedAction.OVER_BUDGET, skipped.reason
    return RunPlan(pairs=[pair for group in groups for pair in group], budget=setup.budget, reviewed=review is not None)


async def plan_pairs(
    pairs: list[KeyframePair],
    options: GenerationOptions,
    credentials: WanCredentials,
    destination: ArchiveDestination,
    *,
    budget: Optional[Budget] = None,
    force: bool = False,
    frame_storage_options: Optional[dict[str, Any]] = None,
    coordination: Optional[WanCoordination] = None,
    review: Optional[Review] = None,
) -> RunPlan:
    """Preflight every pair and say what a run would do with it, outside a flow. Sends nothing."""
    setup = RunSetup(
        credentials=credentials,
        destination=destination,
        coordination=coordination or WanCoordination(),
        budget=budget,
        options=options,
        force=force,
        poll=None,
        dry_run=True,
        frame_storage_options=frame_storage_options,
    )
    return await plan_run(setup, pairs, review)


async def _planned(pair: PreparedPair, setup: RunSetup, journal: SubmissionJournal) -> PlannedPair:
    prepared, cost = pair.prepared, pair.cost
    planned = PlannedPair(
        label=pair.label,
        action=PlannedAction.SUBMIT,
        model=prepared.spec.name,
        resolution=prepared.parameters.resolution or prepared.spec.default_resolution,
        seconds=cost.billed_seconds,
        output_size=prepared.output_size,
        cost=cost,
        fingerprint=pair.fingerprint,
        detail="smart duration: priced at the longest" if cost.note.startswith("smart") else "",
    )
    if setup.force:
        planned.detail = "force: generated again even if archived"
        return planned
    endpoint = setup.credentials.endpoint
    if (archived := await find_archived(setup.destination, pair.fingerprint, endpoint)) is not None:
        return planned.model_copy(update={"action": PlannedAction.ARCHIVED, "task_id": archived.task_id, "detail": archived.video.url})
    if (recorded := await journal.recorded_task(setup.credentials.submission_key(pair.fingerprint))) is not None:
        return planned.model_copy(
            update={
                "action": PlannedAction.REUSE,
                "task_id": recorded.task_id,
                "detail": f"submitted {recorded.submitted_at:%Y-%m-%d %H:%M} UTC",
            }
        )
    return planned
