"""``DashScopeClient``: a small typed async client for the Wan first-and-last-frame APIs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any, AsyncContextManager, Callable, Optional, TypeVar, Union
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from prefect_wan.client.catalog import lookup_model
from prefect_wan.client.errors import (
    DashScopeError,
    NetworkError,
    SubmissionOutcomeUnknownError,
    error_for,
)
from prefect_wan.client.images import LoadedMedia
from prefect_wan.client.pacing import create_turn, wait_for_submit_slot
from prefect_wan.client.preflight import PreparedRequest, prepare
from prefect_wan.client.regions import Region, endpoint_identity
from prefect_wan.client.request import KeyframeVideoRequest
from prefect_wan.client.results import SubmittedTask
from prefect_wan.client.wire import (
    SERVICE_TZ,
    CancelResponse,
    CreateTaskBody,
    ErrorBody,
    TaskList,
    TaskResponse,
    UploadPolicy,
    UploadPolicyResponse,
)

try:
    _VERSION = version("prefect-wan")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    _VERSION = "0"

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=30.0)
# Servers close idle connections (uvicorn after 5 s, load balancers after 15-60 s); a request sent
# on a connection the server is closing is lost, and for a create that means an unknown outcome.
# Reusing only connections idle for less than this keeps requests off closing connections.
KEEPALIVE_SECONDS = 2.0
# Errors raised before a byte of the request can have reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def normalize_base_url(url: str) -> str:
    """``scheme://host[:port][/prefix]`` without a trailing ``/`` or ``/api/v1``; raises ValueError."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url {url!r} is not an http(s) URL with a host, e.g. https://dashscope-intl.aliyuncs.com")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"base_url {url!r} must not carry credentials, a query or a fragment")
    path = parts.path.rstrip("/")
    if path.endswith("/api/v1"):
        path = path[: -len("/api/v1")]
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{netloc}{path}"


# Hosts answered somewhere else, as curl's --resolve does: an emulator standing in for a region's
# or a workspace's host. Empty unless a process asks for it; never read from the environment.
_RESOLVE: dict[str, str] = {}


def resolve_host(host: str, target: str) -> Callable[[], None]:
    """Send this process's DashScope calls for ``host`` to ``target`` (``http://127.0.0.1:8765``),
    keeping ``host`` in the Host header. Returns the function that undoes it."""
    _RESOLVE[host] = target

    def undo() -> None:
        if _RESOLVE.get(host) == target:
            del _RESOLVE[host]

    return undo


class _ResolvingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = _RESOLVE.get(request.url.host)
        if target is not None:
            to = httpx.URL(target)
            request.headers["Host"] = request.url.netloc.decode("ascii")
            request.url = request.url.copy_with(scheme=to.scheme, host=to.host, port=to.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class CreateCall:
    """A create call ready to send: its body, and the request it was built from."""

    body: CreateTaskBody
    prepared: PreparedRequest
    oss_resolve: bool = False


def submitted_task(response: TaskResponse, prepared: PreparedRequest, *, region: Region, endpoint: str, submitted_at: datetime) -> SubmittedTask:
    return SubmittedTask(
        task_id=response.output.task_id,
        request_id=response.request_id,
        model=prepared.spec.name,
        region=region.value,
        fingerprint=prepared.fingerprint,
        submitted_at=submitted_at,
        resolution=prepared.parameters.resolution,
        duration=prepared.parameters.duration,
        output_size=prepared.output_size,
        endpoint=endpoint,
    )


class DashScopeClient:
    """Create, query, list and cancel tasks; upload local media. One connection pool per client.

    Use as ``async with credentials.get_client() as client: ...`` or call ``aclose()``.
    """

    def __init__(
        self,
        api_key: Union[SecretStr, str],
        *,
        region: Region | str = Region.SINGAPORE,
        base_url: Optional[str] = None,
        workspace: Optional[str] = None,
        timeout: Optional[httpx.Timeout] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
        min_submit_interval: Optional[float] = None,
        keepalive_expiry: float = KEEPALIVE_SECONDS,
    ) -> None:
        """``min_submit_interval``: seconds between creates from this process (shared by every
        client of the same host and model); ``None`` uses the model's documented rate, 0 disables."""
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self.region = Region(region)
        self.base_url = normalize_base_url(base_url or self.region.base_url)
        self.workspace = workspace
        self.min_submit_interval = min_submit_interval
        # No auth header at client level: the same pool downloads frames and uploads to OSS hosts,
        # which must never see the key.
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16, keepalive_expiry=keepalive_expiry)
        self._http = httpx.AsyncClient(
            timeout=timeout or DEFAULT_TIMEOUT,
            transport=_ResolvingTransport(transport or httpx.AsyncHTTPTransport(limits=limits)),
            headers={"User-Agent": f"prefect-wan/{_VERSION}"},
        )

    @property
    def endpoint(self) -> str:
        return endpoint_identity(self.base_url, self.workspace)

    def __repr__(self) -> str:
        return f"DashScopeClient(region={self.region.value!r}, base_url={self.base_url!r})"

    @property
    def http(self) -> httpx.AsyncClient:
        """The pooled HTTP client, without DashScope credentials (for downloads)."""
        return self._http

    async def __aenter__(self) -> DashScopeClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- high level ---------------------------------------------------------------------------

    async def prepare(self, request: KeyframeVideoRequest) -> PreparedRequest:
        """Check and read a request without contacting DashScope."""
        return await prepare(request, self.region, http=self._http)

    async def submit(self, request: Union[KeyframeVideoRequest, PreparedRequest]) -> SubmittedTask:
        """Preflight, upload local media, and create one task. Never resends a create call."""
        prepared = request if isinstance(request, PreparedRequest) else await self.prepare(request)
        return await self.send_create(await self.build_create_call(prepared))

    async def build_create_call(self, prepared: PreparedRequest) -> CreateCall:
        """Everything a create needs, local media uploaded; nothing is created yet."""
        spec = prepared.spec
        urls = await self._media_urls(prepared)
        body = CreateTaskBody(
            model=spec.name,
            input=spec.family.build_input(
                prompt=prepared.prompt,
                negative_prompt=prepared.negative_prompt,
                first_url=urls["first_frame"],
                last_url=urls.get("last_frame"),
                template=prepared.request.template,
                audio_url=urls.get("driving_audio"),
            ),
            parameters=prepared.parameters,
        )
        return CreateCall(body=body, prepared=prepared, oss_resolve=any(url.startswith("oss://") for url in urls.values()))

    def create_turn(self, model: str) -> AsyncContextManager[None]:
        """Hold it to keep this loop's other creates of ``model`` on this host waiting (reentrant)."""
        return create_turn((self.base_url, model))

    async def send_create(self, call: CreateCall) -> SubmittedTask:
        """Send one create call, once, in its turn."""
        prepared = call.prepared
        async with self.create_turn(call.body.model):
            submitted_at = datetime.now(timezone.utc)
            response = await self.create_task(call.body, oss_resolve=call.oss_resolve)
        return submitted_task(response, prepared, region=self.region, endpoint=self.endpoint, submitted_at=submitted_at)

    async def _media_urls(self, prepared: PreparedRequest) -> dict[str, str]:
        media: dict[str, LoadedMedia] = {"first_frame": prepared.first_frame}
        if prepared.last_frame is not None:
            media["last_frame"] = prepared.last_frame
        if prepared.driving_audio is not None:
            media["driving_audio"] = prepared.driving_audio
        urls = {field: m.passthrough_url for field, m in media.items() if m.passthrough_url}
        # Keyed by content: a loop (first frame == last frame) uploads once, and the
        # forbid-overwrite policy never sees the same object name twice.
        to_upload = {m.sha256: m for m in media.values() if not m.passthrough_url}
        if to_upload:
            # One policy serves every file of the request (the SDK asks once per file).
            policy = await self.get_upload_policy(prepared.spec.name)
            uploaded = await asyncio.gather(
                *(self.upload_file(m.data, filename=m.filename, content_type=m.mime_type, policy=policy) for m in to_upload.values())
            )
            by_digest = dict(zip(to_upload, uploaded))
            urls.update({field: by_digest[m.sha256] for field, m in media.items() if not m.passthrough_url})
        return urls

    # --- endpoints ----------------------------------------------------------------------------

    async def create_task(self, body: CreateTaskBody, *, oss_resolve: bool = False) -> TaskResponse:
        """POST one create call. A lost answer raises ``SubmissionOutcomeUnknownError``."""
        spec = lookup_model(body.model)
        path = spec.family.endpoint_path if spec else "/api/v1/services/aigc/image2video/video-synthesis"
        headers = {"X-DashScope-Async": "enable", "Content-Type": "application/json"}
        if oss_resolve:
            headers["X-DashScope-OssResourceResolve"] = "enable"
        await self._pace_submissions(body.model, spec.submit_rps.get(self.region) if spec else None)
        sent_at = datetime.now(timezone.utc)
        try:
            return _parse(TaskResponse, await self._api("POST", path, json=body.to_json(), headers=headers, create_model=body.model))
        except DashScopeError as exc:
            if exc.code != "InvalidResponse":
                raise
            # A success whose body we cannot read may still have created a task.
            raise SubmissionOutcomeUnknownError(
                f"the create call was answered but the answer is unreadable ({exc.message})",
                code="SubmissionOutcomeUnknown",
                sent_at=sent_at.isoformat(),
                model=body.model,
            ) from None

    async def get_task(self, task_id: str) -> TaskResponse:
        return _parse(TaskResponse, await self._api("GET", f"/api/v1/tasks/{task_id}"))

    async def cancel_task(self, task_id: str) -> CancelResponse:
        """Cancel a PENDING task; others raise ``UnsupportedOperationError``."""
        return _parse(CancelResponse, await self._api("POST", f"/api/v1/tasks/{task_id}/cancel"))

    async def list_tasks(
        self,
        *,
        task_id: Optional[str] = None,
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        model_name: Optional[str] = None,
        status: Optional[str] = None,
        page_no: int = 1,
        page_size: int = 10,
    ) -> TaskList:
        """List the account's tasks (the service allows a window of at most 24 h)."""
        params: dict[str, Any] = {"page_no": page_no, "page_size": page_size}
        for key, value in (("task_id", task_id), ("model_name", model_name), ("status", status)):
            if value:
                params[key] = value
        for key, moment in (("start_time", start_time), ("end_time", end_time)):
            if moment:
                params[key] = moment.astimezone(SERVICE_TZ).strftime("%Y%m%d%H%M%S")
        return _parse(TaskList, await self._api("GET", "/api/v1/tasks", params=params))

    async def get_upload_policy(self, model: str) -> UploadPolicy:
        data = await self._api("GET", "/api/v1/uploads", params={"action": "getPolicy", "model": model})
        return _parse(UploadPolicyResponse, data).data

    async def upload_file(
        self,
        data: bytes,
        *,
        filename: str,
        model: Optional[str] = None,
        content_type: str = "application/octet-stream",
        policy: Optional[UploadPolicy] = None,
    ) -> str:
        """Upload bytes through the temporary-file API; returns the ``oss://`` URL (valid 48 h)."""
        if policy is None:
            if model is None:
                raise ValueError("upload_file needs a model or a policy")
            policy = await self.get_upload_policy(model)
        key = f"{policy.upload_dir}/{filename}"
        fields = {
            "OSSAccessKeyId": policy.oss_access_key_id,
            "Signature": policy.signature,
            "policy": policy.policy,
            "key": key,
            "x-oss-object-acl": policy.x_oss_object_acl,
            "x-oss-forbid-overwrite": policy.x_oss_forbid_overwrite,
            "success_action_status": "200",
            "x-oss-content-type": content_type,
        }
        try:
            response = await self._http.post(policy.upload_host, data=fields, files={"file": (filename, data, content_type)})
        except httpx.HTTPError as exc:
            raise NetworkError(f"upload to {urlsplit(policy.upload_host).hostname} failed: {type(exc).__name__}", code="UploadFailed") from None
        if response.status_code != 200:
            raise _error_from(response, hint="the temporary upload was refused")
        return f"oss://{key}"

    # --- plumbing -----------------------------------------------------------------------------

    async def _pace_submissions(self, model: str, documented_rps: Optional[float]) -> None:
        interval = self.min_submit_interval
        if interval is None:
            interval = 1.0 / documented_rps if documented_rps else 0.0
        await wait_for_submit_slot((self.base_url, model), interval)

    async def _api(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[dict[str, Any]] = None,
        headers: Optional[dict[str, str]] = None,
        create_model: Optional[str] = None,
    ) -> dict[str, Any]:
        all_headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Accept": "application/json",
            **(headers or {}),
        }
        if self.workspace:
            all_headers["X-DashScope-WorkSpace"] = self.workspace
        host = urlsplit(self.base_url).netloc
        sent_at = datetime.now(timezone.utc)
        try:
            response = await self._http.request(method, self.base_url + path, json=json, params=params, headers=all_headers)
        except _NOT_SENT as exc:
            raise NetworkError(f"could not reach {host}: {type(exc).__name__}", code="ConnectionFailed") from None
        except httpx.TransportError as exc:
            if create_model is not None:
                raise SubmissionOutcomeUnknownError(
                    f"the create call reached {host} but its answer was lost ({type(exc).__name__}); a task may "
                    f"exist. Not resent: list tasks of {create_model} created since {sent_at.isoformat()} to find it",
                    code="SubmissionOutcomeUnknown",
                    sent_at=sent_at.isoformat(),
                    model=create_model,
                ) from None
            raise NetworkError(f"{method} {path} to {host} failed: {type(exc).__name__}", code="ConnectionFailed") from None
        if create_model is not None and response.status_code >= 500:
            # A gateway's 502/504 (or any 5xx) can come after the service accepted the task: as
            # ambiguous as no answer at all.
            answered = _error_from(response)
            raise SubmissionOutcomeUnknownError(
                f"the create call got HTTP {response.status_code} from {host} ({answered.code or 'no code'}: "
                f"{answered.message}); a 5xx does not prove that no task was created. Not resent blindly",
                code="SubmissionOutcomeUnknown",
                sent_at=sent_at.isoformat(),
                model=create_model,
                request_id=answered.request_id,
                status_code=response.status_code,
                answered=answered,
            )
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise DashScopeError("answer is not JSON", code="InvalidResponse", status_code=response.status_code) from None
        hint = None
        if response.status_code == 401:
            hint = (
                f"API keys belong to one region: this call used region {self.region.value} at {host}; check that the key was created in that region's console"
            )
        raise _error_from(response, hint=hint)


def _error_from(response: httpx.Response, *, hint: Optional[str] = None) -> DashScopeError:
    try:
        body = ErrorBody.model_validate(response.json())
        code, message, request_id = body.code, body.message, body.request_id
    except ValueError:
        code, message, request_id = None, None, None
    if message is None:
        message = response.text[:300] or response.reason_phrase
    retry_after = None
    if "Retry-After" in response.headers:
        try:
            retry_after = float(response.headers["Retry-After"])
        except ValueError:
            retry_after = None
    return error_for(response.status_code, code, message, request_id, retry_after=retry_after, hint=hint)


_Model = TypeVar("_Model", bound=BaseModel)


def _parse(model: type[_Model], data: Any) -> _Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DashScopeError(f"unexpected answer shape for {model.__name__}: {exc.error_count()} problem(s)", code="InvalidResponse") from None
