"""Pydantic models of DashScope's JSON, shared by the client and the emulator.

Every model tolerates fields the service adds (``task_metrics``, ``SR``, ``video_ratio``...) and
fields it leaves out.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Optional

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

# The service prints times as "YYYY-MM-DD HH:mm:ss.SSS" with no zone. UNCONFIRMED: both regions
# that serve these models (Beijing, Singapore) are UTC+8, so that is what we assume and emit.
SERVICE_TZ = timezone(timedelta(hours=8))
SERVICE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
# The task list answers for windows of at most 24 h; ours stay a little inside that.
LIST_WINDOW = timedelta(hours=23, minutes=55)


def format_service_time(moment: datetime) -> str:
    return moment.astimezone(SERVICE_TZ).strftime(SERVICE_TIME_FORMAT)[:-3]


def parse_service_time(text: str | None) -> datetime | None:
    if not text:
        return None
    for fmt in (SERVICE_TIME_FORMAT, "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=SERVICE_TZ)
        except ValueError:
            continue
    return None


class WireModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class TaskStatus(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"


# --- create request -------------------------------------------------------------------------


class MediaItem(WireModel):
    type: str
    url: str


class TaskInput(WireModel):
    """``input`` of a create call. kf2v uses the ``*_frame_url`` fields, wan2.7 uses ``media``."""

    prompt: Optional[str] = None
    negative_prompt: Optional[str] = None
    first_frame_url: Optional[str] = None
    last_frame_url: Optional[str] = None
    template: Optional[str] = None
    media: Optional[list[MediaItem]] = None


class TaskParameters(WireModel):
    resolution: Optional[str] = None
    ratio: Optional[str] = None  # wan3.0
    audio: Optional[bool] = None  # wan3.0
    duration: Optional[int] = None
    prompt_extend: Optional[bool] = None
    watermark: Optional[bool] = None
    seed: Optional[int] = None


class CreateTaskBody(WireModel):
    model: str
    input: TaskInput
    parameters: TaskParameters = Field(default_factory=TaskParameters)

    def to_json(self) -> dict[str, Any]:
        body = self.model_dump(mode="json", exclude_none=True)
        body.setdefault("parameters", {})
        return body


# --- responses ------------------------------------------------------------------------------


class ErrorBody(WireModel):
    code: Optional[str] = None
    message: Optional[str] = Field(default=None, validation_alias=AliasChoices("message", "msg"))
    request_id: Optional[str] = None


class TaskOutput(WireModel):
    task_id: str
    task_status: TaskStatus
    submit_time: Optional[str] = None
    scheduled_time: Optional[str] = None
    end_time: Optional[str] = None
    video_url: Optional[str] = None
    orig_prompt: Optional[str] = None
    actual_prompt: Optional[str] = None
    code: Optional[str] = None
    message: Optional[str] = None
    task_metrics: Optional[dict[str, int]] = None

    @field_validator("task_status", mode="before")
    @classmethod
    def _unknown_status_is_unknown(cls, value: Any) -> Any:
        # A status we have never seen must not break polling; treat it as not final.
        if isinstance(value, str) and value not in TaskStatus.__members__:
            return TaskStatus.SUSPENDED
        return value


def _plain(value: Any, *, numeric: bool) -> bool:
    if not numeric:
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


class VideoUsage(WireModel):
    """``usage`` of a SUCCEEDED task. kf2v bills ``video_duration``, wan2.7 bills ``duration``."""

    video_duration: Optional[float] = None
    duration: Optional[float] = None
    input_video_duration: Optional[float] = None
    output_video_duration: Optional[float] = None
    video_count: Optional[int] = None
    SR: Optional[int] = None
    video_ratio: Optional[str] = None

    @field_validator("*", mode="wrap")
    @classmethod
    def _odd_value_is_missing(cls, value: Any, handler: Any) -> Any:
        # Usage describes a video already paid for: a field of an unexpected type ("5s", [5]) must
        # never make the answer unreadable and the video lost; it is kept raw as an extra instead.
        try:
            return handler(value)
        except ValueError:
            return None

    @model_validator(mode="before")
    @classmethod
    def _keep_odd_values(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for name in cls.model_fields:
                value = data.get(name)
                if value is not None and not _plain(value, numeric=name != "video_ratio"):
                    data[f"raw_{name}"] = value
        return data

    @property
    def billed_seconds(self) -> float | None:
        return self.duration if self.duration is not None else self.video_duration


class TaskResponse(WireModel):
    """Answer of create (PENDING) and of query (any status)."""

    request_id: Optional[str] = None
    output: TaskOutput
    usage: Optional[VideoUsage] = None

    @field_validator("usage", mode="before")
    @classmethod
    def _usage_must_be_a_mapping(cls, value: Any) -> Any:
        return value if isinstance(value, (dict, VideoUsage)) or value is None else {"raw": value}


class ListedTask(WireModel):
    task_id: str
    status: Optional[str] = None
    model_name: Optional[str] = None
    request_id: Optional[str] = None
    gmt_create: Optional[int] = None
    start_time: Optional[int] = None
    end_time: Optional[int] = None
    region: Optional[str] = None
    api_key_id: Optional[str] = None


class TaskList(WireModel):
    request_id: Optional[str] = None
    total: int = 0
    total_page: int = 0
    page_no: int = 1
    page_size: int = 10
    data: list[ListedTask] = Field(default_factory=list)


class CancelResponse(WireModel):
    request_id: Optional[str] = None


class UploadPolicy(WireModel):
    policy: str
    signature: str
    upload_dir: str
    upload_host: str
    expire_in_seconds: Optional[int] = None
    max_file_size_mb: Optional[float] = None
    capacity_limit_mb: Optional[float] = None
    oss_access_key_id: str
    x_oss_object_acl: str = "private"
    x_oss_forbid_overwrite: str = "true"


class UploadPolicyResponse(WireModel):
    request_id: Optional[str] = None
    data: UploadPolicy
