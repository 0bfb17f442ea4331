"""DashScope regions and their API hosts: a classic host where there is one, and workspace hosts."""

from __future__ import annotations

from enum import Enum
from typing import Optional
from urllib.parse import urlsplit, urlunsplit


class Region(str, Enum):
    """A DashScope region. Model names, API keys and hosts belong to exactly one region."""

    BEIJING = "beijing"
    SINGAPORE = "singapore"
    TOKYO = "tokyo"
    FRANKFURT = "frankfurt"
    VIRGINIA = "virginia"

    @property
    def region_id(self) -> str:
        """Alibaba Cloud's id of the region, as it appears in workspace hosts."""
        return _REGION_IDS[self]

    @property
    def classic_base_url(self) -> Optional[str]:
        """The region's shared host, where the first-and-last-frame models are served from one."""
        return _CLASSIC_BASE_URLS.get(self)

    @property
    def base_url(self) -> str:
        """The classic host; raises ``ValueError`` for regions served only from workspace hosts."""
        url = self.classic_base_url
        if url is None:
            raise ValueError(
                f"region {self.value} is served only from workspace hosts ({workspace_base_url(self, '<WorkspaceId>')}): "
                "give the workspace id, or a full base_url"
            )
        return url


_REGION_IDS: dict[Region, str] = {
    Region.BEIJING: "cn-beijing",
    Region.SINGAPORE: "ap-southeast-1",
    Region.TOKYO: "ap-northeast-1",
    Region.FRANKFURT: "eu-central-1",
    Region.VIRGINIA: "us-east-1",
}

# Classic hosts serving the first-and-last-frame models. Virginia's dashscope-us host serves other
# models only (kf2v and wan2.7 are not offered there), and wan3.0 is documented on workspace hosts
# alone; so Tokyo, Frankfurt and Virginia have none here.
_CLASSIC_BASE_URLS: dict[Region, str] = {
    Region.SINGAPORE: "https://dashscope-intl.aliyuncs.com",
    Region.BEIJING: "https://dashscope.aliyuncs.com",
}


def workspace_base_url(region: Region, workspace_id: str) -> str:
    """``https://{WorkspaceId}.{region id}.maas.aliyuncs.com``, the newer per-workspace host."""
    return f"https://{workspace_id}.{region.region_id}.maas.aliyuncs.com"


def endpoint_identity(base_url: str, workspace: str | None = None) -> str:
    """Whose videos an archive holds: host and workspace, never a key. A loopback host (the bundled
    emulator, on whatever port it got) is one identity, so a re-run against a new emulator reuses
    what the last one made; it never stands in for a region's hosts."""
    parts = urlsplit(base_url)
    if (parts.hostname or "") in ("localhost", "::1") or (parts.hostname or "").startswith("127."):
        base_url = urlunsplit((parts.scheme, "localhost", parts.path, "", ""))
    return f"{base_url}#workspace={workspace}" if workspace else base_url


def is_public_endpoint(endpoint: str) -> bool:
    """A region's own public host (classic, or a workspace host), not an emulator or proxy."""
    host = endpoint.split("#", 1)[0]
    return host in _CLASSIC_BASE_URLS.values() or (host.startswith("https://") and host.endswith(".maas.aliyuncs.com"))
