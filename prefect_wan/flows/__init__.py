"""Prefect flows: one keyframe pair, a batch of them, or a storyboard through many keyframes."""

from prefect_wan.flows.batch import BatchFailedError, keyframes_batch
from prefect_wan.flows.keyframes import keyframes_to_video
from prefect_wan.flows.manifest import ManifestError, load_manifest
from prefect_wan.flows.models import ArchivedVideo, BatchResult, GenerationOptions, KeyframePair, PairFailure
from prefect_wan.flows.quality import QualityGate
from prefect_wan.flows.storyboard import ArchivedStoryboard, StoryboardFailedError, keyframes_storyboard

__all__ = [
    "QualityGate",
    "ArchivedStoryboard",
    "ArchivedVideo",
    "BatchFailedError",
    "BatchResult",
    "GenerationOptions",
    "KeyframePair",
    "ManifestError",
    "PairFailure",
    "StoryboardFailedError",
    "keyframes_batch",
    "keyframes_storyboard",
    "keyframes_to_video",
    "load_manifest",
]
