"""Media work beside the service: joining clips."""

from prefect_wan.media.stitch import StitchError, StitchResult, stitch

__all__ = ["StitchError", "StitchResult", "stitch"]
