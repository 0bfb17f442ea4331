"""The quality gate: a shot that fails its checks is taken again with another seed, within budget.

Take 1 is the pair as asked. Take n (n > 1) changes only the seed, derived from the pair's
fingerprint and n: the same takes on every run, so a re-run after a crash finds each take archived,
or recorded in the submission journal, and never pays for one twice. Every take is archived under
its own fingerprint (none is overwritten); the chosen one (the first that passes, else the best by
its checks) lists them all in its sidecar.
"""

from __future__ import annotations

import hashlib
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from prefect_wan.archive.record import ShotChecks
from prefect_wan.client.preflight import SEED_MAX
from prefect_wan.media.shots import ShotThresholds


class QualityGate(BaseModel):
    """Retakes for shots that fail their checks: ``QualityGate(retakes=2)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retakes: int = Field(default=2, ge=0, le=10, description="Takes after the first, at most, while the shot fails its checks.")
    thresholds: ShotThresholds = Field(default_factory=ShotThresholds, description="Where each check draws its line.")


def take_seed(fingerprint: str, take: int) -> int:
    """The seed of take ``take`` (> 1) of the work ``fingerprint``."""
    digest = hashlib.sha256(f"prefect-wan take {take} of {fingerprint}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (SEED_MAX + 1)


def score(checks: Optional[ShotChecks]) -> tuple[int, float]:
    """How good a take is: checks passed, then how close it lands on its keyframes."""
    if checks is None:
        return (0, 0.0)
    closeness = sum(float(i.value) for i in checks.items if i.name.endswith("_frame") and isinstance(i.value, (int, float)))
    return (sum(i.passed for i in checks.items), closeness)
