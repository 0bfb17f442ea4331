"""Review before the expensive render: every pair drafted cheaply, a person approves, retakes or
drops each draft in the Prefect UI (Prefect's run input), and only the approved pairs are rendered
at the final resolution, with the draft's seed and the prompt the service used for it.

Runs pause (``pause_flow_run``): the flow's process waits for the answer, for up to
``Review.timeout_seconds``. Suspending deployment runs (the process ends, the run starts again
from the top on resume, every draft reused from the archive) is not used yet: it is not verified on
this Prefect version (see README).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal, Optional

from prefect import get_run_logger
from prefect.events import emit_event
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, create_model

from prefect_wan.client.catalog import MODELS, lookup_model
from prefect_wan.client.errors import PreflightError, PreflightViolation
from prefect_wan.flows.models import ArchivedVideo, GenerationOptions, KeyframePair
from prefect_wan.flows.prepared import PreparedPair
from prefect_wan.flows.quality import take_seed
from prefect_wan.flows.reporting import checks_text, inline_image, price_text
from prefect_wan.flows.setup import RunSetup

WAITING_EVENT = "prefect_wan.review.waiting"
ANSWERED_EVENT = "prefect_wan.review.answered"
_TIERS = ("480P", "720P", "1080P")
# How often a paused run asks the API whether it was answered.
REVIEW_POLL_SECONDS = 2
Decision = Literal["approve", "retake", "drop"]


class Review(BaseModel):
    """Draft every pair cheaply, ask a person, render only what they approved."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    draft_resolution: str = Field(default="480P", description="Resolution of the drafts (cheaper than the final one).")
    draft_model: Optional[str] = Field(
        default=None, description="A cheaper model for the drafts, for a model with no cheaper tier (it predicts the final less well)."
    )
    auto_approve: Optional[Literal["passing"]] = Field(default=None, description="'passing': approve drafts whose checks pass without asking.")
    max_rounds: int = Field(default=3, ge=1, le=10, description="Rounds of review at most (a retaken draft comes back in the next round).")
    timeout_seconds: int = Field(default=24 * 3600, gt=0, description="How long a round waits for its answer.")
    on_timeout: Literal["approve_passing", "drop_all", "fail"] = Field(
        default="approve_passing", description="What an unanswered round does: approve the passing drafts, drop all, or fail the run."
    )


def _rank(resolution: Optional[str]) -> int:
    return _TIERS.index(resolution.upper()) if resolution and resolution.upper() in _TIERS else len(_TIERS)


def draft_options(review: Review, options: GenerationOptions, pair: KeyframePair) -> dict[str, Any]:
    """The fields that make a pair's draft; ``PreflightError`` when its model has no cheaper tier and no draft model is named."""
    final = pair.merged_options(options)
    if review.draft_model is not None:
        return {"model": review.draft_model, "resolution": review.draft_resolution}
    spec = lookup_model(final.model)
    final_resolution = final.resolution or (spec.default_resolution if spec else None)
    if spec is not None and (review.draft_resolution not in spec.resolutions or _rank(review.draft_resolution) >= _rank(final_resolution)):
        cheaper = sorted(name for name, s in MODELS.items() if any(_rank(r) < _rank(final_resolution) for r in s.resolutions))
        raise PreflightError(
            [
                PreflightViolation(
                    "review.draft_resolution",
                    review.draft_resolution,
                    f"{spec.name} has no tier below {final_resolution} to draft at (it takes {', '.join(spec.resolutions)}): name a "
                    f"draft_model, one of {', '.join(cheaper)}",
                )
            ]
        )
    return {"resolution": review.draft_resolution}


@dataclass
class DraftRound:
    """The drafts of one round and what was decided of each."""

    number: int
    drafts: dict[str, ArchivedVideo]
    decisions: dict[str, Decision] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)


def _field(label: str) -> str:
    return re.sub(r"\W+", "_", label).strip("_") or "pair"


def _thumbnail(video: ArchivedVideo) -> str:
    """The draft's poster as the UI can show it: presigned on object stores, a small inline JPEG elsewhere."""
    poster = video.record.poster
    if poster is None:
        return ""
    shown = video.poster_view_url or inline_image(poster.url)
    return f"![{video.label}]({shown})" if shown else f"[poster]({poster.url})"


def describe(round_: DraftRound, finals: dict[str, PreparedPair]) -> str:
    """The form's description: each draft with its poster, checks, cost, and what its final costs."""
    lines = [f"# Review, round {round_.number}", "", "For each draft: approve (render the final), retake (another seed, optionally a new prompt) or drop.", ""]
    for label, video in round_.drafts.items():
        final = finals[label]
        lines += [
            f"## {label}",
            _thumbnail(video),
            "",
            f"- checks: {checks_text(video.record.checks)}",
            f"- draft: {video.record.request.resolution}, {price_text(video.record.cost)}" + (" (reused)" if video.reused else ""),
            f"- final: {final.prepared.parameters.resolution}, {price_text(final.cost)}",
            f"- prompt used: {video.record.actual_prompt or video.record.request.prompt or '(none)'}",
            "",
        ]
    return "\n".join(lines)


def review_form(round_: DraftRound) -> type[RunInput]:
    """A run input with one choice (and an optional new prompt) per draft."""
    fields: dict[str, Any] = {}
    for label, video in round_.drafts.items():
        passing = video.record.checks is not None and video.record.checks.passed
        fields[_field(label)] = (Decision, Field(default="approve" if passing else "retake", title=label, description=checks_text(video.record.checks)))
        fields[f"{_field(label)}_prompt"] = (Optional[str], Field(default=None, title=f"{label}: new prompt for a retake"))
    return create_model(f"ReviewRound{round_.number}", __base__=RunInput, **fields)


async def ask(round_: DraftRound, review: Review, finals: dict[str, PreparedPair]) -> None:
    """Wait for a person's decisions on the drafts not decided yet (the run pauses)."""
    pending = DraftRound(round_.number, {k: v for k, v in round_.drafts.items() if k not in round_.decisions})
    if not pending.drafts:
        return
    form = review_form(pending)
    run_id = flow_run.get_id()
    ui = flow_run.ui_url
    emit_event(
        WAITING_EVENT,
        resource={"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.name": str(flow_run.get_name())},
        payload={"round": round_.number, "drafts": list(pending.drafts), "url": ui},
    )
    get_run_logger().warning("Review round %d: %d draft(s) wait for a decision at %s", round_.number, len(pending.drafts), ui or "the Prefect UI")
    try:
        answer = await pause_flow_run(  # type: ignore[misc]
            wait_for_input=form.with_initial_data(description=describe(pending, finals)),
            timeout=review.timeout_seconds,
            poll_interval=REVIEW_POLL_SECONDS,
            key=f"prefect-wan-review-{round_.number}",
        )
    except FlowPauseTimeout:
        if review.on_timeout == "fail":
            raise
        for label, video in pending.drafts.items():
            passing = review.on_timeout == "approve_passing" and video.record.checks is not None and video.record.checks.passed
            round_.decisions[label] = "approve" if passing else "drop"
        get_run_logger().warning("Review round %d timed out: %s", round_.number, review.on_timeout)
    else:
        values = answer.model_dump()
        for label in pending.drafts:
            round_.decisions[label] = values[_field(label)]
            if values.get(f"{_field(label)}_prompt"):
                round_.prompts[label] = values[f"{_field(label)}_prompt"]
    emit_event(
        ANSWERED_EVENT,
        resource={"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.name": str(flow_run.get_name())},
        payload={"round": round_.number, "decisions": {k: round_.decisions[k] for k in pending.drafts}},
    )


@dataclass
class ReviewOutcome:
    drafts: list[ArchivedVideo] = field(default_factory=list)
    finals: list[ArchivedVideo] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


async def review_then_render(
    review: Review,
    setup: RunSetup,
    pairs: list[KeyframePair],
    render: Callable[[PreparedPair, str], Awaitable[Optional[ArchivedVideo]]],
) -> ReviewOutcome:
    """Draft every pair, review in rounds, then render the approved pairs' finals.

    ``render(prepared, label)`` runs one prepared pair (a draft or a final of the pair ``label``)
    through the pipeline and returns its video, or None when it failed or was skipped for budget
    (the caller records which).
    """
    outcome = ReviewOutcome()
    finals = {p.display_label(): await setup.prepare(p) for p in pairs}
    drafting: dict[str, PreparedPair] = {}
    for pair in pairs:
        label = pair.display_label()
        seed = pair.seed if pair.seed is not None else take_seed(finals[label].fingerprint, 1)
        draft = pair.model_copy(update={**draft_options(review, setup.options, pair), "seed": seed, "label": f"{label}-draft"})
        drafting[label] = await setup.prepare(draft)
    approved: dict[str, ArchivedVideo] = {}
    for number in range(1, review.max_rounds + 1):
        videos = await asyncio.gather(*(render(d, label) for label, d in drafting.items()))
        round_ = DraftRound(number, {label: v for label, v in zip(drafting, videos) if v is not None})
        outcome.drafts += list(round_.drafts.values())
        if review.auto_approve == "passing":
            round_.decisions.update({k: "approve" for k, v in round_.drafts.items() if v.record.checks is not None and v.record.checks.passed})
        await ask(round_, review, finals)
        retaking: dict[str, PreparedPair] = {}
        for label, decision in round_.decisions.items():
            if decision == "approve":
                approved[label] = round_.drafts[label]
            elif decision == "drop":
                outcome.dropped.append(label)
            elif number < review.max_rounds:
                retaking[label] = await _retake(setup, drafting[label], round_.prompts.get(label), number + 1, label)
            else:
                get_run_logger().warning("%s: a retake was asked in the last round (max_rounds=%d); dropped", label, review.max_rounds)
                outcome.dropped.append(label)
        drafting = retaking
        if not drafting:
            break
    for label, chosen in approved.items():
        final = await setup.prepare(_final(finals[label].pair, chosen))
        video = await render(final, label)
        if video is not None:
            outcome.finals.append(video)
    return outcome


async def _retake(setup: RunSetup, draft: PreparedPair, prompt: Optional[str], number: int, label: str) -> PreparedPair:
    """The next draft of a pair: another seed, and the new prompt when one was given."""
    changes: dict[str, Any] = {"seed": take_seed(draft.fingerprint, number), "label": f"{label}-draft{number}"}
    if prompt:
        changes["prompt"] = prompt
    return await setup.prepare(draft.pair.model_copy(update=changes))


def _final(pair: KeyframePair, draft: ArchivedVideo) -> KeyframePair:
    """The approved pair at its final resolution, with the draft's seed and the prompt the service
    used for the draft (not rewritten again: ``prompt_extend`` off), so the final keeps what was approved."""
    request = draft.record.request
    return pair.model_copy(update={"seed": request.seed, "prompt": draft.record.actual_prompt or request.prompt, "prompt_extend": False})
