"""Review before the expensive render: every pair drafted cheaply, a person approves, retakes or
drops each draft (the Prefect UI's form, ``prefect-wan review`` or the terminal of the CLI run), and
only the approved pairs are rendered at the final resolution, with the draft's seed and the prompt
the service used for it.

How a run waits (``Review.wait``): a deployment run suspends (its process ends; on resume the run
starts again from the top, every draft found in the archive and each answered round read back
from the run's input), any other run pauses (its process waits). Each round stores what it waits on
(``ReviewRequest``) as run input beside the form, so a terminal can list and answer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Iterator, Literal, Optional
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import apause_flow_run, aresume_flow_run, asuspend_flow_run
from prefect.input import RunInput
from prefect.input.actions import acreate_flow_run_input, aread_flow_run_input
from prefect.input.run_input import keyset_from_base_key
from prefect.runtime import deployment, flow_run
from prefect.settings import PREFECT_UI_URL
from pydantic import BaseModel, Field, create_model

from prefect_wan.client.errors import WanError
from prefect_wan.flows.drafts import Review, draft_of, final_of, retake_of
from prefect_wan.flows.models import ArchivedVideo, PairSkip
from prefect_wan.flows.plan import PlannedAction, plan_run
from prefect_wan.flows.prepared import PreparedPair
from prefect_wan.flows.reporting import checks_text, inline_image, price_text
from prefect_wan.flows.setup import RunSetup

__all__ = ["ANSWERED_EVENT", "WAITING_EVENT", "Review", "ReviewRequest", "answer_review", "review_then_render", "reviewing", "waiting_review"]

WAITING_EVENT = "prefect_wan.review.waiting"
ANSWERED_EVENT = "prefect_wan.review.answered"
KEY_PREFIX = "prefect-wan-review-"
# How often a paused run asks the API whether it was answered.
REVIEW_POLL_SECONDS = 2
Decision = Literal["approve", "retake", "drop"]


class ReviewAnswerError(WanError, ValueError):
    """The answers do not fit the drafts waiting: a label unknown, answered twice, or not answered."""


class DraftForReview(BaseModel):
    """One draft as a reviewer sees it."""

    label: str
    field: str = Field(description="The form's field for this draft's decision (its prompt: FIELD_prompt).")
    passed: Optional[bool] = Field(description="Whether its shot checks passed (None: not checked).")
    checks: str
    draft: str = Field(description="The draft's tier and cost.")
    final: str = Field(description="The final's tier and what it will cost.")
    prompt_used: str
    video_url: str
    poster_url: Optional[str] = None


class ReviewRequest(BaseModel):
    """What a round of review waits on, stored as the run's input beside its form."""

    run_id: str
    run_name: str
    round: int
    ui_url: Optional[str] = None
    drafts: list[DraftForReview]

    def answer(
        self,
        *,
        approve: Iterable[str] = (),
        retake: Iterable[str] = (),
        drop: Iterable[str] = (),
        approve_passing: bool = False,
        prompts: Optional[dict[str, str]] = None,
    ) -> dict[str, Any]:
        """The form's input for these decisions. Every waiting draft must be decided once
        (``approve_passing`` decides the passing ones not named); ``ReviewAnswerError`` names what does not fit."""
        decided: dict[str, Decision] = {}
        problems: list[str] = []
        known = {d.label: d for d in self.drafts}
        for decision, labels in (("approve", approve), ("retake", retake), ("drop", drop)):
            for label in labels:
                if label not in known:
                    problems.append(f"{label!r} is not waiting (waiting: {', '.join(known)})")
                elif label in decided and decided[label] != decision:
                    problems.append(f"{label!r} is both {decided[label]} and {decision}")
                else:
                    decided[label] = decision  # type: ignore[assignment]
        for label in prompts or {}:
            if decided.get(label) != "retake":
                problems.append(f"a new prompt for {label!r}, which is not retaken")
        if approve_passing:
            decided |= {d.label: "approve" for d in self.drafts if d.passed and d.label not in decided}
        if missing := [d.label for d in self.drafts if d.label not in decided]:
            problems.append(f"no decision for {', '.join(missing)} (approve, retake or drop each)")
        if problems:
            raise ReviewAnswerError("; ".join(problems))
        answers: dict[str, Any] = {known[label].field: decision for label, decision in decided.items()}
        answers |= {f"{known[label].field}_prompt": prompt for label, prompt in (prompts or {}).items()}
        return answers


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


def review_request(round_: DraftRound, finals: dict[str, PreparedPair]) -> ReviewRequest:
    drafts = []
    for label, video in round_.drafts.items():
        record, final = video.record, finals[label]
        drafts.append(
            DraftForReview(
                label=label,
                field=_field(label),
                passed=record.checks.passed if record.checks is not None else None,
                checks=checks_text(record.checks),
                draft=f"{record.request.resolution}, {price_text(record.cost)}" + (" (reused)" if video.reused else ""),
                final=f"{final.prepared.parameters.resolution}, {price_text(final.cost)}",
                prompt_used=record.actual_prompt or record.request.prompt or "(none)",
                video_url=video.video_url,
                poster_url=record.poster.url if record.poster else None,
            )
        )
    # Without a UI URL (no server configured) Prefect's would read "None/flow-runs/...".
    ui_url = flow_run.ui_url if PREFECT_UI_URL.value() else None
    return ReviewRequest(run_id=str(flow_run.get_id()), run_name=str(flow_run.get_name()), round=round_.number, ui_url=ui_url, drafts=drafts)


def describe(round_: DraftRound, request: ReviewRequest) -> str:
    """The form's description: each draft with its poster, checks, cost, and what its final costs."""
    lines = [
        f"## Review, round {round_.number}",
        "",
        "For each draft: approve (render the final), retake (another seed, optionally a new prompt) or drop. "
        f"From a terminal: `prefect-wan review {request.run_name}`.",
        "",
    ]
    for draft in request.drafts:
        lines += [
            f"### {draft.label}: {draft.checks}",
            _thumbnail(round_.drafts[draft.label]),
            "",
            f"draft {draft.draft}; final {draft.final}. Prompt used: {draft.prompt_used}",
            "",
        ]
    return "\n".join(lines)


def review_form(round_: DraftRound) -> type[RunInput]:
    """A run input with one choice (and an optional new prompt) per draft."""
    fields: dict[str, Any] = {}
    for label, video in round_.drafts.items():
        passing = video.record.checks is not None and video.record.checks.passed
        fields[_field(label)] = (Decision, Field(default="approve" if passing else "retake", title=label, description=checks_text(video.record.checks)))
        fields[f"{_field(label)}_prompt"] = (str, Field(default="", title=f"{label}: new prompt for a retake", description="Empty: keep the prompt used."))
    return create_model(f"ReviewRound{round_.number}", __base__=RunInput, **fields)


# Listeners of this process (the CLI) told when a run of it starts waiting for review.
_LISTENERS: list[Callable[[ReviewRequest], Awaitable[None]]] = []
_LISTENING: set[asyncio.Future[None]] = set()


@contextlib.contextmanager
def reviewing(listener: Callable[[ReviewRequest], Awaitable[None]]) -> Iterator[None]:
    """Call ``listener`` (in the run's event loop) each time a run of this process waits for review."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


async def _when_waiting(listener: Callable[[ReviewRequest], Awaitable[None]], request: ReviewRequest, base: str) -> None:
    """Tell ``listener`` once the run is paused on this round: Prefect refuses an answer before that."""
    logger = get_run_logger()
    try:
        async with get_client() as client:
            while True:
                state = (await client.read_flow_run(UUID(request.run_id))).state
                keyset = state.state_details.run_input_keyset if state is not None and state.is_paused() else None
                if keyset is not None and keyset["response"].startswith(base):
                    break
                if state is None or state.is_final():
                    return
                await asyncio.sleep(0.1)
        await listener(request)
    except Exception:
        # The run still waits: an answer can come from the UI or prefect-wan review.
        logger.exception("Review round %d: the reviewer of this process failed; the run waits for an answer from the UI", request.round)


def _suspends(review: Review) -> bool:
    # Only a deployment run can start again after its process ended: other runs pause.
    return review.wait == "suspend" or (review.wait == "auto" and deployment.id is not None)


async def ask(round_: DraftRound, review: Review, finals: dict[str, PreparedPair]) -> None:
    """Wait for a person's decisions on the drafts not decided yet (the run pauses or suspends)."""
    pending = DraftRound(round_.number, {k: v for k, v in round_.drafts.items() if k not in round_.decisions})
    if not pending.drafts:
        return
    key = f"{KEY_PREFIX}{round_.number}"
    request = review_request(pending, finals)
    form = review_form(pending).with_initial_data(description=describe(pending, request))
    resource = {"prefect.resource.id": f"prefect.flow-run.{flow_run.get_id()}", "prefect.resource.name": str(flow_run.get_name())}
    suspends = _suspends(review)
    # Prefect's keys for a waiting run's input: "<paused|suspended>-<key>-<part>".
    base = f"{'suspended' if suspends else 'paused'}-{key}"
    # A suspended run that was resumed runs again from the top: an answered round is read back, not asked again.
    answered = await aread_flow_run_input(keyset_from_base_key(base)["response"]) is not None
    if not answered:
        if await aread_flow_run_input(f"{base}-drafts") is None:
            await acreate_flow_run_input(f"{base}-drafts", request.model_dump(mode="json"))
        emit_event(WAITING_EVENT, resource=resource, payload={"round": round_.number, "drafts": list(pending.drafts), "url": request.ui_url})
        get_run_logger().warning(
            "Review round %d: %d draft(s) wait for a decision at %s (or: prefect-wan review %s)",
            round_.number,
            len(pending.drafts),
            request.ui_url or "the Prefect UI",
            request.run_name,
        )
        for listener in list(_LISTENERS):
            task = asyncio.ensure_future(_when_waiting(listener, request, base))
            _LISTENING.add(task)
            task.add_done_callback(_LISTENING.discard)
    try:
        if suspends:
            answer = await asuspend_flow_run(wait_for_input=form, timeout=review.timeout_seconds, key=key)
        else:
            answer = await apause_flow_run(wait_for_input=form, timeout=review.timeout_seconds, poll_interval=REVIEW_POLL_SECONDS, key=key)
    except FlowPauseTimeout:
        if review.on_timeout == "fail":
            raise
        for label, video in pending.drafts.items():
            passing = review.on_timeout == "approve_passing" and video.record.checks is not None and video.record.checks.passed
            round_.decisions[label] = "approve" if passing else "drop"
        get_run_logger().warning("Review round %d timed out: %s", round_.number, review.on_timeout)
    else:
        assert answer is not None
        values = answer.model_dump()
        for label in pending.drafts:
            round_.decisions[label] = values[_field(label)]
            if values.get(f"{_field(label)}_prompt"):
                round_.prompts[label] = values[f"{_field(label)}_prompt"]
    if not answered:
        emit_event(ANSWERED_EVENT, resource=resource, payload={"round": round_.number, "decisions": {k: round_.decisions[k] for k in pending.drafts}})


async def waiting_review(run: str) -> Optional[ReviewRequest]:
    """The review a flow run (its id or name; the newest of that name) waits on, or None when it waits on none."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        try:
            runs = [await client.read_flow_run(UUID(run))]
        except ValueError:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run])), sort=FlowRunSort.START_TIME_DESC)
    for candidate in runs:
        state = candidate.state
        keyset = state.state_details.run_input_keyset if state is not None and state.is_paused() else None
        if keyset and KEY_PREFIX in keyset["response"]:
            stored = await aread_flow_run_input(keyset["response"].removesuffix("-response") + "-drafts", flow_run_id=candidate.id)
            if stored is not None:
                return ReviewRequest.model_validate(stored)
    return None


async def answer_review(request: ReviewRequest, answers: dict[str, Any]) -> None:
    """Resume the waiting run with these answers, as the UI's form does."""
    await aresume_flow_run(UUID(request.run_id), run_input=answers)


@dataclass
class ReviewOutcome:
    drafts: list[ArchivedVideo] = field(default_factory=list)
    finals: list[ArchivedVideo] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    skipped: list[PairSkip] = field(default_factory=list)


async def _covered(
    review: Review, setup: RunSetup, finals: list[PreparedPair], drafts: dict[str, PreparedPair], outcome: ReviewOutcome
) -> dict[str, PreparedPair]:
    """The drafts of the pairs whose draft and final ``max_cost`` covers together; the others are
    skipped before anything is sent (a draft whose final cannot be paid for is money lost)."""
    if setup.budget is None:
        return drafts
    plan = await plan_run(setup, finals, review, drafts)
    over = {p.label: p for p in plan.pairs if p.action is PlannedAction.OVER_BUDGET}
    for final in finals:
        if (skipped := over.get(final.label)) is not None:
            outcome.skipped.append(PairSkip(label=final.label, reason=skipped.detail, estimated_cost=skipped.cost.amount, currency=skipped.cost.currency))
    return {label: draft for label, draft in drafts.items() if label not in over}


async def review_then_render(
    review: Review,
    setup: RunSetup,
    finals: list[PreparedPair],
    render: Callable[[PreparedPair, str], Awaitable[Optional[ArchivedVideo]]],
    *,
    whole: bool = False,
) -> ReviewOutcome:
    """Draft every pair, review in rounds, then render the approved pairs' finals.

    ``finals`` are the pairs as asked, prepared once; drafts, retakes and finals are made from
    them without reading a frame again. ``render(prepared, label)`` runs one of them (a draft or a
    final of the pair ``label``) through the pipeline and returns its video, or None when it
    failed or was skipped for budget (the caller records which). ``whole`` (a storyboard): finals
    only when every pair was approved.
    """
    outcome = ReviewOutcome()
    by_label = {final.label: final for final in finals}
    drafts = {final.label: draft_of(review, final, setup.options) for final in finals}
    drafting = await _covered(review, setup, finals, drafts, outcome)
    approved: dict[str, ArchivedVideo] = {}
    for number in range(1, review.max_rounds + 1):
        videos = await asyncio.gather(*(render(d, label) for label, d in drafting.items()))
        round_ = DraftRound(number, {label: v for label, v in zip(drafting, videos) if v is not None})
        outcome.drafts += list(round_.drafts.values())
        if review.auto_approve == "passing":
            round_.decisions.update({k: "approve" for k, v in round_.drafts.items() if v.record.checks is not None and v.record.checks.passed})
        await ask(round_, review, by_label)
        retaking: dict[str, PreparedPair] = {}
        for label, decision in round_.decisions.items():
            if decision == "approve":
                approved[label] = round_.drafts[label]
            elif decision == "drop":
                outcome.dropped.append(label)
            elif number < review.max_rounds:
                retaking[label] = retake_of(drafting[label], label, number + 1, round_.prompts.get(label), setup.options)
            else:
                get_run_logger().warning("%s: a retake was asked in the last round (max_rounds=%d); dropped", label, review.max_rounds)
                outcome.dropped.append(label)
        drafting = retaking
        if not drafting:
            break
    if whole and len(approved) < len(finals):
        get_run_logger().warning("%d of %d approved: no final is rendered", len(approved), len(finals))
        return outcome
    rendered = await asyncio.gather(*(render(final_of(by_label[label], chosen.record, setup.options), label) for label, chosen in approved.items()))
    outcome.finals = [video for video in rendered if video is not None]
    return outcome
