"""The JSON sidecar written beside every archived video. Never holds a secret or a signed URL."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional, Union

from pydantic import BaseModel, Field

# 2: adds ``endpoint``. 3: adds ``checks`` and ``takes``. 4: adds ``profile`` and the transition checks.
# 5: the profile adds ``mix``, ``end_mix`` and ``end_reference``. 6: the profile's ``content`` is
# gone: it was ``difference`` on every other grid sample, and the cut check now reads ``difference``.
SIDECAR_SCHEMA_VERSION = 6


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
    rendered_by: Optional[str] = Field(default=None, description="Who rendered it when the file says so: 'the prefect-wan emulator', not the Wan model.")


class MotionProfile(BaseModel):
    """The per-frame curves the shot checks read (prefect_wan.media.profile says how each is
    measured), kept so any threshold can be applied again without the video."""

    fps: float
    frames: int
    size: tuple[int, int] = Field(description="The small frame every curve was measured on (width, height).")
    sample_step: int = Field(description="Frames between samples: motion, to_first ... colour_b hold one value a sample.")
    luma: list[float] = Field(default_factory=list, description="Mean luma per frame (0-255).")
    difference: list[float] = Field(
        default_factory=list,
        description="Mean absolute luma difference of each frame after the first to the one before (PySceneDetect's content score, luma alone).",
    )
    motion: list[float] = Field(default_factory=list, description="Top-5 % optical-flow magnitude from each sample to the next, in pixels of the sample.")
    to_first: list[float] = Field(default_factory=list, description="Correlation of each sample's shapes (a band of detail) with the first keyframe's.")
    to_last: list[float] = Field(default_factory=list, description="Correlation of each sample's shapes (a band of detail) with the last keyframe's.")
    mix: list[Optional[float]] = Field(
        default_factory=list, description="Share of each sample's fine detail only the two keyframes together explain, in place (None: keyframes alike)."
    )
    colour_l: list[float] = Field(default_factory=list, description="Mean L* per frame.")
    colour_a: list[float] = Field(default_factory=list, description="Mean a* per frame.")
    colour_b: list[float] = Field(default_factory=list, description="Mean b* per frame.")
    first_colour: Optional[list[float]] = Field(default=None, description="The first keyframe's mean L*a*b*.")
    last_colour: Optional[list[float]] = Field(default=None, description="The last keyframe's mean L*a*b*.")
    first_ssim: Optional[float] = Field(default=None, description="SSIM of the first frame with the first keyframe.")
    end_ssim: list[float] = Field(default_factory=list, description="SSIM of each of the last frames (the end window) with the last keyframe.")
    end_colour: Optional[list[float]] = Field(default=None, description="Mean L*a*b* of the end window's frame most like the last keyframe.")
    end_reference: Optional[int] = Field(default=None, description="The sample half a second before the end that end_mix reads against.")
    end_mix: list[Optional[float]] = Field(
        default_factory=list,
        description="Share of each end-window frame's fine detail only the last keyframe and the reference sample explain together, in place (a morph).",
    )


class ShotCheck(BaseModel):
    """One check of a shot: what was measured, the line it is held to, and the verdict."""

    name: str = Field(description="first_frame, end_window, dissolve, cut, morph, flicker, motion, colour, revert, black, frozen, duration or size.")
    value: Union[float, str]
    threshold: Union[float, str]
    passed: bool
    frames: list[int] = Field(default_factory=list, description="Where it failed: the frames the chart marks.")
    at_least: bool = Field(default=False, description="The value must reach the threshold (else stay at or below it).")


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
            f"{i.name} {i.value} {'<' if i.at_least else '>' if isinstance(i.value, float) else '!='} {i.threshold}" for i in self.items if not i.passed
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
    checks: Optional[ShotChecks] = Field(default=None, description="The shot checks: keyframes, transition, black, frozen, duration, size.")
    profile: Optional[MotionProfile] = Field(default=None, description="The per-frame curves the checks read: apply other thresholds without the video.")
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
