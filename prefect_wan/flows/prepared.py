"""A pair prepared once per run (frames read, checked, hashed; its record and its price) and
handed down to everything that needs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from prefect_wan.archive.record import CostEstimate, FrameRecord, RequestRecord
from prefect_wan.client.images import LoadedMedia
from prefect_wan.client.preflight import PreparedRequest, reseeded, revised
from prefect_wan.client.request import KeyframeVideoRequest
from prefect_wan.flows.models import GenerationOptions, KeyframePair
from prefect_wan.flows.quality import take_seed
from prefect_wan.spend.pricing import estimate_request_cost


def _frame(media: LoadedMedia) -> FrameRecord:
    return FrameRecord(
        source=media.origin,
        sha256=media.sha256,
        bytes=media.size,
        format=media.format,
        width=media.width,
        height=media.height,
    )


def request_record(prepared: PreparedRequest) -> RequestRecord:
    """What the sidecar says was asked for."""
    params = prepared.parameters
    return RequestRecord(
        model=prepared.spec.name,
        region=prepared.region.value,
        family=prepared.family.name,
        prompt=prepared.prompt,
        negative_prompt=prepared.negative_prompt,
        resolution=params.resolution,
        ratio=params.ratio,
        audio=params.audio,
        duration=params.duration,
        prompt_extend=params.prompt_extend,
        watermark=params.watermark,
        seed=params.seed,
        template=prepared.request.template,
        first_frame=_frame(prepared.first_frame),
        last_frame=_frame(prepared.last_frame) if prepared.last_frame else None,
        driving_audio=_frame(prepared.driving_audio) if prepared.driving_audio else None,
        predicted_size=prepared.output_size,
    )


@dataclass(frozen=True)
class PreparedPair:
    """A pair read, checked and hashed once per run, and handed down to all that needs it."""

    pair: KeyframePair
    label: str
    prepared: PreparedRequest
    record: RequestRecord
    cost: CostEstimate

    @property
    def fingerprint(self) -> str:
        return self.prepared.fingerprint

    @property
    def keyframes(self) -> tuple[Optional[bytes], Optional[bytes]]:
        """The first and last keyframe's bytes, for the shot checks."""
        last = self.prepared.last_frame
        return self.prepared.first_frame.data, last.data if last is not None else None

    def retake(self, take: int) -> PreparedPair:
        """Take ``take`` of this pair: the same request with that take's seed (frames not read again)."""
        seed = take_seed(self.fingerprint, take)
        prepared = reseeded(self.prepared, seed)
        return PreparedPair(self.pair.model_copy(update={"seed": seed}), f"{self.label}-take{take}", prepared, request_record(prepared), self.cost)

    def variant(self, pair: KeyframePair, options: GenerationOptions) -> PreparedPair:
        """``pair`` (this one with other fields: a draft, a draft's retake, a final) over the frames
        already read; every rule checked again."""
        return PreparedPair.of(pair, revised(self.prepared, pair.to_request(options, self.prepared.request.storage_options)))

    @classmethod
    def of(cls, pair: KeyframePair, prepared: PreparedRequest) -> PreparedPair:
        return cls(pair, pair.display_label(), prepared, request_record(prepared), estimate_request_cost(prepared))


# Requests a caller of this process prepared already (the CLI checks a pair before Prefect starts):
# the run takes them instead of reading the frames again.
_HANDED_OVER: dict[tuple[str, str], PreparedRequest] = {}


def _identity(request: KeyframeVideoRequest, region: str) -> Optional[tuple[str, str]]:
    try:
        return request.model_dump_json(), region
    except ValueError:  # bytes or images as sources: nothing to match by
        return None


def hand_over(prepared: PreparedRequest) -> None:
    """Give a prepared request to the next run of this process that prepares the same request."""
    if (identity := _identity(prepared.request, prepared.region.value)) is not None:
        _HANDED_OVER[identity] = prepared


def take_handed_over(request: KeyframeVideoRequest, region: str) -> Optional[PreparedRequest]:
    """The prepared request handed over for this request, once."""
    identity = _identity(request, region)
    return _HANDED_OVER.pop(identity, None) if identity is not None else None
