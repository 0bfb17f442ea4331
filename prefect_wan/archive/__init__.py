"""The video archive: destinations, the sidecar record, probing and atomic publishing."""

from prefect_wan.archive.destination import DEFAULT_DESTINATION, ArchiveDestination, ArchiveDestinationError
from prefect_wan.archive.record import ArchiveRecord, CostEstimate, RequestRecord, VideoProbe
from prefect_wan.archive.store import archive_stem, find_archived, sidecar_name, video_name

__all__ = [
    "DEFAULT_DESTINATION",
    "ArchiveDestination",
    "ArchiveDestinationError",
    "ArchiveRecord",
    "CostEstimate",
    "RequestRecord",
    "VideoProbe",
    "archive_stem",
    "find_archived",
    "sidecar_name",
    "video_name",
]
