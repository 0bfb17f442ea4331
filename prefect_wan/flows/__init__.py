"""Prefect flows: one keyframe pair, a batch of them, or a storyboard through many keyframes.

Names are imported on first use: a command that only reads a manifest or a pair does not pay for
importing every flow (and Prefect's engine) before it can refuse one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect_wan.flows.batch import BatchFailedError, keyframes_batch
    from prefect_wan.flows.drafts import Review
    from prefect_wan.flows.keyframes import keyframes_to_video
    from prefect_wan.flows.manifest import ManifestError, load_manifest
    from prefect_wan.flows.models import ArchivedVideo, BatchResult, GenerationOptions, KeyframePair, PairFailure
    from prefect_wan.flows.quality import QualityGate
    from prefect_wan.flows.storyboard import ArchivedStoryboard, StoryboardFailedError, keyframes_storyboard
    from prefect_wan.media.shots import ShotThresholds

_WHERE = {
    "BatchFailedError": "batch",
    "keyframes_batch": "batch",
    "keyframes_to_video": "keyframes",
    "ManifestError": "manifest",
    "load_manifest": "manifest",
    "ArchivedVideo": "models",
    "BatchResult": "models",
    "GenerationOptions": "models",
    "KeyframePair": "models",
    "PairFailure": "models",
    "QualityGate": "quality",
    "Review": "drafts",
    "ShotThresholds": "quality",
    "ArchivedStoryboard": "storyboard",
    "StoryboardFailedError": "storyboard",
    "keyframes_storyboard": "storyboard",
}

__all__ = [
    "ArchivedStoryboard",
    "ArchivedVideo",
    "BatchFailedError",
    "BatchResult",
    "GenerationOptions",
    "KeyframePair",
    "ManifestError",
    "PairFailure",
    "QualityGate",
    "Review",
    "ShotThresholds",
    "StoryboardFailedError",
    "keyframes_batch",
    "keyframes_storyboard",
    "keyframes_to_video",
    "load_manifest",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
