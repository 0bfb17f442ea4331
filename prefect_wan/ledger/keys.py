"""The name of one piece of work at one endpoint: the Prefect cache key of its submission and the
name of its submission record."""

from __future__ import annotations

import hashlib
import json
from typing import Optional

from prefect_wan.client.access import ServiceAccess


def submission_key(fingerprint: str, *, region: str, base_url: str, workspace: Optional[str]) -> str:
    """No secret enters it; the region, host and workspace do, since a task id only answers where it was created.

    The digest is the one ``prefect.utilities.hashing.hash_objects`` gives these strings (md5 of
    their sorted JSON), computed here so a command can name its work before Prefect is imported;
    records written by earlier versions keep their names (a test holds the two equal)."""
    document = json.dumps([[fingerprint, region, base_url, workspace], {}], sort_keys=True)
    return f"prefect-wan-submit-{hashlib.md5(document.encode(), usedforsecurity=False).hexdigest()}"


def key_of(fingerprint: str, access: ServiceAccess) -> str:
    """The work's name at ``access``'s endpoint (what ``WanCredentials.submission_key`` says)."""
    return submission_key(fingerprint, region=access.region.value, base_url=access.effective_base_url, workspace=access.workspace)
