"""What the client hands back: a submitted task and a finished video, normalised across families."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from prefect_wan.client.wire import TaskResponse, TaskStatus, VideoUsage, parse_service_time


class SubmittedTask(BaseModel):
    """A task the service accepted. Small and JSON-serialisable: it is what Prefect caches."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    request_id: Optional[str]
    model: str
    region: str
    fingerprint: str
    submitted_at: datetime
    resolution: Optional[str] = None
    duration: Optional[int] = None
    output_size: Optional[tuple[int, int]] = None
    endpoint: Optional[str] = Field(default=None, description="Host (and workspace) the task belongs to.")
    reused_from: Optional[str] = Field(default=None, description="'journal' or 'reconciled' when this run found the task instead of creating it.")
    verify_prompt: Optional[str] = Field(default=None, description="Our prompt, for a task adopted before its prompt could be seen: checked when it shows.")


class VideoResult(BaseModel):
    """A SUCCEEDED task, with usage read the same way for every family."""

    task_id: str
    status: TaskStatus
    video_url: str
    request_id: Optional[str] = None
    orig_prompt: Optional[str] = None
    actual_prompt: Optional[str] = None
    submit_time: Optional[datetime] = None
    scheduled_time: Optional[datetime] = None
    end_time: Optional[datetime] = None
    usage: VideoUsage = VideoUsage()
    billed_seconds: Optional[float] = None
    resolution_tier: Optional[int] = None

    @classmethod
    def from_response(cls, response: TaskResponse) -> VideoResult:
        out = response.output
        usage = response.usage or VideoUsage()
        return cls(
            task_id=out.task_id,
            status=out.task_status,
            video_url=out.video_url or "",
            request_id=response.request_id,
            orig_prompt=out.orig_prompt,
            actual_prompt=out.actual_prompt,
            submit_time=parse_service_time(out.submit_time),
            scheduled_time=parse_service_time(out.scheduled_time),
            end_time=parse_service_time(out.end_time),
            usage=usage,
            billed_seconds=usage.billed_seconds,
            resolution_tier=usage.SR,
        )
