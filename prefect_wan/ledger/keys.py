"""The name of one piece of work at one endpoint: the Prefect cache key of its submission and the
name of its submission record."""

from __future__ import annotations

from typing import Optional

from prefect.utilities.hashing import hash_objects


def submission_key(fingerprint: str, *, region: str, base_url: str, workspace: Optional[str]) -> str:
    """No secret enters it; the region, host and workspace do, since a task id only answers where it was created."""
    return f"prefect-wan-submit-{hash_objects(fingerprint, region, base_url, workspace)}"
