"""Prefect tasks: submit, poll and archive one keyframe-pair video. Each works on its own."""

from prefect_wan.tasks.archive import archive_video
from prefect_wan.tasks.caching import SubmissionCachePolicy, retry_if_transient
from prefect_wan.tasks.poll import poll_video
from prefect_wan.tasks.submit import submit_video

__all__ = ["SubmissionCachePolicy", "archive_video", "poll_video", "retry_if_transient", "submit_video"]
