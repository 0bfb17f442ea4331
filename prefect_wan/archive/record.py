"""The JSON sidecar written beside every archived video. Never holds a secret or a signed URL."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from pydantic import BaseModel, Field

# 2: adds ``endpoint``.
SIDECAR_SCHEMA_VERSION = 2


class FrameRecord(BaseModel):
    source: str = Field(description="Where the frame came from (query strings removed).")
    sha256: str
    bytes: int
    format: Optional[str] = None
    width: int = 0
    height: int = 0


class RequestRecord(BaseModel):
    """What was asked for, as sent (prompts after any opted-in truncation)."""

    model: str
    region: str
    family: str
    prompt: Optional[str] = None
    negative_prompt: Optional[str] = None
    resolution: Optional[str] = None
    ratio: Optional[str] = None
    audio: Optional[bool] = None
    duration: Optional[int] = Field(default=None, description="Requested seconds; -1 let the service choose (wan3.0).")
    prompt_extend: Optional[bool] = None
    watermark: Optional[bool] = None
    seed: Optional[int] = None
    template: Optional[str] = None
    first_frame: FrameRecord
    last_frame: Optional[FrameRecord] = None
    driving_audio: Optional[FrameRecord] = None
    predicted_size: Optional[tuple[int, int]] = None


class VideoProbe(BaseModel):
    """What PyAV found in the file."""

    codec: str
    fps: float
    duration_seconds: float
    width: int
    height: int
    frames: int
    audio_codec: Optional[str] = None


class CostEstimate(BaseModel):
    amount: Optional[float] = None
    currency: Optional[str] = None
    unit_price: Optional[float] = None
    billed_seconds: Optional[float] = None
    confirmed: bool = False
    note: str = ""


class ArchivedFile(BaseModel):
    path: str
    url: str
    bytes: int
    sha256: str


class ArchiveRecord(BaseModel):
    """Everything worth knowing about one archived video."""

    schema_version: int = SIDECAR_SCHEMA_VERSION
    fingerprint: str
    endpoint: Optional[str] = Field(default=None, description="Host (and workspace) that made the video; never a key.")
    label: Optional[str] = None
    request: RequestRecord
    task_id: str
    submit_request_id: Optional[str] = None
    query_request_id: Optional[str] = None
    submitted_at: Optional[datetime] = None
    scheduled_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    archived_at: datetime
    orig_prompt: Optional[str] = None
    actual_prompt: Optional[str] = None
    usage: dict[str, Any] = Field(default_factory=dict)
    cost: CostEstimate = Field(default_factory=CostEstimate)
    source_video_url: str = Field(description="The service's video URL without its signature.")
    video: ArchivedFile
    probe: VideoProbe
    poster: Optional[ArchivedFile] = Field(default=None, description="PNG contact sheet: first, middle and last frames.")
    warnings: list[str] = Field(default_factory=list)
    producer: str = "prefect-wan"


class SegmentRecord(BaseModel):
    """One transition of a storyboard, in order."""

    index: int
    label: str
    fingerprint: str
    task_id: str
    video_url: str
    sidecar_url: str
    seconds: float
    cost: CostEstimate


class StitchRecord(BaseModel):
    method: str = Field(description="remux (packets untouched) or reencode.")
    reason: str
    drop_boundary: bool
    fit: Optional[str] = None
    dropped_frames: int = 0


class StoryboardRecord(BaseModel):
    """The sidecar of a stitched storyboard: its segments in order, how they were joined, what it cost."""

    schema_version: int = SIDECAR_SCHEMA_VERSION
    kind: str = "storyboard"
    fingerprint: str
    endpoint: Optional[str] = None
    label: Optional[str] = None
    segments: list[SegmentRecord]
    stitch: StitchRecord
    total_cost: CostEstimate
    archived_at: datetime
    video: ArchivedFile
    probe: VideoProbe
    poster: Optional[ArchivedFile] = Field(default=None, description="PNG contact sheet: the first frame of each segment, and the last.")
    producer: str = "prefect-wan"
