"""Errors of the archive: a destination that cannot be used, a video that did not arrive whole."""

from __future__ import annotations

from prefect_wan.client.errors import WanError


class ArchiveDestinationError(WanError, OSError):
    """The archive (or another store) cannot be read or written; found before anything is paid for."""


class VideoDownloadError(WanError):
    """The video could not be downloaded or stored completely."""

    retryable = True


class VideoUrlExpiredError(VideoDownloadError):
    """The signed video URL no longer answers (24 h lifetime)."""

    retryable = False
