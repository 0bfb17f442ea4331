"""``ServiceAccess``: how a process reaches DashScope (region, key, host, workspace), without Prefect.

The ``WanCredentials`` block holds the same fields and hands its work to this model, so a command
that sends before Prefect has loaded names its tasks, records and archive exactly as the run will.
"""

from __future__ import annotations

import os
from typing import Annotated, Optional

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from prefect_wan.client.client import KEEPALIVE_SECONDS, DashScopeClient, normalize_base_url
from prefect_wan.client.errors import MissingApiKeyError
from prefect_wan.client.regions import Region, endpoint_identity, workspace_base_url

API_KEY_ENV = "DASHSCOPE_API_KEY"


def _host_or_none(value: Optional[str]) -> Optional[str]:
    return None if value in (None, "") else normalize_base_url(value)


# A host override: normalized (no trailing "/" or "/api/v1"), empty meaning none.
BaseUrl = Annotated[Optional[str], AfterValidator(_host_or_none)]


class ServiceAccess(BaseModel):
    """Region, key (``DASHSCOPE_API_KEY`` when none), host override and workspace of one account."""

    model_config = ConfigDict(frozen=True)

    region: Region = Region.SINGAPORE
    api_key: Optional[SecretStr] = None
    base_url: BaseUrl = None
    workspace: Optional[str] = None
    workspace_host: bool = False
    min_submit_interval: Optional[float] = Field(default=None, ge=0)
    timeout_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _reachable(self) -> ServiceAccess:
        if (why := unreachable(self.region, self.base_url, self.workspace, self.workspace_host)) is not None:
            raise ValueError(why)
        return self

    @property
    def effective_base_url(self) -> str:
        if self.base_url:
            return self.base_url
        if self.workspace and (self.workspace_host or self.region.classic_base_url is None):
            return workspace_base_url(self.region, self.workspace)
        return self.region.base_url

    @property
    def endpoint(self) -> str:
        """The host and workspace tasks and archives belong to (no secret)."""
        return endpoint_identity(self.effective_base_url, self.workspace)

    def resolved_api_key(self) -> SecretStr:
        """The key given, else ``DASHSCOPE_API_KEY``; raises ``MissingApiKeyError``."""
        if self.api_key is not None and self.api_key.get_secret_value():
            return self.api_key
        from_env = os.environ.get(API_KEY_ENV, "").strip()
        if from_env:
            return SecretStr(from_env)
        raise MissingApiKeyError(
            f"no DashScope API key: set api_key on the WanCredentials block or the {API_KEY_ENV} environment variable (a key of region {self.region.value})"
        )

    def client(
        self,
        *,
        timeout: Optional[httpx.Timeout] = None,
        min_submit_interval: Optional[float] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
        keepalive_expiry: float = KEEPALIVE_SECONDS,
    ) -> DashScopeClient:
        """A new ``DashScopeClient`` for this account (the arguments override its settings); close
        it (``async with``) when done."""
        return DashScopeClient(
            self.resolved_api_key(),
            region=self.region,
            base_url=self.effective_base_url,
            workspace=self.workspace,
            timeout=timeout or httpx.Timeout(self.timeout_seconds, connect=10.0, pool=30.0),
            min_submit_interval=self.min_submit_interval if min_submit_interval is None else min_submit_interval,
            transport=transport,
            keepalive_expiry=keepalive_expiry,
        )


def unreachable(region: Region, base_url: Optional[str], workspace: Optional[str], workspace_host: bool) -> Optional[str]:
    """Why no host can be built from these, or None."""
    if base_url is None and not workspace and (workspace_host or region.classic_base_url is None):
        return f"region {region.value} needs a workspace id to build its host ({workspace_base_url(region, '<WorkspaceId>')}), or a full base_url"
    return None
