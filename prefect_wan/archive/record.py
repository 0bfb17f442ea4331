"""The JSON sidecar written beside every archived video. Never holds a secret or a signed URL."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional, Union

from pydantic import BaseModel, Field

# 2: adds ``endpoint``. 3: adds ``checks`` and ``takes``.
SIDECAR_SCHEMA_VERSION = 3


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


class ShotCheck(BaseModel):
    """One check of a shot: what was measured, the line it is held to, and the verdict."""

    name: str = Field(description="first_frame, last_frame, black, frozen, duration or size.")
    value: Union[float, str]
    threshold: Union[float, str]
    passed: bool


class ShotChecks(BaseModel):
    """The checks of one video against its keyframes and its request."""

    passed: bool
    items: list[ShotCheck] = Field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [item.name for item in self.items if not item.passed]

    def summary(self) -> str:
        """``passed`` or ``failed: last_frame 0.41 < 0.75, frozen 3.1 > 2``."""
        if self.passed:
            return "passed"
        return "failed: " + ", ".join(
            f"{i.name} {i.value} {'<' if i.name.endswith('_frame') else '>' if isinstance(i.value, float) else '!='} {i.threshold}"
            for i in self.items
            if not i.passed
        )


class TakeRecord(BaseModel):
    """One take of a pair under a quality gate."""

    take: int = Field(description="1 is the pair as asked; later takes change only the seed.")
    fingerprint: str
    seed: Optional[int] = None
    task_id: str
    video_url: str
    checks: Optional[ShotChecks] = None
    chosen: bool = False


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
    checks: Optional[ShotChecks] = Field(default=None, description="The shot checks: keyframe adherence, black, frozen, duration, size.")
    takes: list[TakeRecord] = Field(default_factory=list, description="Under a quality gate: every take of the pair, and which one was chosen.")
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
    model: Optional[str] = None


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
