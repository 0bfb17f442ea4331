"""Review before the expensive render: every pair drafted cheaply, a person approves, retakes or
drops each draft (the Prefect UI's form, ``prefect-wan review`` or the terminal of the CLI run), and
only the approved pairs are rendered at the final resolution, with the draft's seed and the prompt
the service used for it.

How a run waits (``Review.wait``): a deployment run suspends (its process ends; on resume the run
starts again from the top, every draft found in the archive and each answered round read back
from the run's input), any other run pauses (its process waits). Each round stores what it waits on
(``ReviewRequest``) as run input beside the form, so a terminal can list and answer it.

Only a person's choice, or ``auto_approve``, renders a final: the form pre-selects nothing and an
answer must decide every draft of the round it names (``review_form``). One answer per round is
taken (``answer_review`` claims the round first). What a person decided is kept per draft on the
Prefect server (``review_kept``), so a run whose paused process died, or a finished run run again,
takes those decisions instead of asking again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Iterator, Literal, Optional
from uuid import UUID

import httpx
from prefect import get_run_logger
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.client.schemas.responses import SetStateStatus
from prefect.events import emit_event
from prefect.exceptions import FlowPauseTimeout, ObjectAlreadyExists, ObjectNotFound
from prefect.flow_runs import apause_flow_run, asuspend_flow_run
from prefect.input.actions import acreate_flow_run_input, adelete_flow_run_input, aread_flow_run_input
from prefect.input.run_input import keyset_from_base_key
from prefect.runtime import deployment, flow_run
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
from prefect.states import Crashed

from prefect_wan.flows.drafts import Review, draft_of, final_of, retake_of
from prefect_wan.flows.models import ArchivedVideo, PairSkip
from prefect_wan.flows.plan import PlannedAction, plan_run
from prefect_wan.flows.prepared import PreparedPair
from prefect_wan.flows.reporting import checks_text, inline_image, price_text
from prefect_wan.flows.review_form import (
    Decision,
    DraftForReview,
    ReviewAnswerError,
    ReviewClosedError,
    ReviewRequest,
    decision_fields,
    review_form,
)
from prefect_wan.flows.review_kept import KeptDecision, keep, recall
from prefect_wan.flows.review_waiter import gone, heartbeat, this_process
from prefect_wan.flows.setup import RunSetup

__all__ = [
    "ANSWERED_EVENT",
    "WAITING_EVENT",
    "DraftForReview",
    "Review",
    "ReviewAnswerError",
    "ReviewClosedError",
    "ReviewRequest",
    "answer_review",
    "find_review",
    "review_then_render",
    "reviewing",
    "waiting_review",
]

WAITING_EVENT = "prefect_wan.review.waiting"
ANSWERED_EVENT = "prefect_wan.review.answered"
KEY_PREFIX = "prefect-wan-review-"
# How often a paused run asks the API whether it was answered.
REVIEW_POLL_SECONDS = 2
# A claim on a round (an answer on its way) older than this was left by a reviewer that died.
CLAIM_SECONDS = 60


@dataclass
class DraftRound:
    """The drafts of one round and what was decided of each."""

    number: int
    drafts: dict[str, ArchivedVideo]
    decisions: dict[str, Decision] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)


def _thumbnail(video: ArchivedVideo) -> str:
    """The draft's poster as the UI can show it: presigned on object stores, a small inline JPEG elsewhere."""
    poster = video.record.poster
    if poster is None:
        return ""
    shown = video.poster_view_url or inline_image(poster.url)
    return f"![{video.label}]({shown})" if shown else f"[poster]({poster.url})"


def review_request(round_: DraftRound, finals: dict[str, PreparedPair], *, suspends: bool = False) -> ReviewRequest:
    fields = decision_fields(round_.number, {label: video.fingerprint for label, video in round_.drafts.items()})
    drafts = []
    for label, video in round_.drafts.items():
        record, final = video.record, finals[label]
        drafts.append(
            DraftForReview(
                label=label,
                field=fields[label],
                fingerprint=video.fingerprint,
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
    return ReviewRequest(
        run_id=str(flow_run.get_id()),
        run_name=str(flow_run.get_name()),
        round=round_.number,
        ui_url=ui_url,
        drafts=drafts,
        waiter=None if suspends else this_process(),
    )


def describe(round_: DraftRound, request: ReviewRequest) -> str:
    """The form's description: each draft with its poster, checks, cost, and what its final costs."""
    lines = [
        f"## Review, round {round_.number}",
        "",
        "For each draft choose: approve (render the final), retake (another seed, optionally a new prompt) or drop. "
        "Nothing is chosen for you: a draft left without a choice cannot be submitted. "
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


def _base(number: int, suspends: bool) -> str:
    # Prefect's keys for a waiting run's input: "<paused|suspended>-<key>-<part>".
    return f"{'suspended' if suspends else 'paused'}-{KEY_PREFIX}{number}"


async def _take_kept(round_: DraftRound, pending: dict[str, ArchivedVideo]) -> None:
    """Decide the drafts a person decided already (in a run before this one) as they did."""
    kept = await recall(video.fingerprint for video in pending.values())
    for label, video in pending.items():
        if (decision := kept.get(video.fingerprint)) is None:
            continue
        round_.decisions[label] = decision.decision
        if decision.prompt:
            round_.prompts[label] = decision.prompt
        get_run_logger().info(
            "%s: decided in review before (run %s, round %d, %s): %s", label, decision.run_id, decision.round, decision.kept_at, decision.decision
        )


async def ask(round_: DraftRound, review: Review, finals: dict[str, PreparedPair], *, force: bool = False) -> None:
    """Wait for a person's decisions on the drafts not decided yet (the run pauses or suspends).

    A draft a person decided before (in a run whose process died while it waited, or a finished
    run now run again) is decided as they did, not asked again; unless the run forces new videos."""
    if not force:
        await _take_kept(round_, {k: v for k, v in round_.drafts.items() if k not in round_.decisions})
    pending = DraftRound(round_.number, {k: v for k, v in round_.drafts.items() if k not in round_.decisions})
    if not pending.drafts:
        return
    suspends = _suspends(review)
    key, base = f"{KEY_PREFIX}{round_.number}", _base(round_.number, suspends)
    request = review_request(pending, finals, suspends=suspends)
    notes = {label: checks_text(video.record.checks) for label, video in pending.drafts.items()}
    form = review_form(request, notes).with_initial_data(description=describe(pending, request))
    resource = {"prefect.resource.id": f"prefect.flow-run.{flow_run.get_id()}", "prefect.resource.name": str(flow_run.get_name())}
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
            async with heartbeat(f"{base}-alive"):
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
        decided = await _keep_answer(request, answer.model_dump())
        for label, (decision, prompt) in decided.items():
            round_.decisions[label] = decision
            if prompt:
                round_.prompts[label] = prompt
    if not answered:
        emit_event(ANSWERED_EVENT, resource=resource, payload={"round": round_.number, "decisions": {k: round_.decisions[k] for k in pending.drafts}})


async def _keep_answer(request: ReviewRequest, answers: dict[str, Any]) -> dict[str, tuple[Decision, str]]:
    """Keep each draft's decision in ``answers`` for later runs; the decisions, by label."""
    decided = request.decisions(answers)
    by_label = {d.label: d for d in request.drafts}
    await keep(
        {
            by_label[label].fingerprint: KeptDecision(decision=decision, prompt=prompt, label=label, round=request.round, run_id=request.run_id)
            for label, (decision, prompt) in decided.items()
            if by_label[label].fingerprint
        }
    )
    return decided


def _open_round(state: Optional[State]) -> Optional[tuple[int, str]]:
    """The round a run's state waits on, and its keys' base; None when it waits on none."""
    keyset = state.state_details.run_input_keyset if state is not None and state.is_paused() else None
    if not keyset or KEY_PREFIX not in keyset["response"]:
        return None
    base = keyset["response"].removesuffix("-response")
    number = base.rpartition("-")[2]
    return (int(number), base) if number.isdigit() else None


def _state_text(run: FlowRun) -> str:
    return f"{run.name} is {run.state.name if run.state is not None else 'not started'}: it waits for no review"


async def find_review(run: str) -> ReviewRequest:
    """The review a flow run (its id or name; the newest of that name waiting) waits on, or
    ``ReviewClosedError`` saying in one line why there is none: no such run, or it waits on nothing."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        try:
            run_id: Optional[UUID] = UUID(run)
        except ValueError:
            run_id = None
        if run_id is not None:
            try:
                runs = [await client.read_flow_run(run_id)]
            except ObjectNotFound:
                raise ReviewClosedError(f"{run}: no flow run has this id on {PREFECT_API_URL.value()}") from None
        else:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run])), sort=FlowRunSort.START_TIME_DESC)
            if not runs:
                raise ReviewClosedError(f"{run}: no flow run has this name on {PREFECT_API_URL.value()}")
    for candidate in runs:
        if (waiting := _open_round(candidate.state)) is None:
            continue
        stored = await aread_flow_run_input(f"{waiting[1]}-drafts", flow_run_id=candidate.id)
        if stored is not None:
            return ReviewRequest.model_validate(stored)
    raise ReviewClosedError(_state_text(runs[0]))


async def waiting_review(run: str) -> Optional[ReviewRequest]:
    """The review a flow run (its id or name; the newest of that name) waits on, or None when it waits on none."""
    try:
        return await find_review(run)
    except ReviewClosedError:
        return None


Answered = Literal["answered", "kept"]


async def _claim(client: PrefectClient, run_id: UUID, base: str, request: ReviewRequest) -> None:
    """Be the one answer of this round: Prefect keeps one input per key, so of two reviewers
    answering at once exactly one claims it (a claim left by a reviewer that died expires)."""
    key = f"{base}-claim"
    for _ in range(2):
        try:
            await client.create_flow_run_input(run_id, key, json.dumps({"at": datetime.now(timezone.utc).isoformat()}))
            return
        except (ObjectAlreadyExists, httpx.HTTPStatusError) as error:
            if isinstance(error, httpx.HTTPStatusError) and error.response.status_code != 409:
                raise
        claim: Any = await aread_flow_run_input(key, flow_run_id=run_id)
        at = datetime.fromisoformat(claim["at"]) if isinstance(claim, dict) and "at" in claim else None
        if at is not None and datetime.now(timezone.utc) - at < timedelta(seconds=CLAIM_SECONDS):
            break
        await adelete_flow_run_input(key, flow_run_id=run_id)
    raise ReviewClosedError(f"round {request.round} of {request.run_name} is being answered by someone else: nothing was changed")


async def answer_review(request: ReviewRequest, answers: dict[str, Any]) -> Answered:
    """Answer the round ``request`` describes, as the UI's form does: ``"answered"`` when the run
    took it, ``"kept"`` when the run's process is gone (the run is marked Crashed, and the decisions
    are kept for the re-run, which then does not ask again).

    Refused with ``ReviewClosedError`` (nothing changed) when the run waits on another round, on
    none, or the round was answered already; with ``ReviewAnswerError`` when Prefect refuses the
    answer (a draft left undecided, a field of another round)."""
    run_id = UUID(request.run_id)
    async with get_client() as client:
        try:
            run = await client.read_flow_run(run_id)
        except ObjectNotFound:
            raise ReviewClosedError(f"{request.run_name}: no flow run has the id {request.run_id}") from None
        waiting = _open_round(run.state)
        if waiting is None:
            raise ReviewClosedError(f"round {request.round} of {request.run_name} is not open: {_state_text(run)}")
        number, base = waiting
        if number != request.round:
            raise ReviewClosedError(f"round {request.round} of {request.run_name} is not open: round {number} is (prefect-wan review {request.run_name})")
        if (why := await gone(request.waiter, run_id, f"{base}-alive")) is not None:
            await _keep_answer(request, answers)
            message = f"{why} while it waited for review round {request.round}: the answer is kept, and the run's re-run takes it without asking"
            await client.set_flow_run_state(run_id, Crashed(message=message), force=True)
            return "kept"
        await _claim(client, run_id, base, request)
        response = await client.resume_flow_run(run_id, run_input=answers)
        if response.status is SetStateStatus.ACCEPT:
            return "answered"
        await adelete_flow_run_input(f"{base}-claim", flow_run_id=run_id)
    if response.status is SetStateStatus.REJECT:
        raise ReviewAnswerError(
            f"the Prefect server refused the answer to round {request.round} of {request.run_name}: {getattr(response.details, 'reason', '')}"
        )
    raise ReviewClosedError(f"round {request.round} of {request.run_name} was answered already: nothing was changed")


@dataclass
class ReviewOutcome:
    drafts: list[ArchivedVideo] = field(default_factory=list)
    finals: list[ArchivedVideo] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    skipped: list[PairSkip] = field(default_factory=list)
    approved: list[str] = field(default_factory=list)

    def refused_final(self, skip: PairSkip, final_resolution: str) -> PairSkip:
        """``skip`` of an approved pair's final, saying so: the final's price, and the pair's total with the drafts it paid for."""
        prefix = f"{skip.label}-draft"
        drafts = [d.record.cost for d in self.drafts if d.label == prefix or d.label.startswith(prefix) and d.label[len(prefix) :].isdigit()]
        spent = sum(c.amount or 0.0 for c in drafts if c.currency == skip.currency)
        reason = f"approved, but its {final_resolution} final does not fit: {skip.reason}"
        if skip.estimated_cost is not None and drafts:
            reason += f"; with its {len(drafts)} draft(s) ({spent:g} {skip.currency}) the pair would cost {spent + skip.estimated_cost:g} {skip.currency}"
        return skip.model_copy(update={"reason": reason})


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
        await ask(round_, review, by_label, force=setup.force)
        retaking: dict[str, PreparedPair] = {}
        for label, decision in round_.decisions.items():
            if decision == "approve":
                approved[label] = round_.drafts[label]
                outcome.approved.append(label)
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
