"""Decisions kept on the Prefect server, one per draft: what a person decided of a draft outlives
the run that asked. A re-run of the same work (a finished batch run again, or one whose process
died while it waited) takes them instead of asking again, so a person's answer is never lost and
nothing is asked twice.

Kept as Prefect variables named after the draft's fingerprint (the work, whatever run or label it
had), tagged ``prefect-wan``: every reviewer reaches the Prefect server, not necessarily the archive.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectAlreadyExists
from pydantic import BaseModel, Field, ValidationError

from prefect_wan.flows.review_form import Decision

VARIABLE_PREFIX = "prefect-wan-review-"
TAGS = ["prefect-wan", "review"]


class KeptDecision(BaseModel):
    """A person's decision of one draft, as kept for later runs."""

    decision: Decision
    prompt: str = Field(default="", description="A retake's new prompt ('' keeps the one used).")
    label: str
    round: int
    run_id: str = Field(description="The run that asked.")
    kept_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


def variable_name(fingerprint: str) -> str:
    return f"{VARIABLE_PREFIX}{fingerprint[:40]}"


async def keep(decisions: dict[str, KeptDecision]) -> None:
    """Keep each decision under its draft's fingerprint (a later decision of the same draft replaces it)."""
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    async with get_client() as client:
        for fingerprint, kept in decisions.items():
            name, value = variable_name(fingerprint), kept.model_dump(mode="json")
            try:
                await client.create_variable(VariableCreate(name=name, value=value, tags=TAGS))
            except ObjectAlreadyExists:
                await client.update_variable(VariableUpdate(name=name, value=value, tags=TAGS))


async def recall(fingerprints: Iterable[str]) -> dict[str, KeptDecision]:
    """The kept decisions of these drafts, by fingerprint (one request for all)."""
    by_name = {variable_name(f): f for f in fingerprints if f}
    if not by_name:
        return {}
    async with get_client() as client:
        response = await client.request("POST", "/variables/filter", json={"variables": {"name": {"any_": list(by_name)}}})
    kept: dict[str, KeptDecision] = {}
    for variable in response.json():
        try:
            kept[by_name[variable["name"]]] = KeptDecision.model_validate(variable["value"])
        except (KeyError, ValidationError):
            continue  # not ours after all (a user's variable of that name): ask
    return kept
