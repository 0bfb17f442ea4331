"""prefect-wan: keyframe pairs to videos with Alibaba Cloud Wan, orchestrated by Prefect."""

from prefect_wan.blocks import WanCredentials
from prefect_wan.client import (
    DashScopeClient,
    KeyframeVideoRequest,
    PollSchedule,
    Region,
    SubmittedTask,
    VideoResult,
    predict_output_size,
)

__all__ = [
    "DashScopeClient",
    "KeyframeVideoRequest",
    "PollSchedule",
    "Region",
    "SubmittedTask",
    "VideoResult",
    "WanCredentials",
    "predict_output_size",
]
