"""What a usable shot costs: retakes of finals against review of cheap drafts, side by side.

For each reject rate (20, 40, 60 %) the emulator renders exactly that share of its renders with
a defect (a frozen picture, evenly spaced), and two runs of the same pairs go through the real flows:

- finals only: every pair at the final tier under ``QualityGate(retakes=2)``, which takes a
  failing shot again (3 takes at most);
- draft review: ``Review(draft_resolution=...)`` with the quality gate as the reviewer (approve the
  passing drafts, retake the failing ones, 3 rounds at most); the approved pairs' finals render
  clean, as a draft that predicts its final would make them.

The takes each run made are counted at the emulator and priced, per model, with the catalog's
Beijing list prices (5 s clips): the cost per approved (usable) shot, and the break-even reject
rate, the draft/final price ratio (above it, drafting is cheaper). The shot checks' own cost is
``bench/shots.py``'s.

python bench/review.py [--pairs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-wan-bench-")

EXAMPLES = Path(__file__).resolve().parent.parent / "prefect_wan" / "examples"
RATES = (0.2, 0.4, 0.6)
SECONDS = 5
# Where the emulator's fast clock makes a task: short, so the bench is about counts, not waiting.
TIMING = {"pending_seconds": 0.05, "running_seconds": 0.2, "submit_rps": 1000.0, "max_running": 8}


@dataclass
class Takes:
    """What one run made: renders at the draft tier, at the final tier, and shots approved."""

    drafts: int
    finals: int
    approved: int
    defective: int  # renders the emulator took with a defect

    @property
    def rejected(self) -> float:
        """The reject rate the dice gave this run: defective renders of those taken with defects armed
        (a draft review's finals render clean)."""
        return self.defective / max(1, self.drafts or self.finals)


def _pairs(count: int, tag: str):
    from prefect_wan.flows import KeyframePair

    return [
        KeyframePair(first_frame=str(EXAMPLES / "first.png"), last_frame=str(EXAMPLES / "last.png"), prompt=f"{tag} shot {i}", label=f"{tag}-{i}", seed=i + 1)
        for i in range(count)
    ]


def _renders(emu, size: int) -> int:
    return sum(1 for task in emu.state.tasks.values() if max(task.size) == size)


def _defective(emu) -> int:
    return emu.state.faults.injected["render:freeze"]


async def _batch(emu, count: int, tag: str, *, quality=None, review=None):
    """The batch flow over ``count`` fresh pairs at 1080P, with a quality gate or a review."""
    from prefect_wan.client.polling import PollSchedule
    from prefect_wan.flows import GenerationOptions, keyframes_batch

    with tempfile.TemporaryDirectory() as archive:
        return await keyframes_batch(
            pairs=_pairs(count, tag),
            options=GenerationOptions(resolution="1080P"),
            credentials=emu.credentials(),
            destination=archive,
            poll=PollSchedule(initial_delay=0.05, interval=0.1, max_interval=0.3),
            quality=quality,
            review=review,
            max_in_flight=count,
        )


def _defects(emu, rate: float) -> None:
    emu.reset()
    emu.inject(op="render", action="freeze", fraction=rate, even=True, count=None)


async def finals_only(emu, count: int, rate: float) -> Takes:
    from prefect_wan.flows import QualityGate

    _defects(emu, rate)
    result = await _batch(emu, count, f"fo{int(rate * 100)}", quality=QualityGate(retakes=2))
    approved = sum(1 for v in result.videos if v.record.checks is not None and v.record.checks.passed)
    return Takes(drafts=0, finals=_renders(emu, 1920), approved=approved, defective=_defective(emu))


async def draft_review(emu, count: int, rate: float) -> Takes:
    from prefect_wan.flows.drafts import Review
    from prefect_wan.flows.review import ReviewRequest, answer_review, reviewing

    review = Review(draft_resolution="480P", max_rounds=3)

    async def gate_as_reviewer(request: ReviewRequest) -> None:
        passing = [d.label for d in request.drafts if d.passed]
        failing = [d.label for d in request.drafts if not d.passed]
        last = request.round == review.max_rounds
        if last or not failing:
            emu.clear_faults()  # the finals of approved drafts render as their drafts did: clean
        await answer_review(request, request.answer(approve=passing, drop=failing) if last else request.answer(approve=passing, retake=failing))

    _defects(emu, rate)
    with reviewing(gate_as_reviewer):
        result = await _batch(emu, count, f"dr{int(rate * 100)}", review=review)
    return Takes(drafts=_renders(emu, 832), finals=_renders(emu, 1920), approved=len(result.videos), defective=_defective(emu))


@dataclass
class Tiers:
    model: str
    final: str
    final_price: float
    draft: str
    draft_price: float
    currency: str


def _tiers() -> list[Tiers]:
    """Each model with a Beijing list price: its top tier as the final, its lowest as the draft
    (wan2.2-kf2v-flash at 480P for a model with one tier)."""
    from prefect_wan.client.catalog import MODELS
    from prefect_wan.client.regions import Region

    flash = MODELS["wan2.2-kf2v-flash"].price(Region.BEIJING, "480P")
    assert flash is not None
    rows = []
    for name, spec in MODELS.items():
        priced = [(tier, p) for tier in ("480P", "720P", "1080P") if (p := spec.price(Region.BEIJING, tier)) is not None]
        if not priced or "-20" in name:  # dated snapshots price as their model
            continue
        (low, low_price), (top, top_price) = priced[0], priced[-1]
        if low == top:
            rows.append(Tiers(name, top, top_price.amount, "480P (wan2.2-kf2v-flash)", flash.amount, top_price.currency))
        else:
            rows.append(Tiers(name, top, top_price.amount, low, low_price.amount, top_price.currency))
    return rows


def main() -> None:
    from prefect_wan.emulator import run_emulator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    arguments = parser.parse_args()
    pairs = arguments.pairs

    measured: dict[float, tuple[Takes, Takes]] = {}
    with run_emulator(region="beijing", **TIMING) as emu:
        for rate in RATES:
            measured[rate] = (asyncio.run(finals_only(emu, pairs, rate)), asyncio.run(draft_review(emu, pairs, rate)))

    print(f"Takes at the emulator, {pairs} pairs, defects injected at each reject rate (finals only: 3 takes at most; drafts: 3 rounds at most)")
    print(f"{'reject rate':>11}  {'finals only: finals, approved (rejected)':>42}  {'draft review: drafts, finals, approved (rejected)':>52}")
    for rate, (only, reviewed) in measured.items():
        print(
            f"{rate:>11.0%}  {only.finals:>22}, {only.approved:>8} ({only.rejected:>4.0%})"
            f"  {reviewed.drafts:>26}, {reviewed.finals:>5}, {reviewed.approved:>8} ({reviewed.rejected:>4.0%})"
        )
    print()
    print(f"Cost per approved shot ({SECONDS} s clips, Beijing list prices); break-even reject rate = draft price / final price")
    header = f"{'model':<22} {'final':<6} {'draft':<26} " + " ".join(f"{f'{r:.0%} only':>10} {f'{r:.0%} draft':>10}" for r in RATES) + f" {'break-even':>10}"
    print(header)
    for tiers in _tiers():
        cells = []
        for rate in RATES:
            only, reviewed = measured[rate]
            only_cost = only.finals * tiers.final_price * SECONDS / max(only.approved, 1)
            draft_cost = (reviewed.drafts * tiers.draft_price + reviewed.finals * tiers.final_price) * SECONDS / max(reviewed.approved, 1)
            cells.append(f"{only_cost:>10.2f} {draft_cost:>10.2f}")
        print(
            f"{tiers.model:<22} {tiers.final:<6} {tiers.draft:<26} " + " ".join(cells) + f" {tiers.draft_price / tiers.final_price:>10.0%}  ({tiers.currency})"
        )
    print()


if __name__ == "__main__":
    main()
