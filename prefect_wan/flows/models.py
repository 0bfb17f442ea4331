"""Flow parameters and results: what a pipeline passes in and gets back."""

from __future__ import annotations

import difflib
from pathlib import PurePosixPath
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prefect_wan.archive.record import ArchiveRecord
from prefect_wan.client.catalog import DEFAULT_MODEL
from prefect_wan.client.errors import PreflightError, PreflightViolation
from prefect_wan.client.images import redact_url
from prefect_wan.client.request import KeyframeVideoRequest

_OVERRIDES = ("model", "negative_prompt", "resolution", "duration", "ratio", "audio", "seed", "prompt_extend", "watermark", "template")
_OPTIONAL_FIELDS = ("last_frame", "prompt", "label", *_OVERRIDES)


class GenerationOptions(BaseModel):
    """How to generate, shared by every pair of a run unless a pair overrides it."""

    # A misspelled option ("resolutoin") must be refused, not silently paid at the default.
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        default=DEFAULT_MODEL,
        description="wan2.2-kf2v-flash, wanx2.1-kf2v-plus (Beijing), wan2.1-kf2v-plus (Singapore), wan2.7-i2v, wan3.0-video or wan3.0-video-prime.",
    )
    negative_prompt: Optional[str] = Field(default=None, description="What to avoid.")
    resolution: Optional[str] = Field(default=None, description="480P, 720P or 1080P (model default when empty).")
    duration: Optional[int] = Field(default=None, description="Seconds: 5 for kf2v, 2-15 for wan2.7, 2-30 or -1 (smart) for wan3.0.")
    ratio: Optional[str] = Field(default=None, description="wan3.0: adaptive, 16:9, 4:3, 1:1, 3:4 or 9:16.")
    audio: Optional[bool] = Field(default=None, description="wan3.0: with an audio track (default) or silent.")
    seed: Optional[int] = Field(default=None, description="Seed in [0, 2147483647]; random when empty.")
    prompt_extend: bool = Field(default=True, description="Let the service rewrite the prompt.")
    watermark: bool = Field(default=False, description="Add the 'AI generated' mark.")
    template: Optional[str] = Field(default=None, description="Effect template (kf2v-plus models only).")
    truncate_prompts: bool = Field(default=False, description="Cut over-long prompts instead of refusing them.")

    @field_validator("resolution", mode="before")
    @classmethod
    def _tier_in_any_case(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) and value.strip() else value


class KeyframePair(BaseModel):
    """One transition: two frames and a prompt, with optional per-pair overrides."""

    model_config = ConfigDict(extra="forbid")

    first_frame: str = Field(description="Path or URL (http(s), s3://, oss://...) of the first frame.")
    last_frame: Optional[str] = Field(default=None, description="Path or URL of the last frame.")
    prompt: Optional[str] = Field(default=None, description="What happens between the frames.")
    label: Optional[str] = Field(default=None, description="A name for the UI and the sidecar.")
    model: Optional[str] = None
    negative_prompt: Optional[str] = None
    resolution: Optional[str] = None
    duration: Optional[int] = None
    ratio: Optional[str] = None
    audio: Optional[bool] = None
    seed: Optional[int] = None
    prompt_extend: Optional[bool] = None
    watermark: Optional[bool] = None
    template: Optional[str] = None

    @field_validator(*_OPTIONAL_FIELDS, mode="before")
    @classmethod
    def _blank_is_missing(cls, value: Any, info: Any) -> Any:
        # Manifests (CSV above all) spell "not given" as an empty cell; tiers are read in any case.
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip().upper() if info.field_name == "resolution" and isinstance(value, str) else value

    @field_validator("first_frame", mode="after")
    @classmethod
    def _first_frame_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("first_frame is empty: give the path or URL of the first keyframe")
        return value

    @classmethod
    def from_fields(cls, **fields: Any) -> KeyframePair:
        """Build a pair from flow parameters; refusals name the field (``PreflightError``)."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise PreflightError([PreflightViolation(".".join(map(str, e["loc"])) or "pair", e.get("input"), _explain(e, cls)) for e in exc.errors()]) from None

    def display_label(self) -> str:
        if self.label:
            return self.label
        stems = [PurePosixPath(redact_url(f) if "://" in f else f).stem for f in (self.first_frame, self.last_frame) if f]
        return "-".join(stems) or "pair"

    def merged_options(self, options: GenerationOptions) -> GenerationOptions:
        """The run's options with this pair's own fields in their place."""
        return options.model_copy(update={key: getattr(self, key) for key in _OVERRIDES if getattr(self, key) is not None})

    def to_request(self, options: GenerationOptions, storage_options: Optional[dict[str, Any]] = None) -> KeyframeVideoRequest:
        merged = self.merged_options(options).model_dump()
        return KeyframeVideoRequest(
            first_frame=self.first_frame,
            last_frame=self.last_frame,
            prompt=self.prompt,
            storage_options=storage_options or {},
            **merged,
        )


def unknown_field(name: str, model: type[BaseModel]) -> str:
    """'unknown field', with the nearest known one when it looks like a typo."""
    close = difflib.get_close_matches(name, list(model.model_fields), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(model.model_fields)}"
    return f"unknown field {name!r}; {hint}"


def _explain(error: Any, model: type[BaseModel]) -> str:
    if error["type"] == "extra_forbidden":
        return unknown_field(str(error["loc"][-1]), model)
    return str(error["msg"]).removeprefix("Value error, ")


class ArchivedVideo(BaseModel):
    """A video in the archive, ready to hand to the next flow."""

    label: str
    fingerprint: str
    task_id: str
    video_url: str
    sidecar_url: str
    reused: bool = Field(description="True when an earlier run had already archived it (nothing was paid or downloaded).")
    record: ArchiveRecord
    poster_view_url: Optional[str] = Field(default=None, description="An http(s) URL of the poster (presigned on object stores), when there is one.")
    video_view_url: Optional[str] = Field(default=None, description="An http(s) URL of the video (presigned on object stores), when there is one.")


class PairFailure(BaseModel):
    label: str
    task_id: Optional[str] = Field(default=None, description="The service task, when one was submitted or adopted.")
    error: str
    code: Optional[str] = None
    message: str


class PairSkip(BaseModel):
    """A pair not submitted because the run's budget could not cover it."""

    label: str
    reason: str
    estimated_cost: Optional[float] = None
    currency: Optional[str] = None


class BatchResult(BaseModel):
    videos: list[ArchivedVideo] = Field(default_factory=list)
    failures: list[PairFailure] = Field(default_factory=list)
    skipped: list[PairSkip] = Field(default_factory=list, description="Pairs left unsubmitted by max_cost.")
    drafts: list[ArchivedVideo] = Field(default_factory=list, description="Under review: every draft, of every round.")
    dropped: list[str] = Field(default_factory=list, description="Under review: pairs whose drafts were dropped.")
    committed: dict[str, float] = Field(
        default_factory=dict, description="What this run's own submissions cost, per currency (billed where known, else estimated)."
    )
    billed: dict[str, float] = Field(default_factory=dict, description="What the service billed for this run's finished tasks (from usage), per currency.")
    unsubmitted: list[str] = Field(default_factory=list, description="Pairs left unsubmitted because the service refused every create (nothing paid).")
    outage: Optional[str] = Field(default=None, description="The service's outage, said once: since when, its answer and request ids.")

    @property
    def summary(self) -> str:
        """The headline, then every failure, then the outage (once) and the pairs it left unsubmitted."""
        text = self.headline
        if self.failures:
            text += ": " + "; ".join(f"{f.label}: {f.error} {f.message}" for f in self.failures)
        if self.unsubmitted:
            text += f". Left unsubmitted ({len(self.unsubmitted)}): {', '.join(self.unsubmitted)}, because {self.outage}"
        return text

    @property
    def headline(self) -> str:
        """``3 archived (1 already there), 1 failed, 2 skipped for budget; spent 1.5 USD``."""
        reused = sum(v.reused for v in self.videos)
        text = f"{len(self.videos)} archived ({reused} already there), {len(self.failures)} failed"
        if self.skipped:
            text += f", {len(self.skipped)} skipped for budget"
        if self.unsubmitted:
            text += f", {len(self.unsubmitted)} left unsubmitted (service outage)"
        if self.committed:
            text += "; spent " + ", ".join(f"{amount:g} {currency}" for currency, amount in self.committed.items())
        return text
