"""Media work beside the service: one pass over a video (probe, poster frames, observers), posters, joining clips."""

from prefect_wan.media.poster import contact_sheet
from prefect_wan.media.scan import CorruptVideoError, VideoScan, scan_video
from prefect_wan.media.stitch import StitchError, StitchResult, stitch

__all__ = ["CorruptVideoError", "StitchError", "StitchResult", "VideoScan", "contact_sheet", "scan_video", "stitch"]
