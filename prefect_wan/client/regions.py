"""DashScope regions and their public API hosts."""

from __future__ import annotations

from enum import Enum


class Region(str, Enum):
    """A DashScope region. Model names, API keys and hosts belong to exactly one region."""

    SINGAPORE = "singapore"
    BEIJING = "beijing"

    @property
    def base_url(self) -> str:
        return _BASE_URLS[self]


_BASE_URLS: dict[Region, str] = {
    Region.SINGAPORE: "https://dashscope-intl.aliyuncs.com",
    Region.BEIJING: "https://dashscope.aliyuncs.com",
}


def endpoint_identity(base_url: str, workspace: str | None = None) -> str:
    """Where a task id answers and whose videos an archive holds: host and workspace, never a key."""
    return f"{base_url}#workspace={workspace}" if workspace else base_url


def is_public_endpoint(endpoint: str) -> bool:
    """A region's own public host with no workspace (not an emulator, proxy or workspace host)."""
    return endpoint in _BASE_URLS.values()
