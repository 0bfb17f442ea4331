"""``WanCredentials``: the region and API key a flow uses to reach DashScope."""

from __future__ import annotations

import os
from typing import Literal, Optional

import httpx
from prefect.blocks.abstract import CredentialsBlock
from pydantic import Field, SecretStr, field_validator, model_validator

from prefect_wan.client.client import DashScopeClient, normalize_base_url
from prefect_wan.client.errors import MissingApiKeyError
from prefect_wan.client.regions import Region, endpoint_identity, workspace_base_url
from prefect_wan.ledger.keys import submission_key

API_KEY_ENV = "DASHSCOPE_API_KEY"


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
    base_url: Optional[str] = Field(
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

    @field_validator("base_url")
    @classmethod
    def _valid_base_url(cls, value: Optional[str]) -> Optional[str]:
        return None if value in (None, "") else normalize_base_url(value)

    @model_validator(mode="after")
    def _reachable(self) -> WanCredentials:
        region = Region(self.region)
        if self.base_url is None and not self.workspace and (self.workspace_host or region.classic_base_url is None):
            raise ValueError(
                f"region {region.value} needs a workspace id to build its host ({workspace_base_url(region, '<WorkspaceId>')}), or a full base_url"
            )
        return self

    @property
    def effective_base_url(self) -> str:
        region = Region(self.region)
        if self.base_url:
            return self.base_url
        if self.workspace and (self.workspace_host or region.classic_base_url is None):
            return workspace_base_url(region, self.workspace)
        return region.base_url

    @property
    def endpoint(self) -> str:
        """The host and workspace tasks and archives belong to (no secret)."""
        return endpoint_identity(self.effective_base_url, self.workspace)

    def submission_key(self, fingerprint: str) -> str:
        """The name of this work at this endpoint: its submit task's cache key and its submission record."""
        return submission_key(fingerprint, region=self.region, base_url=self.effective_base_url, workspace=self.workspace)

    def resolved_api_key(self) -> SecretStr:
        """The block's key, else ``DASHSCOPE_API_KEY``; raises ``MissingApiKeyError``."""
        if self.api_key is not None and self.api_key.get_secret_value():
            return self.api_key
        from_env = os.environ.get(API_KEY_ENV, "").strip()
        if from_env:
            return SecretStr(from_env)
        raise MissingApiKeyError(
            f"no DashScope API key: set api_key on the WanCredentials block or the {API_KEY_ENV} environment variable (a key of region {self.region})"
        )

    def get_client(self, **kwargs) -> DashScopeClient:
        """A new ``DashScopeClient`` for this region; close it (``async with``) when done."""
        kwargs.setdefault("timeout", httpx.Timeout(self.timeout_seconds, connect=10.0, pool=30.0))
        kwargs.setdefault("min_submit_interval", self.min_submit_interval)
        return DashScopeClient(
            self.resolved_api_key(),
            region=self.region,
            base_url=self.effective_base_url,
            workspace=self.workspace,
            **kwargs,
        )
