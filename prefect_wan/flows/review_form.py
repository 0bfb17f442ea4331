"""What one round of review asks (``ReviewRequest``, stored as the run's input beside the form) and
the form a person answers it with.

An answer is tied to its round and to each draft it decides: every decision field is named after
the round and the draft's fingerprint (never its label, so look-alike labels never share a field),
has no default (Prefect's server refuses an answer that leaves a draft undecided, so nothing final
is paid for without a choice), and the form forbids other fields (an answer to another round is
refused whole).
"""

from __future__ import annotations

from typing import Any, Iterable, Literal, Optional

from prefect.input import RunInput
from pydantic import BaseModel, Field, create_model

from prefect_wan.client.errors import WanError

Decision = Literal["approve", "retake", "drop"]
# A retake's new prompt is kept on the Prefect server with its decision (a variable holds 5000 characters).
PROMPT_LIMIT = 4000


class ReviewAnswerError(WanError, ValueError):
    """The answers do not fit the drafts waiting: a label unknown, answered twice, or not answered."""


class ReviewClosedError(WanError, ValueError):
    """The run does not wait for this answer: unknown, finished, answered already, or waiting on another round."""


class Waiter(BaseModel):
    """The process of a paused run, waiting for the answer (a suspended run has none)."""

    host: str = Field(description="The host's tag (prefect_wan.ledger.liveness.host_tag).")
    pid: int
    started: Optional[float] = Field(default=None, description="The process's start time, to tell a reused pid apart.")


class DraftForReview(BaseModel):
    """One draft as a reviewer sees it."""

    label: str
    field: str = Field(description="The form's field for this draft's decision (its prompt: FIELD_prompt).")
    fingerprint: str = Field(default="", description="The draft's fingerprint: what its decision is kept under.")
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
    waiter: Optional[Waiter] = None

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
        for label, prompt in (prompts or {}).items():
            if decided.get(label) != "retake":
                problems.append(f"a new prompt for {label!r}, which is not retaken")
            elif len(prompt) > PROMPT_LIMIT:
                problems.append(f"the new prompt for {label!r} has {len(prompt)} characters (at most {PROMPT_LIMIT})")
        if approve_passing:
            decided |= {d.label: "approve" for d in self.drafts if d.passed and d.label not in decided}
        if missing := [d.label for d in self.drafts if d.label not in decided]:
            problems.append(f"no decision for {', '.join(missing)} (approve, retake or drop each)")
        if problems:
            raise ReviewAnswerError("; ".join(problems))
        answers: dict[str, Any] = {known[label].field: decision for label, decision in decided.items()}
        answers |= {f"{known[label].field}_prompt": prompt for label, prompt in (prompts or {}).items()}
        return answers

    def decisions(self, answers: dict[str, Any]) -> dict[str, tuple[Decision, str]]:
        """Each draft's decision and new prompt ('' for none) in ``answers``, by label."""
        return {d.label: (answers[d.field], answers.get(f"{d.field}_prompt") or "") for d in self.drafts if d.field in answers}


def decision_fields(round_number: int, fingerprints: dict[str, str]) -> dict[str, str]:
    """Each draft's field (by label): the round and the draft's fingerprint, never the label, so
    that ``shot-1`` and ``shot 1`` (or two emoji labels) get a field each and an answer to another
    round fits none of them."""
    fields: dict[str, str] = {}
    for label, fingerprint in fingerprints.items():
        name = f"r{round_number}_{fingerprint[:12]}"
        while name in fields.values():  # the same work under two labels: each still decided alone
            name += "x"
        fields[label] = name
    return fields


def review_form(request: ReviewRequest, notes: dict[str, str]) -> type[RunInput]:
    """A run input with one required choice (and an optional new prompt) per draft, titled by its
    label; ``notes`` is each draft's checks, shown under its choice. Nothing is pre-selected."""
    fields: dict[str, Any] = {}
    for draft in request.drafts:
        fields[draft.field] = (Decision, Field(title=draft.label, description=notes.get(draft.label, "")))
        fields[f"{draft.field}_prompt"] = (
            str,
            Field(default="", max_length=PROMPT_LIMIT, title=f"{draft.label}: new prompt for a retake", description="Empty: keep the prompt used."),
        )
    return create_model(f"ReviewRound{request.round}", __base__=RunInput, **fields)
