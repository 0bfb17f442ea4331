"""The DashScope client over httpx.MockTransport, with the reference's exact JSON examples."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from prefect_wan.client import (
    AccessDeniedError,
    ArrearsError,
    AuthenticationError,
    ContentModerationError,
    DashScopeClient,
    InvalidParameterError,
    KeyframeVideoRequest,
    ModelNotFoundError,
    NetworkError,
    ServerError,
    SubmissionOutcomeUnknownError,
    TaskResponse,
    TaskStatus,
    ThrottledError,
    UnsupportedOperationError,
    VideoResult,
)
from prefect_wan.client.errors import TaskCanceledError, TaskExpiredError, TaskFailedError
from prefect_wan.client.polling import PollSchedule, wait_for_task
from tests.helpers import FAKE_KEY

CREATE_OK = {
    "output": {"task_status": "PENDING", "task_id": "0385dc79-5ff8-4d82-bcb6-xxxxxx"},
    "request_id": "4909100c-7b5a-9f92-bfe5-xxxxxx",
}
SUCCEEDED_FLASH = {
    "request_id": "ec016349-6b14-9ad6-8009-xxxxxx",
    "output": {
        "task_id": "3f21a745-9f4b-4588-b643-xxxxxx",
        "task_status": "SUCCEEDED",
        "submit_time": "2025-04-18 10:36:58.394",
        "scheduled_time": "2025-04-18 10:37:13.802",
        "end_time": "2025-04-18 10:45:23.004",
        "video_url": "https://dashscope-result-wlcb.oss-cn-wulanchabu.aliyuncs.com/xxx.mp4?xxxxx",
        "orig_prompt": "写实风格，一只黑色小猫…",
        "actual_prompt": "写实风格，一只黑色小猫…（rewritten, longer）",
        "task_metrics": {"TOTAL": 1, "SUCCEEDED": 1, "FAILED": 0},
    },
    "usage": {"video_duration": 5, "video_count": 1, "SR": 480},
}
SUCCEEDED_PLUS_USAGE = {"video_count": 1, "video_duration": 5, "video_ratio": "standard"}
SUCCEEDED_WAN27 = {
    "request_id": "2ca1c497-f9e0-449d-9a3f-xxxxxx",
    "output": {
        "task_id": "af6efbc0-4bef-4194-8246-xxxxxx",
        "task_status": "SUCCEEDED",
        "submit_time": "2025-09-25 11:07:28.590",
        "scheduled_time": "2025-09-25 11:07:35.349",
        "end_time": "2025-09-25 11:17:11.650",
        "orig_prompt": "一幅都市奇幻艺术的场景。…",
        "video_url": "https://dashscope-result-sh.oss-cn-shanghai.aliyuncs.com/xxx.mp4?Expires=xxx",
    },
    "usage": {"duration": 15, "input_video_duration": 0, "output_video_duration": 15, "video_count": 1, "SR": "720"},
}
FAILED = {
    "request_id": "e5d70b02-ebd3-98ce-9fe8-759d7d7b107d",
    "output": {
        "task_id": "86ecf553-d340-4e21-af6e-a0c6a421c010",
        "task_status": "FAILED",
        "code": "InvalidParameter",
        "message": "The size is not match xxxxxx",
    },
}
UNKNOWN = {"request_id": "a4de7c32-7057-9f82-8581-xxxxxx", "output": {"task_id": "502a00b1-19d9-4839-a82f-xxxxxx", "task_status": "UNKNOWN"}}
LIST = {
    "total": 2,
    "total_page": 1,
    "page_no": 1,
    "page_size": 10,
    "request_id": "f6756b7e-x",
    "data": [
        {
            "api_key_id": "15xxxx",
            "caller_parent_id": "p",
            "caller_uid": "u",
            "gmt_create": 1745568428109,
            "start_time": 1745568428138,
            "end_time": 1745568302481,
            "model_name": "wanx2.1-kf2v-plus",
            "region": "cn-beijing",
            "request_id": "1abfc3c8-x",
            "status": "RUNNING",
            "task_id": "50e2ccea-x",
            "user_api_unique_key": "apikey:v1:aigc:image2video:video-synthesis:wanx2.1-kf2v-plus",
        }
    ],
}
POLICY = {
    "request_id": "52f4383a-c67d-9f8c-xxxxxx",
    "data": {
        "policy": "eyJl...1ZSJ=",
        "signature": "eWy...=",
        "upload_dir": "dashscope-instant/xxx/2024-07-18/xxx",
        "upload_host": "https://dashscope-file-xxx.oss-cn-beijing.aliyuncs.com",
        "expire_in_seconds": 300,
        "max_file_size_mb": 100,
        "capacity_limit_mb": 999999999,
        "oss_access_key_id": "LTA...",
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    },
}


class Recorder:
    """A MockTransport handler that answers from a routing function and records every request."""

    def __init__(self, route):
        self.route = route
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.route(request)

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.host}{r.url.path}" for r in self.requests]


def client_for(route, region="beijing") -> tuple[DashScopeClient, Recorder]:
    recorder = Recorder(route)
    return DashScopeClient(FAKE_KEY, region=region, transport=httpx.MockTransport(recorder)), recorder


def standard_route(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/api/v1/uploads":
        return httpx.Response(200, json=POLICY)
    if request.url.host.startswith("dashscope-file"):
        return httpx.Response(200)
    if request.url.path.endswith("video-synthesis"):
        return httpx.Response(200, json=CREATE_OK)
    return httpx.Response(404, json={"code": "NotFound", "message": "no route"})


async def test_submit_uploads_local_frames_and_creates_one_task(frames):
    first, last = frames
    client, rec = client_for(standard_route)
    async with client:
        task = await client.submit(KeyframeVideoRequest(first_frame=first, last_frame=str(last), prompt="a cat", seed=7))
    assert task.task_id == CREATE_OK["output"]["task_id"]
    assert task.request_id == CREATE_OK["request_id"]
    assert task.output_size == (816, 1104)  # 480x640 is 3:4, like the reference's 750x1000
    assert rec.paths() == [
        "GET dashscope.aliyuncs.com/api/v1/uploads",
        "POST dashscope-file-xxx.oss-cn-beijing.aliyuncs.com/",
        "POST dashscope-file-xxx.oss-cn-beijing.aliyuncs.com/",
        "POST dashscope.aliyuncs.com/api/v1/services/aigc/image2video/video-synthesis",
    ]
    policy_call, upload, _, create = rec.requests
    assert policy_call.url.params["action"] == "getPolicy" and policy_call.url.params["model"] == "wan2.2-kf2v-flash"
    # The upload host is not DashScope: it must never see the key.
    assert "authorization" not in upload.headers
    body = upload.content.decode("latin-1")
    names = [part.split('"', 1)[0] for part in body.split('; name="')[1:]]
    assert names == [
        "OSSAccessKeyId",
        "Signature",
        "policy",
        "key",
        "x-oss-object-acl",
        "x-oss-forbid-overwrite",
        "success_action_status",
        "x-oss-content-type",
        "file",
    ]
    assert create.headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert create.headers["x-dashscope-async"] == "enable"
    assert create.headers["x-dashscope-ossresourceresolve"] == "enable"
    sent = json.loads(create.content)
    assert sent["model"] == "wan2.2-kf2v-flash"
    assert sent["input"]["prompt"] == "a cat"
    assert sent["input"]["first_frame_url"].startswith("oss://dashscope-instant/xxx/2024-07-18/xxx/")
    assert sent["input"]["last_frame_url"].endswith(".jpg")
    assert sent["parameters"] == {"resolution": "720P", "duration": 5, "prompt_extend": True, "watermark": False, "seed": 7}


async def test_http_frames_pass_through_without_upload_and_without_the_key(frames):
    first, last = frames
    images = {"/first.png": first.read_bytes(), "/last.jpg": last.read_bytes()}

    def route(request):
        if request.url.host == "cdn.example.com":
            return httpx.Response(200, content=images[request.url.path])
        return standard_route(request)

    client, rec = client_for(route)
    async with client:
        await client.submit(KeyframeVideoRequest(first_frame="https://cdn.example.com/first.png?sig=abc", last_frame="https://cdn.example.com/last.jpg"))
    downloads = [r for r in rec.requests if r.url.host == "cdn.example.com"]
    assert len(downloads) == 2 and all("authorization" not in r.headers for r in downloads)
    create = rec.requests[-1]
    sent = json.loads(create.content)
    assert sent["input"]["first_frame_url"] == "https://cdn.example.com/first.png?sig=abc"
    assert "x-dashscope-ossresourceresolve" not in create.headers
    assert not any(r.url.path == "/api/v1/uploads" for r in rec.requests)


async def test_wan27_uses_media_body_and_its_own_endpoint(frames):
    first, last = frames
    client, rec = client_for(standard_route, region="singapore")
    async with client:
        task = await client.submit(
            KeyframeVideoRequest(model="wan2.7-i2v-2026-04-25", first_frame=first, last_frame=last, prompt="p", duration=10, resolution="720P")
        )
    create = rec.requests[-1]
    assert create.url.host == "dashscope-intl.aliyuncs.com"
    assert create.url.path == "/api/v1/services/aigc/video-generation/video-synthesis"
    sent = json.loads(create.content)
    assert [m["type"] for m in sent["input"]["media"]] == ["first_frame", "last_frame"]
    assert "first_frame_url" not in sent["input"]
    assert sent["parameters"]["duration"] == 10
    assert task.model == "wan2.7-i2v-2026-04-25"


async def test_query_results_are_normalised_across_families():
    for body, seconds, tier in ((SUCCEEDED_FLASH, 5, 480), (SUCCEEDED_WAN27, 15, 720)):
        client, _ = client_for(lambda r, body=body: httpx.Response(200, json=body))
        async with client:
            response = await client.get_task("t")
        result = VideoResult.from_response(response)
        assert result.status is TaskStatus.SUCCEEDED
        assert result.billed_seconds == seconds and result.resolution_tier == tier
        assert result.end_time.utcoffset().total_seconds() == 8 * 3600
    flash = VideoResult.from_response(TaskResponse.model_validate(SUCCEEDED_FLASH))
    assert flash.actual_prompt.endswith("（rewritten, longer）")
    plus = {**SUCCEEDED_FLASH, "usage": SUCCEEDED_PLUS_USAGE}
    client, _ = client_for(lambda r: httpx.Response(200, json=plus))
    async with client:
        assert (await client.get_task("t")).usage.video_ratio == "standard"


async def test_list_and_cancel():
    def route(request):
        if request.url.path == "/api/v1/tasks":
            return httpx.Response(200, json=LIST)
        if request.url.path.endswith("/ok/cancel"):
            return httpx.Response(200, json={"request_id": "r1"})
        return httpx.Response(
            400,
            json={"code": "UnsupportedOperation", "request_id": "r2", "message": "Failed to cancel the task, please confirm if the task is in PENDING status."},
        )

    client, rec = client_for(route)
    async with client:
        listing = await client.list_tasks(model_name="wanx2.1-kf2v-plus", status="RUNNING")
        assert listing.total == 2 and listing.data[0].task_id == "50e2ccea-x"
        assert (await client.cancel_task("ok")).request_id == "r1"
        with pytest.raises(UnsupportedOperationError) as info:
            await client.cancel_task("running")
    assert info.value.request_id == "r2" and not info.value.retryable
    assert rec.requests[0].url.params["model_name"] == "wanx2.1-kf2v-plus"


@pytest.mark.parametrize(
    "status,body,headers,error,retryable",
    [
        (400, {"code": "InvalidParameter", "message": "Field required: xxx"}, {}, InvalidParameterError, False),
        (400, {"code": "DataInspectionFailed", "message": "Input data may contain inappropriate content."}, {}, ContentModerationError, False),
        (400, {"code": "IPInfringementSuspect", "message": "Input data is suspected of being involved in IP infringement."}, {}, ContentModerationError, False),
        (400, {"code": "Arrearage", "message": "Access denied, please make sure your account is in good standing."}, {}, ArrearsError, False),
        (401, {"code": "InvalidApiKey", "message": "Invalid API-key provided."}, {}, AuthenticationError, False),
        (403, {"code": "AccessDenied", "message": "current user api does not support synchronous calls."}, {}, AccessDeniedError, False),
        (404, {"code": "ModelNotFound", "message": "Model can not be found."}, {}, ModelNotFoundError, False),
        (400, {"code": "InvalidParameter", "message": "Model not exist."}, {}, ModelNotFoundError, False),
        (429, {"code": "Throttling.RateQuota", "message": "Requests rate limit exceeded, please try again later."}, {"Retry-After": "3"}, ThrottledError, True),
        (500, {"code": "InternalError", "message": "Internal server error!"}, {}, ServerError, True),
        (503, {"code": "ModelUnavailable", "message": "Model is unavailable, please try again later."}, {}, ServerError, True),
        (502, "<html>bad gateway</html>", {}, ServerError, True),
    ],
)
async def test_error_classes(status, body, headers, error, retryable):
    def route(request):
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(status, json={**body, "request_id": "rid-1"}, headers=headers)

    client, _ = client_for(route)
    async with client:
        with pytest.raises(error) as info:
            await client.get_task("t")
    exc = info.value
    assert type(exc) is error and exc.retryable is retryable and exc.status_code == status
    if isinstance(body, dict):
        assert exc.code == body["code"] and exc.message == body["message"] and exc.request_id == "rid-1"
    if error is ThrottledError:
        assert exc.retry_after == 3.0
    if error is AuthenticationError:
        assert "region beijing at dashscope.aliyuncs.com" in str(exc)
    assert FAKE_KEY not in str(exc)


async def test_network_errors_on_query_are_retryable_but_a_lost_create_answer_is_not(frames):
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    client, _ = client_for(refuse)
    async with client:
        with pytest.raises(NetworkError) as info:
            await client.get_task("t")
    assert info.value.retryable

    def lose_create_answer(request):
        if request.url.path.endswith("video-synthesis"):
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        if request.url.path.startswith("/api/v1/tasks"):
            raise httpx.ReadTimeout("timed out", request=request)
        return standard_route(request)

    first, last = frames
    client, rec = client_for(lose_create_answer)
    async with client:
        with pytest.raises(SubmissionOutcomeUnknownError) as lost:
            await client.submit(KeyframeVideoRequest(first_frame=first, last_frame=last))
        with pytest.raises(NetworkError):
            await client.get_task("t")
    assert not lost.value.retryable and lost.value.model == "wan2.2-kf2v-flash"
    assert sum(r.url.path.endswith("video-synthesis") for r in rec.requests) == 1


async def test_a_connection_never_made_on_create_is_retryable(frames):
    def route(request):
        if request.url.path.endswith("video-synthesis"):
            raise httpx.ConnectError("refused", request=request)
        return standard_route(request)

    first, last = frames
    client, _ = client_for(route)
    async with client:
        with pytest.raises(NetworkError) as info:
            await client.submit(KeyframeVideoRequest(first_frame=first, last_frame=last))
    assert info.value.retryable and not isinstance(info.value, SubmissionOutcomeUnknownError)


async def test_wait_for_task_handles_every_status_and_transient_errors():
    answers = iter(
        [
            httpx.Response(503, json={"code": "ModelServingError", "message": "Too many requests."}),
            httpx.Response(200, json={"request_id": "q", "output": {"task_id": "t", "task_status": "PENDING"}}),
            httpx.Response(429, json={"code": "Throttling", "message": "Requests throttling triggered."}, headers={"Retry-After": "0.01"}),
            httpx.Response(200, json={"request_id": "q", "output": {"task_id": "t", "task_status": "RUNNING"}}),
            httpx.Response(200, json=SUCCEEDED_FLASH),
        ]
    )
    sleeps: list[float] = []

    async def fake_sleep(seconds):
        sleeps.append(seconds)

    client, rec = client_for(lambda r: next(answers))
    schedule = PollSchedule(initial_delay=2, interval=1, max_interval=4, jitter=0)
    async with client:
        result = await wait_for_task(client, "t", schedule, sleep=fake_sleep)
    assert result.video_url.startswith("https://dashscope-result-wlcb")
    assert len(rec.requests) == 5
    assert sleeps == [2, 1, 1, 0.01, 1.5]

    canceled = {"request_id": "c", "output": {"task_id": "t-c", "task_status": "CANCELED"}}
    for body, error in ((FAILED, TaskFailedError), (canceled, TaskCanceledError), (UNKNOWN, TaskExpiredError)):
        client, _ = client_for(lambda r, body=body: httpx.Response(200, json=body))
        async with client:
            with pytest.raises(error) as info:
                await wait_for_task(client, "t", schedule, sleep=fake_sleep)
        assert info.value.task_id == body["output"]["task_id"]
    assert info.value.code == "Unknown"


async def test_poll_deadline_raises_without_losing_the_task_id():
    client, _ = client_for(lambda r: httpx.Response(200, json={"output": {"task_id": "t", "task_status": "RUNNING"}}))

    async def no_sleep(seconds):
        return None

    async with client:
        from prefect_wan.client.errors import PollTimeoutError

        with pytest.raises(PollTimeoutError) as info:
            await wait_for_task(client, "t", PollSchedule(initial_delay=0, interval=1, deadline=0.5), sleep=no_sleep)
    assert info.value.task_id == "t"


async def test_secret_never_in_repr_logs_or_errors(caplog, frames):
    caplog.set_level(logging.DEBUG)
    client, _ = client_for(lambda r: httpx.Response(401, json={"code": "InvalidApiKey", "message": "Invalid API-key provided."}))
    async with client:
        with pytest.raises(AuthenticationError) as info:
            await client.get_task("t")
    texts = [repr(client), str(info.value), repr(info.value), caplog.text, repr(client.http.headers)]
    assert all(FAKE_KEY not in text for text in texts)


async def test_identical_frames_are_uploaded_once(frames):
    first, _ = frames
    client, rec = client_for(standard_route)
    async with client:
        await client.submit(KeyframeVideoRequest(first_frame=first, last_frame=first.read_bytes(), prompt="a loop"))
    uploads = [r for r in rec.requests if r.url.host.startswith("dashscope-file")]
    sent = json.loads(rec.requests[-1].content)["input"]
    assert len(uploads) == 1 and sent["first_frame_url"] == sent["last_frame_url"]
