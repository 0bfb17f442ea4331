"""Media work beside the service: one pass over a video (probe, poster frames, observers), the shot
checks and their motion profile, posters, joining clips."""

from prefect_wan.archive.record import MotionProfile, ShotCheck, ShotChecks
from prefect_wan.media.check import VideoCheckError, check_video, recheck
from prefect_wan.media.poster import contact_sheet
from prefect_wan.media.scan import CorruptVideoError, VideoScan, scan_video
from prefect_wan.media.shots import ShotThresholds
from prefect_wan.media.stitch import StitchError, StitchResult, stitch

__all__ = [
    "CorruptVideoError",
    "MotionProfile",
    "ShotCheck",
    "ShotChecks",
    "ShotThresholds",
    "StitchError",
    "StitchResult",
    "VideoCheckError",
    "VideoScan",
    "check_video",
    "contact_sheet",
    "recheck",
    "scan_video",
    "stitch",
]
