"""The emulator as an ASGI app: DashScope's task API, the temporary-upload host, signed video URLs,
and an admin API under ``/__emulator__`` (a path the real service never uses)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, Optional

import httpx
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from prefect_wan.client.catalog import KF2V, WAN27, WAN30, lookup_model, serves_path
from prefect_wan.client.images import SourceError, decode_data_uri, inspect_image, redact_url
from prefect_wan.client.wire import SERVICE_TZ, CreateTaskBody, TaskStatus
from prefect_wan.emulator.config import EmulatorConfig
from prefect_wan.emulator.faults import FaultRule
from prefect_wan.emulator.state import EmulatedTask, EmulatorState, Upload

ADMIN = "/__emulator__"
OSS_PATH = "/__oss__/upload"
FILES = "/__files__"
WAN30_FRAME_TYPES = {"first_frame", "last_frame"}
WAN30_REFERENCE_TYPES = {"reference_image", "reference_video", "reference_audio", "file", "link"}
WAN30_MIXED = "The two modes are mutually exclusive. Do not pass reference_xx and first_frame/last_frame at the same time."
WAN27_MEDIA_SETS = [
    {"first_frame"},
    {"first_frame", "driving_audio"},
    {"first_frame", "last_frame"},
    {"first_frame", "last_frame", "driving_audio"},
    {"first_clip"},
    {"first_clip", "last_frame"},
]


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: Optional[float] = None) -> None:
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def _error(status: int, code: str, message: str, retry_after: Optional[float] = None) -> JSONResponse:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    return JSONResponse({"code": code, "message": message, "request_id": str(uuid.uuid4())}, status_code=status, headers=headers)


def _oss_error(status: int, code: str, message: str) -> Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Response(body, status_code=status, media_type="application/xml")


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator


def _account(request: Request, state: EmulatorState) -> str:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer ") or not header[7:].strip():
        raise ServiceError(401, "InvalidApiKey", "No API-key provided.")
    key = header[7:].strip()
    if key not in state.config.api_keys:
        raise ServiceError(401, "InvalidApiKey", "Invalid API-key provided.")
    # A workspace host names its region: keys belong to one region, as on the real service.
    host = request.headers.get("host", "").split(":")[0]
    if host.endswith(".maas.aliyuncs.com") and host.split(".")[1] != state.config.region.region_id:
        raise ServiceError(401, "InvalidApiKey", "Invalid API-key provided.")
    # All accepted keys belong to one main account, as on the real service.
    return "account-1"


def _fault_error(state: EmulatorState, op: str, task_id: Optional[str] = None) -> Optional[FaultRule]:
    rule = state.faults.take(op, task_id)
    if rule is not None and rule.action == "error":
        raise ServiceError(rule.status, rule.code, rule.message, rule.retry_after)
    return rule


def _abort(send: Any) -> bool:
    """Cut the TCP connection under a request (uvicorn's send is bound to its protocol cycle)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        return False
    transport.abort()
    return True


# --- create -------------------------------------------------------------------------------


async def create_task(request: Request) -> Response:
    state = _state(request)
    account = _account(request, state)
    rule = _fault_error(state, "submit")
    if request.headers.get("x-dashscope-async", "").lower() != "enable":
        raise ServiceError(403, "AccessDenied", "current user api does not support synchronous calls.")
    try:
        raw = await request.json()
    except ValueError:
        raise ServiceError(400, "BadRequest.IllegalInput", "The input parameter requires json format.") from None
    if not isinstance(raw, dict) or not raw.get("model"):
        raise ServiceError(400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.')
    if not isinstance(raw.get("input"), dict):
        raise ServiceError(400, "BadRequest.EmptyInput", "Required input parameter missing from request.")
    raw["parameters"] = raw.get("parameters") or {}
    try:
        body = CreateTaskBody.model_validate(raw)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise ServiceError(
            400, "InvalidParameter", f"The request is missing required parameters or in a wrong format: {'.'.join(map(str, problem['loc']))}"
        ) from None
    spec = lookup_model(body.model)
    if spec is None or state.config.region not in spec.regions:
        raise ServiceError(400, "InvalidParameter", "Model not exist.")
    if not serves_path(spec, request.url.path):
        raise ServiceError(400, "InvalidParameter", "url error, please check url!")
    if not state.take_submit_token(account, spec):
        state.counters.throttled += 1
        raise ServiceError(429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
    # UNCONFIRMED: the error for a full queue is not documented; a throttling answer is the closest.
    if state.queued(account, spec) >= state.config.queue_limit:
        state.counters.throttled += 1
        raise ServiceError(429, "Throttling", "Requests throttling triggered.")

    family = spec.family
    params = body.parameters
    resolution = params.resolution or spec.default_resolution
    if resolution not in spec.resolutions:
        raise ServiceError(400, "InvalidParameter", f"The resolution is invalid, it must be one of {', '.join(spec.resolutions)}.")
    duration = family.default_duration if params.duration is None else params.duration
    if family.smart_duration and duration == -1:
        # "Smart duration": the service picks a length for the content; here, one the prompt decides.
        duration = 4 + len(body.input.prompt or "") % 7
    if not family.min_duration <= duration <= family.max_duration:
        raise ServiceError(400, "InvalidParameter", f"The duration is invalid, it must be in [{family.min_duration}, {family.max_duration}].")
    ratio = params.ratio or ("adaptive" if family.ratios else None)
    if ratio is not None and ratio not in family.ratios:
        raise ServiceError(400, "InvalidParameter", f"The ratio is invalid, it must be one of {', '.join(family.ratios) or 'none'}.")
    audio = family.has_audio and (params.audio is not False or not family.audio_switch)
    if params.seed is not None and not 0 <= params.seed <= 2_147_483_647:
        raise ServiceError(400, "InvalidParameter", "The seed must be in [0, 2147483647].")
    task_input = body.input
    if task_input.template is not None and (task_input.template not in spec.templates):
        raise ServiceError(400, "InvalidParameter", f"The template is not supported by model {spec.name}.")
    # The service cuts over-long prompts silently.
    prompt = task_input.prompt[: family.prompt_limit] if task_input.prompt else task_input.prompt

    failure = None
    urls = family.frame_urls(task_input)
    if family is WAN30:
        types = [item.type for item in task_input.media or []]
        frames = [t for t in types if t in WAN30_FRAME_TYPES]
        if not types and not task_input.prompt:
            raise ServiceError(400, "InvalidParameter", "Field required: input.prompt or input.media")
        if len(frames) != len(set(frames)):
            raise ServiceError(400, "InvalidParameter", "first_frame and last_frame may each be given once.")
        if frames and set(types) & WAN30_REFERENCE_TYPES:
            failure = ("InvalidParameter", WAN30_MIXED)  # documented as an asynchronous failure
        elif "first_frame" not in frames:
            raise ServiceError(400, "InvalidParameter", "The emulator renders first-and-last-frame transitions only.")
    elif family is WAN27:
        if task_input.media is None:
            # Observed on the real service: accepted, then failed asynchronously.
            failure = ("InvalidParameter", "Field required: input.media")
        else:
            types = [item.type for item in task_input.media]
            if len(types) != len(set(types)) or set(types) not in WAN27_MEDIA_SETS:
                raise ServiceError(400, "InvalidParameter", f"The media combination {types} is not supported.")
            if "first_clip" in types:
                raise ServiceError(400, "InvalidParameter", "The emulator does not render first_clip continuations.")
    elif not urls.first:
        raise ServiceError(400, "InvalidParameter", "Field required: input.first_frame_url")
    elif not urls.last and task_input.template is None:
        raise ServiceError(400, "InvalidParameter", "Field required: input.last_frame_url")

    first: bytes = b""
    last: Optional[bytes] = None
    first_size = (1280, 720)
    if failure is None and urls.first:
        resolve = request.headers.get("x-dashscope-ossresourceresolve", "").lower() == "enable"
        fetch = request.app.state.http
        first, first_size = await _load_image(state, fetch, urls.first, spec.name, resolve, family)
        if urls.last and task_input.template is None:
            last = (await _load_image(state, fetch, urls.last, spec.name, resolve, family))[0]
        if urls.audio:
            await _load_media(state, fetch, urls.audio, spec.name, resolve)
    task = state.create_task(
        spec=spec,
        account=account,
        prompt=prompt,
        first=first,
        last=last,
        first_size=first_size,
        failure=failure,
        params={
            "resolution": resolution,
            "duration": duration,
            "seed": params.seed,
            "ratio": ratio,
            "audio": audio,
            "prompt_extend": True if params.prompt_extend is None else params.prompt_extend,
            "watermark": bool(params.watermark),
        },
    )
    payload = {"output": {"task_status": "PENDING", "task_id": task.task_id}, "request_id": task.request_id}
    if rule is not None and rule.action == "drop":
        return _DroppedResponse(payload)
    if rule is not None and rule.action == "error_after_create":
        return _error(rule.status, rule.code, rule.message, rule.retry_after)
    return JSONResponse(payload)


class _DroppedResponse(JSONResponse):
    """The task exists, but the client never hears so: the connection is cut instead."""

    async def __call__(self, scope, receive, send) -> None:
        # Starlette wraps send, not receive: either may lead to uvicorn's connection.
        if not (_abort(send) or _abort(receive)):  # not under uvicorn: the best we can do is a truncated answer
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
            await send({"type": "http.response.body", "body": b'{"output":', "more_body": False})


async def _load_media(state: EmulatorState, http: httpx.AsyncClient, url: str, model: str, resolve: bool) -> bytes:
    if url.startswith("oss://"):
        if not resolve:
            raise ServiceError(
                400,
                "invalid_parameter_error",
                "InternalError.Algo.InvalidParameter: The provided URL does not appear to be valid. Ensure it is correctly formatted.",
            )
        upload = state.uploads.get(url[len("oss://") :])
        if upload is None or upload.expires < state.now():
            raise ServiceError(400, "InvalidParameter", f"The file {url} does not exist or has expired.")
        if upload.model != model:
            raise ServiceError(400, "InvalidParameter", f"The file {url} was uploaded for model {upload.model}, not {model}.")
        return upload.data
    if url.startswith("data:"):
        try:
            data = decode_data_uri(url)
        except SourceError:
            raise ServiceError(400, "InvalidParameter", "The data URI is not valid base64.") from None
        if len(data) > 10 * 1024 * 1024:
            raise ServiceError(400, "InvalidParameter", "Exceeded limit on max bytes per data-uri item : 10485760")
        return data
    if url.startswith(("http://", "https://")):
        try:
            response = await http.get(url, follow_redirects=True)
        except httpx.HTTPError:
            raise ServiceError(400, "InvalidURL", f"Failed to download multimodal content: {redact_url(url)}") from None
        if response.status_code != 200:
            raise ServiceError(400, "InvalidURL", f"Failed to download multimodal content: {redact_url(url)} answered {response.status_code}")
        return response.content
    raise ServiceError(400, "InvalidURL", "Invalid URL provided in your request.")


async def _load_image(state: EmulatorState, http: httpx.AsyncClient, url: str, model: str, resolve: bool, family) -> tuple[bytes, tuple[int, int]]:
    data = await _load_media(state, http, url, model, resolve)
    limits = family.image_limits
    if len(data) > limits.max_bytes:
        raise ServiceError(400, "InvalidParameter", f"The image size exceeds the limit of {limits.max_bytes // (1024 * 1024)}MB.")
    image = inspect_image(data, origin=redact_url(url) if "://" in url else "data URI", passthrough_url=None)
    if not image.readable:
        raise ServiceError(400, "InvalidParameter", "The image format is not supported or the image is broken.")
    fmt, size, transparent = image.format, (image.width, image.height), image.has_transparency
    if fmt not in limits.formats:
        raise ServiceError(400, "InvalidParameter", f"The image format {fmt} is not supported.")
    if fmt == "PNG" and transparent:
        raise ServiceError(400, "InvalidParameter", "The PNG image must not have an alpha channel.")
    cfg = state.config
    if not all(cfg.min_side <= side <= cfg.max_side for side in size):
        raise ServiceError(400, "InvalidParameter", f"The image resolution is invalid, width and height must be in [{cfg.min_side}, {cfg.max_side}].")
    if limits.max_aspect and max(size[0] / size[1], size[1] / size[0]) > limits.max_aspect:
        raise ServiceError(400, "InvalidParameter", "The image aspect ratio must be between 1:8 and 8:1.")
    return data, size


# --- query, list, cancel -------------------------------------------------------------------


def _ratio_text(width: int, height: int) -> str:
    divisor = math.gcd(width, height)
    return f"{width // divisor}:{height // divisor}"


def _own_base(request: Request) -> str:
    """This server's own address: a request may name a workspace host, which only resolves here."""
    host, port = request.scope.get("server") or ("127.0.0.1", 80)
    return f"http://{host}:{port}"


def _task_body(request: Request, state: EmulatorState, task: EmulatedTask) -> dict[str, Any]:
    output: dict[str, Any] = {
        "task_id": task.task_id,
        "task_status": task.status.value,
        "submit_time": state.service_time(task.created),
    }
    if task.scheduled is not None:
        output["scheduled_time"] = state.service_time(task.scheduled)
    if task.ended is not None:
        output["end_time"] = state.service_time(task.ended)
    body: dict[str, Any] = {"request_id": str(uuid.uuid4()), "output": output}
    if task.status is TaskStatus.SUCCEEDED and task.video_token is not None:
        video = state.videos[task.video_token]
        expires = int(time.time() + (video.expires - state.now()))
        signature = hmac.new(state.secret.encode(), task.video_token.encode(), hashlib.sha1).hexdigest()[:16]
        output["video_url"] = f"{_own_base(request)}{FILES}/{task.video_token}.mp4?Expires={expires}&Signature={signature}"
        output["orig_prompt"] = task.prompt or ""
        if task.params["prompt_extend"] and task.prompt:
            output["actual_prompt"] = f"{task.prompt}. Cinematic lighting, smooth camera motion, detailed textures."
        seconds = task.params["duration"]
        if task.spec.family is KF2V:
            usage = {"video_duration": seconds, "video_count": 1}
            if task.spec.templates:  # the 2.1 plus models report a ratio, 2.2 reports SR
                usage["video_ratio"] = "standard"
            else:
                usage["SR"] = int(task.params["resolution"].rstrip("P"))
        elif task.spec.family is WAN30:
            # Documented as floats, with fps and the ratio made.
            width, height = task.size
            usage = {
                "video_count": 1,
                "duration": float(seconds),
                "input_video_duration": 0.0,
                "output_video_duration": float(seconds),
                "fps": state.config.fps,
                "SR": int(task.params["resolution"].rstrip("P")),
                "ratio": task.params["ratio"] if task.params["ratio"] != "adaptive" else _ratio_text(width, height),
            }
        else:
            usage = {
                "duration": seconds,
                "input_video_duration": 0,
                "output_video_duration": seconds,
                "video_count": 1,
                "SR": int(task.params["resolution"].rstrip("P")),
            }
        body["usage"] = usage
        output["task_metrics"] = {"TOTAL": 1, "SUCCEEDED": 1, "FAILED": 0}
    elif task.status is TaskStatus.FAILED and task.failure is not None:
        output["code"], output["message"] = task.failure
        output["task_metrics"] = {"TOTAL": 1, "SUCCEEDED": 0, "FAILED": 1}
    return body


async def get_task(request: Request) -> Response:
    state = _state(request)
    _account(request, state)
    task_id = request.path_params["task_id"]
    state.record_query(task_id)
    _fault_error(state, "query", task_id)
    state.tick()
    task = state.find(task_id)
    if task is None:
        return JSONResponse({"request_id": str(uuid.uuid4()), "output": {"task_id": task_id, "task_status": "UNKNOWN"}})
    body = _task_body(request, state, task)
    if task.status is TaskStatus.SUCCEEDED and (rule := state.faults.take("answer", task_id)) is not None:
        for name in rule.drop_fields:
            body["output"].pop(name, None)
        if rule.usage is not None:
            body["usage"] = rule.usage
    return JSONResponse(body)


def _parse_list_time(text: Optional[str]) -> Optional[datetime]:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=SERVICE_TZ)
    except ValueError:
        raise ServiceError(400, "InvalidParameter", f"The time {text} must be formatted as YYYYMMDDhhmmss.") from None


async def list_tasks(request: Request) -> Response:
    state = _state(request)
    _account(request, state)
    state.counters.lists += 1
    _fault_error(state, "list")
    state.tick()
    q = request.query_params
    start, end = _parse_list_time(q.get("start_time")), _parse_list_time(q.get("end_time"))
    # The documented window is at most 24 h; UNCONFIRMED how a wider one is answered.
    if start is not None and (end or datetime.now(SERVICE_TZ)) - start > timedelta(hours=24):
        raise ServiceError(400, "InvalidParameter", "The time range between start_time and end_time must be within 24 hours.")
    try:
        page_no, page_size = max(int(q.get("page_no", 1)), 1), min(max(int(q.get("page_size", 10)), 1), 100)
    except ValueError:
        raise ServiceError(400, "InvalidParameter", "page_no and page_size must be integers.") from None
    rows = []
    for task in state.tasks.values():
        if state.find(task.task_id) is None:
            continue
        created = state.wall(task.created)
        if (start and created < start) or (end and created > end):
            continue
        if q.get("model_name") and task.spec.name != q["model_name"]:
            continue
        if q.get("status") and task.status.value != q["status"]:
            continue
        if q.get("task_id") and task.task_id != q["task_id"]:
            continue
        row = {
            "api_key_id": "emulator",
            "caller_parent_id": task.account,
            "caller_uid": task.account,
            "gmt_create": int(created.timestamp() * 1000),
            "model_name": task.spec.name,
            "region": state.config.region.region_id,
            "request_id": task.request_id,
            "status": task.status.value,
            "task_id": task.task_id,
            "user_api_unique_key": f"apikey:v1:aigc:{'image2video' if task.spec.family is KF2V else 'video-generation'}:video-synthesis:{task.spec.name}",
        }
        if task.scheduled is not None:
            row["start_time"] = int(state.wall(task.scheduled).timestamp() * 1000)
        if task.ended is not None:
            row["end_time"] = int(state.wall(task.ended).timestamp() * 1000)
        rows.append(row)
    total = len(rows)
    page = rows[(page_no - 1) * page_size : page_no * page_size]
    return JSONResponse(
        {
            "request_id": str(uuid.uuid4()),
            "total": total,
            "total_page": -(-total // page_size),
            "page_no": page_no,
            "page_size": page_size,
            "data": page,
        }
    )


async def cancel_task(request: Request) -> Response:
    state = _state(request)
    _account(request, state)
    state.counters.cancels += 1
    task_id = request.path_params["task_id"]
    _fault_error(state, "cancel", task_id)
    state.tick()
    task = state.find(task_id)
    if task is None or not state.cancel(task):
        raise ServiceError(400, "UnsupportedOperation", "Failed to cancel the task, please confirm if the task is in PENDING status.")
    return JSONResponse({"request_id": str(uuid.uuid4())})


# --- uploads ------------------------------------------------------------------------------


def _sign(state: EmulatorState, policy: str) -> str:
    return base64.b64encode(hmac.new(state.secret.encode(), policy.encode(), hashlib.sha1).digest()).decode()


async def get_policy(request: Request) -> Response:
    state = _state(request)
    _account(request, state)
    if request.query_params.get("action") != "getPolicy":
        raise ServiceError(400, "InvalidParameter", "The action must be getPolicy.")
    model = request.query_params.get("model")
    if not model:
        raise ServiceError(400, "InvalidParameter", "Field required: model")
    state.counters.policies += 1
    _fault_error(state, "policy")
    cfg = state.config
    upload_dir = f"dashscope-instant/{state.secret[:12]}/{state.wall(state.now()):%Y-%m-%d}/{uuid.uuid4().hex[:12]}"
    document = {"expiration": state.now() + cfg.policy_ttl_seconds, "model": model, "upload_dir": upload_dir, "max_bytes": 100 * 1024 * 1024}
    policy = base64.b64encode(json.dumps(document).encode()).decode()
    return JSONResponse(
        {
            "request_id": str(uuid.uuid4()),
            "data": {
                "policy": policy,
                "signature": _sign(state, policy),
                "upload_dir": upload_dir,
                "upload_host": f"{_own_base(request)}{OSS_PATH}",
                "expire_in_seconds": cfg.policy_ttl_seconds,
                "max_file_size_mb": 100,
                "capacity_limit_mb": 999999999,
                "oss_access_key_id": "LTAI-emulator",
                "x_oss_object_acl": "private",
                "x_oss_forbid_overwrite": "true",
            },
        }
    )


async def upload(request: Request) -> Response:
    state = _state(request)
    _fault_error(state, "upload")
    async with request.form(max_part_size=200 * 1024 * 1024) as form:
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        file = form.get("file")
        data = await file.read() if file is not None and not isinstance(file, str) else None
    policy = fields.get("policy", "")
    if not policy or not hmac.compare_digest(fields.get("Signature", ""), _sign(state, policy)) or fields.get("OSSAccessKeyId") != "LTAI-emulator":
        return _oss_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
    document = json.loads(base64.b64decode(policy))
    if document["expiration"] < state.now():
        return _oss_error(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    key = fields.get("key", "")
    if not key.startswith(document["upload_dir"] + "/") or data is None:
        return _oss_error(403, "AccessDenied", "Invalid according to Policy: Policy Condition failed: key or file.")
    if len(data) > document["max_bytes"]:
        return _oss_error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
    if fields.get("x-oss-forbid-overwrite", "false") == "true" and key in state.uploads:
        return _oss_error(409, "FileAlreadyExists", "The object you specified already exists and can not be overwritten.")
    state.uploads[key] = Upload(data, document["model"], state.now() + state.config.upload_ttl_seconds)
    state.counters.uploads += 1
    return Response(status_code=int(fields.get("success_action_status", "204")))


# --- videos -------------------------------------------------------------------------------


async def download(request: Request) -> Response:
    state = _state(request)
    token = request.path_params["token"]
    video = state.videos.get(token)
    if video is None:
        return _oss_error(404, "NoSuchKey", "The specified key does not exist.")
    if video.expires < state.now():
        return _oss_error(403, "AccessDenied", "Request has expired.")
    state.counters.downloads += 1
    rule = state.faults.take("download", token)
    if rule is not None and rule.action == "error":
        return _oss_error(rule.status, rule.code, rule.message)
    chunk = state.config.download_chunk_bytes
    limit = rule.after_bytes if rule is not None and rule.action == "truncate" else None
    rate = rule.bytes_per_second if rule is not None and rule.action == "slow" else 0

    async def body():
        sent = 0
        with video.path.open("rb") as handle:
            while True:
                piece = handle.read(chunk if limit is None else min(chunk, limit - sent))
                if not piece:
                    break
                sent += len(piece)
                state.counters.download_bytes += len(piece)
                yield piece
                if rate:
                    await asyncio.sleep(len(piece) / rate)
                if limit is not None and sent >= limit:
                    # Cut the download short: the connection drops mid-body.
                    raise ConnectionResetError("emulated download cut")
        state.counters.downloads_completed += 1

    return StreamingResponse(body(), media_type="video/mp4", headers={"Content-Length": str(video.size)})


# --- admin --------------------------------------------------------------------------------


async def admin_counters(request: Request) -> Response:
    return JSONResponse(_state(request).snapshot().model_dump())


async def admin_faults(request: Request) -> Response:
    state = _state(request)
    if request.method == "DELETE":
        state.faults.clear()
        return JSONResponse({"faults": []})
    if request.method == "POST":
        payload = await request.json()
        try:
            rules = [FaultRule.model_validate(item) for item in (payload if isinstance(payload, list) else [payload])]
        except ValidationError as exc:
            return JSONResponse({"error": json.loads(exc.json())}, status_code=422)
        for rule in rules:
            state.faults.arm(rule)
    return JSONResponse({"faults": [rule.model_dump() for rule in state.faults.rules]})


async def admin_expire(request: Request) -> Response:
    state = _state(request)
    task = state.tasks.get(request.path_params["task_id"])
    if task is None:
        return JSONResponse({"error": "no such task"}, status_code=404)
    task.expired = True
    return JSONResponse({"task_id": task.task_id, "task_status": "UNKNOWN"})


async def admin_clock(request: Request) -> Response:
    state = _state(request)
    payload = await request.json()
    state.advance_clock(float(payload.get("advance", 0)))
    return JSONResponse({"offset_seconds": state._offset})


async def admin_config(request: Request) -> Response:
    state = _state(request)
    if request.method == "PATCH":
        changes = await request.json()
        try:
            state.config = EmulatorConfig.model_validate({**state.config.model_dump(), **changes})
        except ValidationError as exc:
            return JSONResponse({"error": json.loads(exc.json())}, status_code=422)
        if "seed" in changes:
            state.faults.dice.seed(state.config.seed)
    return JSONResponse(state.config.model_dump(mode="json"))


async def admin_reset(request: Request) -> Response:
    _state(request).reset()
    return JSONResponse({"reset": True})


# --- app ----------------------------------------------------------------------------------


def _api(handler):
    async def wrapped(request: Request) -> Response:
        _state(request).counters.api_requests += 1
        try:
            return await handler(request)
        except ServiceError as exc:
            state = _state(request)
            if handler is create_task:
                state.counters.submissions_rejected += 1
            return _error(exc.status, exc.code, exc.message, exc.retry_after)

    return wrapped


def create_app(config: Optional[EmulatorConfig] = None, *, state: Optional[EmulatorState] = None) -> Starlette:
    """The emulator as an ASGI app; mount it anywhere or serve it with uvicorn."""
    state = state or EmulatorState(config or EmulatorConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.http = httpx.AsyncClient(timeout=httpx.Timeout(20.0))
        scheduler = asyncio.create_task(state.run_scheduler())
        try:
            yield
        finally:
            scheduler.cancel()
            await app.state.http.aclose()

    routes = [
        Route(KF2V.endpoint_path, _api(create_task), methods=["POST"]),
        Route(KF2V.endpoint_path + "/", _api(create_task), methods=["POST"]),
        Route(WAN27.endpoint_path, _api(create_task), methods=["POST"]),
        Route(WAN27.endpoint_path + "/", _api(create_task), methods=["POST"]),
        Route("/api/v1/tasks", _api(list_tasks), methods=["GET"]),
        Route("/api/v1/tasks/", _api(list_tasks), methods=["GET"]),
        Route("/api/v1/tasks/{task_id}", _api(get_task), methods=["GET"]),
        Route("/api/v1/tasks/{task_id}/cancel", _api(cancel_task), methods=["POST"]),
        Route("/api/v1/uploads", _api(get_policy), methods=["GET"]),
        Route(OSS_PATH, _api(upload), methods=["POST"]),
        Route(FILES + "/{token}.mp4", download, methods=["GET"]),
        Route(ADMIN + "/counters", admin_counters, methods=["GET"]),
        Route(ADMIN + "/faults", admin_faults, methods=["GET", "POST", "DELETE"]),
        Route(ADMIN + "/tasks/{task_id}/expire", admin_expire, methods=["POST"]),
        Route(ADMIN + "/clock", admin_clock, methods=["POST"]),
        Route(ADMIN + "/config", admin_config, methods=["GET", "PATCH"]),
        Route(ADMIN + "/reset", admin_reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.emulator = state
    return app
