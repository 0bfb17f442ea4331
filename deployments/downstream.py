"""A downstream step of a media pipeline, started by an automation when a storyboard is archived.

``prefect.yaml`` deploys it with a trigger on ``prefect_wan.storyboard.archived`` that passes the
archived video's URL as a parameter; replace the body with your own (transcode, publish, notify).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact


@flow(name="storyboard-published")
async def storyboard_published(video_url: str, label: str = "storyboard", segments: int = 0) -> str:
    """Record where the new storyboard is; the place to hand it to the next system."""
    get_run_logger().info("Storyboard %s (%d segments) is archived at %s", label, segments, video_url)
    await acreate_markdown_artifact(
        markdown=f"# {label}\n\n- video: [{video_url}]({video_url})\n- segments: {segments}\n",
        key="storyboard-published",
        description="The storyboard this run was started for",
    )
    return video_url
