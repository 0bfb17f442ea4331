"""What a review is asked for (``Review``) and how a pair's draft, a draft's retake and an approved
pair's final are made from the pair prepared once (frames never read again)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from prefect_wan.archive.record import ArchiveRecord
from prefect_wan.client.catalog import MODELS, ModelSpec
from prefect_wan.client.errors import PreflightError, PreflightViolation
from prefect_wan.flows.models import GenerationOptions
from prefect_wan.flows.prepared import PreparedPair
from prefect_wan.flows.quality import take_seed

_TIERS = ("480P", "720P", "1080P")


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
        default="approve_passing",
        description="What an unanswered round does in a paused run: approve the passing drafts, drop all, or fail the run. A suspended run fails.",
    )
    wait: Literal["auto", "pause", "suspend"] = Field(
        default="auto",
        description="How a run waits: 'auto' suspends deployment runs (the process ends; the run starts again on resume, its drafts "
        "reused) and pauses the others (the process waits).",
    )


def _rank(resolution: Optional[str]) -> int:
    return _TIERS.index(resolution.upper()) if resolution and resolution.upper() in _TIERS else len(_TIERS)


def check_draftable(review: Review, spec: ModelSpec, resolution: Optional[str]) -> None:
    """``PreflightError`` when the final's model has no tier below ``resolution`` to draft at and no draft model is named."""
    resolution = resolution or spec.default_resolution
    if review.draft_model is None and (review.draft_resolution not in spec.resolutions or _rank(review.draft_resolution) >= _rank(resolution)):
        cheaper = sorted(name for name, s in MODELS.items() if any(_rank(r) < _rank(resolution) for r in s.resolutions))
        raise PreflightError(
            [
                PreflightViolation(
                    "review.draft_resolution",
                    review.draft_resolution,
                    f"{spec.name} has no tier below {resolution} to draft at (it takes {', '.join(spec.resolutions)}): name a "
                    f"draft_model, one of {', '.join(cheaper)}",
                )
            ]
        )


def draft_changes(review: Review) -> dict[str, object]:
    """The pair fields a draft changes (besides its seed and label)."""
    changes: dict[str, object] = {"resolution": review.draft_resolution}
    if review.draft_model is not None:
        changes["model"] = review.draft_model
    return changes


def draft_of(review: Review, final: PreparedPair, options: GenerationOptions) -> PreparedPair:
    """The pair's first draft: the draft tier (or model), the pair's seed or one derived from its
    fingerprint. ``PreflightError`` when its model has no cheaper tier and no draft model is named."""
    check_draftable(review, final.prepared.spec, final.prepared.parameters.resolution)
    seed = final.pair.seed if final.pair.seed is not None else take_seed(final.fingerprint, 1)
    return final.variant(final.pair.model_copy(update=draft_changes(review) | {"seed": seed, "label": f"{final.label}-draft"}), options)


def retake_of(draft: PreparedPair, label: str, number: int, prompt: Optional[str], options: GenerationOptions) -> PreparedPair:
    """Round ``number``'s draft of a pair: another seed, and the new prompt when one was given."""
    changes: dict[str, object] = {"seed": take_seed(draft.fingerprint, number), "label": f"{label}-draft{number}"}
    if prompt:
        changes["prompt"] = prompt
    return draft.variant(draft.pair.model_copy(update=changes), options)


def final_of(final: PreparedPair, approved: ArchiveRecord, options: GenerationOptions) -> PreparedPair:
    """The approved pair at its final tier, with the draft's seed and the prompt the service used for
    the draft (not rewritten again: ``prompt_extend`` off), so the final keeps what was approved."""
    request = approved.request
    prompt = approved.actual_prompt or request.prompt
    return final.variant(final.pair.model_copy(update={"seed": request.seed, "prompt": prompt, "prompt_extend": False}), options)
