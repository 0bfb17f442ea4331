"""``WanCredentials``: the region and API key a flow uses to reach DashScope."""

from __future__ import annotations

from typing import Any, Literal, Optional

from prefect.blocks.abstract import CredentialsBlock
from pydantic import Field, SecretStr, model_validator

from prefect_wan.client.access import API_KEY_ENV, BaseUrl, ServiceAccess, unreachable
from prefect_wan.client.client import DashScopeClient
from prefect_wan.client.regions import Region
from prefect_wan.ledger.keys import key_of

__all__ = ["API_KEY_ENV", "WanCredentials"]


class WanCredentials(CredentialsBlock):
    """Region and API key for Alibaba Cloud Model Studio (DashScope) Wan video generation.

    Model, endpoint and key must all be of one region. The key falls back to the
    ``DASHSCOPE_API_KEY`` environment variable when the block holds none.

    Example:
        Load stored credentials and open a client:
        ```python
        from prefect_wan import WanCredentials

        credentials = WanCredentials.load("BLOCK_NAME")
        async with credentials.get_client() as client:
            task = await client.get_task("TASK_ID")
        ```
    """

    _block_type_name = "Wan Credentials"
    _block_type_slug = "wan-credentials"
    # Prefect annotates these as HttpUrl and validates strings itself, as its own integrations rely on.
    _logo_url = "https://img.alicdn.com/imgextra/i4/O1CN01EfJVFQ1uZPd7W4W6i_!!6000000006051-2-tps-112-112.png"  # type: ignore[assignment]
    _documentation_url = "https://www.alibabacloud.com/help/en/model-studio/image-to-video-by-first-and-last-frame-api-reference"  # type: ignore[assignment]

    region: Literal["singapore", "beijing", "tokyo", "frankfurt", "virginia"] = Field(
        default="singapore",
        description="DashScope region of the key and models. Tokyo, Frankfurt and Virginia are served from workspace hosts only.",
    )
    api_key: Optional[SecretStr] = Field(
        default=None,
        title="API Key",
        description="DashScope API key (sk-...); when empty, DASHSCOPE_API_KEY is used.",
    )
    base_url: BaseUrl = Field(
        default=None,
        title="Base URL",
        description="Override of the region's host, for a proxy or the local emulator.",
    )
    workspace: Optional[str] = Field(
        default=None,
        description="Workspace id: sent as X-DashScope-WorkSpace, and names the workspace host.",
    )
    workspace_host: bool = Field(
        default=False,
        description="Use the workspace's host ({workspace}.{region id}.maas.aliyuncs.com) instead of the region's classic one; "
        "always so in regions without a classic host.",
    )
    min_submit_interval: Optional[float] = Field(
        default=None,
        ge=0,
        description="Seconds between task submissions from one process; empty uses the model's documented rate.",
    )
    timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Read timeout of each HTTP call, in seconds.",
    )

    @model_validator(mode="after")
    def _reachable(self) -> WanCredentials:
        if (why := unreachable(Region(self.region), self.base_url, self.workspace, self.workspace_host)) is not None:
            raise ValueError(why)
        return self

    def access(self) -> ServiceAccess:
        """This block's account as a ``ServiceAccess`` (what code without Prefect works with)."""
        return ServiceAccess.model_validate(self.model_dump(include=set(ServiceAccess.model_fields)))

    @classmethod
    def of(cls, access: ServiceAccess) -> WanCredentials:
        """The block holding ``access``."""
        return cls.model_validate(access.model_dump())

    @property
    def effective_base_url(self) -> str:
        return self.access().effective_base_url

    @property
    def endpoint(self) -> str:
        """The host and workspace tasks and archives belong to (no secret)."""
        return self.access().endpoint

    def submission_key(self, fingerprint: str) -> str:
        """The name of this work at this endpoint: its submit task's cache key and its submission record."""
        return key_of(fingerprint, self.access())

    def resolved_api_key(self) -> SecretStr:
        """The block's key, else ``DASHSCOPE_API_KEY``; raises ``MissingApiKeyError``."""
        return self.access().resolved_api_key()

    def get_client(self, **kwargs: Any) -> DashScopeClient:
        """A new ``DashScopeClient`` for this region (``ServiceAccess.client``'s overrides); close it (``async with``) when done."""
        return self.access().client(**kwargs)
