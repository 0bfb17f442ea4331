"""Prefect flows: one keyframe pair, or a batch of them."""

from prefect_wan.flows.batch import BatchFailedError, keyframes_batch
from prefect_wan.flows.keyframes import keyframes_to_video
from prefect_wan.flows.manifest import ManifestError, load_manifest
from prefect_wan.flows.models import ArchivedVideo, BatchResult, GenerationOptions, KeyframePair, PairFailure

__all__ = [
    "ArchivedVideo", "BatchFailedError", "BatchResult", "GenerationOptions", "KeyframePair", "ManifestError",
    "PairFailure", "keyframes_batch", "keyframes_to_video", "load_manifest",
]
