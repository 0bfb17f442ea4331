"""The emulator speaks DashScope: to our client, to the official SDK, and through faults on demand."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import av
import httpx
import pytest

from prefect_wan.client import (
    AuthenticationError,
    KeyframeVideoRequest,
    SubmissionOutcomeUnknownError,
    TaskStatus,
    ThrottledError,
    predict_output_size,
)
from prefect_wan.client.errors import TaskExpiredError, TaskFailedError
from prefect_wan.client.polling import PollSchedule, wait_for_task
from prefect_wan.emulator import EmulatorConfig, create_app, run_emulator
from tests.helpers import make_image

QUICK = PollSchedule(initial_delay=0.05, interval=0.05, max_interval=0.2, jitter=0, deadline=60)
KF2V = "/api/v1/services/aigc/image2video/video-synthesis"
WAN27 = "/api/v1/services/aigc/video-generation/video-synthesis"


def request(frames, **changes) -> KeyframeVideoRequest:
    first, last = frames
    return KeyframeVideoRequest(**{"first_frame": first, "last_frame": last, "prompt": "a cat", "resolution": "480P", **changes})


def raw(emulator, method, path, *, key=True, body=None, headers=None) -> httpx.Response:
    all_headers = {"X-DashScope-Async": "enable"} | (headers or {})
    if key:
        all_headers["Authorization"] = f"Bearer {emulator.api_key}"
    return httpx.request(method, emulator.base_url + path, json=body, headers=all_headers, timeout=30)


def probe(data: bytes):
    import io

    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        return {
            "codec": video.codec_context.name,
            "fps": float(video.average_rate),
            "width": video.width,
            "height": video.height,
            "seconds": container.duration / 1e6,
            "frames": frames,
            "audio": [s.codec_context.name for s in container.streams.audio],
        }


async def test_our_client_end_to_end_with_a_real_mp4(emulator, frames):
    async with emulator.credentials().get_client() as client:
        task = await client.submit(request(frames))
        result = await wait_for_task(client, task.task_id, QUICK)
        video = (await client.http.get(result.video_url)).content
    info = probe(video)
    assert info["codec"] == "h264" and info["fps"] == 30 and info["frames"] == 150 and info["audio"] == []
    assert abs(info["seconds"] - 5) < 0.1
    assert (info["width"], info["height"]) == predict_output_size(480, 640, "480P") == task.output_size
    assert result.usage.video_duration == 5 and result.usage.SR == 480 and result.billed_seconds == 5
    assert result.actual_prompt.startswith("a cat") and result.orig_prompt == "a cat"
    counters = emulator.counters()
    assert counters.submissions_accepted == 1 and counters.uploads == 2 and counters.policies == 1
    assert counters.downloads_completed == 1 and counters.download_bytes == len(video)


async def test_wan27_renders_the_requested_duration_with_audio(emulator, frames):
    async with emulator.credentials().get_client() as client:
        task = await client.submit(request(frames, model="wan2.7-i2v", resolution="720P", duration=3, prompt_extend=False))
        result = await wait_for_task(client, task.task_id, QUICK)
        info = probe((await client.http.get(result.video_url)).content)
    assert info["audio"] == ["aac"] and info["frames"] == 90 and abs(info["seconds"] - 3) < 0.1
    assert (info["width"], info["height"]) == (816, 1104)
    assert result.usage.duration == 3 and result.usage.video_duration is None and result.actual_prompt is None


def test_official_sdk_call_with_file_frames(emulator, frames):
    import dashscope
    from dashscope import VideoSynthesis

    first, last = frames
    dashscope.base_http_api_url = emulator.base_url + "/api/v1"
    rsp = VideoSynthesis.call(
        api_key=emulator.api_key,
        model="wan2.2-kf2v-flash",
        prompt="a cat",
        resolution="480P",
        first_frame_url=f"file://{first}",
        last_frame_url=f"file://{last}",
    )
    assert rsp.status_code == 200 and rsp.output.task_status == "SUCCEEDED"
    assert rsp.usage.video_duration == 5
    info = probe(httpx.get(rsp.output.video_url).content)
    assert (info["width"], info["height"]) == (544, 720) and info["codec"] == "h264"


def test_official_sdk_async_call_fetch_wait_cancel_list(emulator, frames):
    import dashscope
    from dashscope import VideoSynthesis

    first, last = frames
    dashscope.base_http_api_url = emulator.base_url + "/api/v1"
    emulator.configure(pending_seconds=30)
    queued = VideoSynthesis.async_call(
        api_key=emulator.api_key,
        model="wan2.7-i2v",
        prompt="p",
        resolution="720P",
        duration=2,
        media=[{"type": "first_frame", "url": f"file://{first}"}, {"type": "last_frame", "url": f"file://{last}"}],
    )
    assert queued.status_code == 200 and queued.output.task_status == "PENDING"
    assert VideoSynthesis.fetch(queued, api_key=emulator.api_key).output.task_status == "PENDING"
    assert VideoSynthesis.cancel(queued, api_key=emulator.api_key).status_code == 200
    assert VideoSynthesis.fetch(queued, api_key=emulator.api_key).output.task_status == "CANCELED"
    again = VideoSynthesis.cancel(queued, api_key=emulator.api_key)
    assert again.status_code == 400 and again.code == "UnsupportedOperation"
    emulator.configure(pending_seconds=0.05)
    running = VideoSynthesis.async_call(
        api_key=emulator.api_key,
        model="wan2.2-kf2v-flash",
        resolution="480P",
        first_frame_url=f"file://{first}",
        last_frame_url=f"file://{last}",
    )
    done = VideoSynthesis.wait(running, api_key=emulator.api_key)
    assert done.output.task_status == "SUCCEEDED" and done.output.video_url
    listing = VideoSynthesis.list(api_key=emulator.api_key)
    assert listing.status_code == 200
    statuses = {row["task_id"]: row["status"] for row in listing.output["data"]} if hasattr(listing, "output") and listing.output else {}
    assert statuses[queued.output.task_id] == "CANCELED" and statuses[running.output.task_id] == "SUCCEEDED"


def test_authentication_async_header_and_json_errors(emulator):
    cases = [
        (raw(emulator, "POST", KF2V, key=False, body={}), 401, "InvalidApiKey", "No API-key provided."),
        (raw(emulator, "GET", "/api/v1/tasks/x", headers={"Authorization": "Bearer sk-wrong"}, key=False), 401, "InvalidApiKey", "Invalid API-key provided."),
        (
            raw(emulator, "POST", KF2V, body={"model": "wan2.2-kf2v-flash", "input": {}}, headers={"X-DashScope-Async": ""}),
            403,
            "AccessDenied",
            "current user api does not support synchronous calls.",
        ),
        (raw(emulator, "POST", KF2V, body={"input": {}}), 400, "BadRequest.EmptyModel", None),
        (raw(emulator, "POST", KF2V, body={"model": "wan2.2-kf2v-flash"}), 400, "BadRequest.EmptyInput", None),
        (raw(emulator, "POST", KF2V, body={"model": "wanx2.1-kf2v-plus", "input": {}}), 400, "InvalidParameter", "Model not exist."),
        (raw(emulator, "POST", WAN27, body={"model": "wan2.2-kf2v-flash", "input": {}}), 400, "InvalidParameter", "url error, please check url!"),
        (
            raw(
                emulator, "POST", KF2V, body={"model": "wan2.2-kf2v-flash", "input": {"first_frame_url": "https://x/a.png"}, "parameters": {"resolution": "2K"}}
            ),
            400,
            "InvalidParameter",
            None,
        ),
        (
            raw(emulator, "POST", KF2V, body={"model": "wan2.2-kf2v-flash", "input": {"first_frame_url": "https://x/a.png"}, "parameters": {"duration": 6}}),
            400,
            "InvalidParameter",
            None,
        ),
        (
            raw(emulator, "POST", KF2V, body={"model": "wan2.2-kf2v-flash", "input": {"first_frame_url": "https://x/a.png"}, "parameters": {"seed": -1}}),
            400,
            "InvalidParameter",
            None,
        ),
        (
            raw(emulator, "POST", KF2V, body={"model": "wan2.2-kf2v-flash", "input": {"first_frame_url": "https://x/a.png", "template": "mech1"}}),
            400,
            "InvalidParameter",
            None,
        ),
        (
            raw(emulator, "POST", KF2V, body={"model": "wan2.2-kf2v-flash", "input": {"prompt": "x"}}),
            400,
            "InvalidParameter",
            "Field required: input.first_frame_url",
        ),
    ]
    for response, status, code, message in cases:
        body = response.json()
        assert (response.status_code, body["code"]) == (status, code), body
        assert set(body) == {"code", "message", "request_id"}
        if message:
            assert body["message"] == message
    assert emulator.counters().submissions_accepted == 0


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    import base64

    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_sdk_artefacts_truncation_and_data_uris(emulator):
    first, last = make_image(480, 640), make_image(480, 640, (0, 0, 255))
    response = raw(
        emulator,
        "POST",
        KF2V,
        body={
            "model": "wan2.2-kf2v-flash",
            "parameters": {},
            "input": {
                "prompt": "猫" * 900,
                "extend_prompt": True,
                "function": "video-synthesis",
                "first_frame_url": _data_uri(first),
                "last_frame_url": _data_uri(last),
            },
        },
    )
    assert response.status_code == 200, response.text
    task_id = response.json()["output"]["task_id"]
    deadline = time.monotonic() + 30
    while (body := raw(emulator, "GET", f"/api/v1/tasks/{task_id}").json())["output"]["task_status"] != "SUCCEEDED":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(body["output"]["orig_prompt"]) == 800  # cut silently, like the service
    assert body["usage"] == {"video_duration": 5, "video_count": 1, "SR": 720}
    assert body["output"]["task_metrics"] == {"TOTAL": 1, "SUCCEEDED": 1, "FAILED": 0}


def test_image_checks_and_oss_rules(emulator):
    ok = _data_uri(make_image(480, 640))

    def create(first, headers=None, model="wan2.2-kf2v-flash"):
        return raw(emulator, "POST", KF2V, body={"model": model, "input": {"first_frame_url": first, "last_frame_url": ok}}, headers=headers)

    assert "format GIF" in create(_data_uri(make_image(300, 300, fmt="GIF"), "image/gif")).json()["message"]
    assert "alpha" in create(_data_uri(make_image(300, 300, mode="RGBA"))).json()["message"]
    assert "resolution is invalid" in create(_data_uri(make_image(200, 300))).json()["message"]
    assert create("ftp://x/a.png").json()["code"] == "InvalidURL"
    assert create("http://127.0.0.1:9/a.png").json()["code"] == "InvalidURL"
    # oss:// needs the resolve header and an upload for the same model.
    policy = raw(emulator, "GET", "/api/v1/uploads?action=getPolicy&model=wan2.2-kf2v-flash").json()["data"]
    key = f"{policy['upload_dir']}/a.png"
    fields = {
        "OSSAccessKeyId": policy["oss_access_key_id"],
        "Signature": policy["signature"],
        "policy": policy["policy"],
        "key": key,
        "x-oss-object-acl": "private",
        "x-oss-forbid-overwrite": "true",
        "success_action_status": "200",
    }
    assert httpx.post(policy["upload_host"], data=fields, files={"file": ("a.png", make_image(480, 640))}).status_code == 200
    again = httpx.post(policy["upload_host"], data=fields, files={"file": ("a.png", b"x")})
    assert again.status_code == 409 and "FileAlreadyExists" in again.text
    forged = httpx.post(policy["upload_host"], data={**fields, "Signature": "nope"}, files={"file": ("b.png", b"x")})
    assert forged.status_code == 403
    assert create(f"oss://{key}").json()["code"] == "invalid_parameter_error"
    assert create(f"oss://{key}", {"X-DashScope-OssResourceResolve": "enable"}).status_code == 200
    emulator.configure(region="beijing")
    plus = raw(
        emulator,
        "POST",
        KF2V,
        body={"model": "wanx2.1-kf2v-plus", "input": {"first_frame_url": f"oss://{key}", "last_frame_url": ok}},
        headers={"X-DashScope-OssResourceResolve": "enable"},
    )
    assert "uploaded for model wan2.2-kf2v-flash" in plus.json()["message"]
    emulator.configure(region="singapore")
    emulator.advance_clock(400)  # past the policy's 300 s
    expired = httpx.post(policy["upload_host"], data={**fields, "key": f"{policy['upload_dir']}/c.png"}, files={"file": ("c.png", b"x")})
    assert expired.status_code == 403 and "Policy expired" in expired.text


def test_wan27_media_rules(emulator):
    ok = _data_uri(make_image(480, 640))
    bad = raw(emulator, "POST", WAN27, body={"model": "wan2.7-i2v", "input": {"media": [{"type": "last_frame", "url": ok}]}})
    assert bad.status_code == 400 and "combination" in bad.json()["message"]
    twice = raw(emulator, "POST", WAN27, body={"model": "wan2.7-i2v", "input": {"media": [{"type": "first_frame", "url": ok}] * 2}})
    assert twice.status_code == 400
    legacy = raw(emulator, "POST", WAN27, body={"model": "wan2.7-i2v", "input": {"first_frame_url": ok}})
    assert legacy.status_code == 200  # accepted, then FAILED asynchronously, as observed on the service
    task_id = legacy.json()["output"]["task_id"]
    deadline = time.monotonic() + 10
    while (body := raw(emulator, "GET", f"/api/v1/tasks/{task_id}").json())["output"]["task_status"] != "FAILED":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert body["output"]["message"] == "Field required: input.media"


async def test_two_running_the_rest_queued(emulator, frames):
    emulator.configure(running_seconds=1.5)
    async with emulator.credentials().get_client() as client:
        tasks = [await client.submit(request(frames, seed=i)) for i in range(5)]
        await asyncio.sleep(0.4)
        statuses = [(await client.get_task(t.task_id)).output.task_status for t in tasks]
    assert statuses.count(TaskStatus.RUNNING) == 2 and statuses.count(TaskStatus.PENDING) == 3
    assert statuses[:2] == [TaskStatus.RUNNING] * 2  # first come, first served


async def test_submission_rate_limit_and_queue_limit(emulator, frames):
    emulator.configure(submit_rps=None, pending_seconds=60)
    async with emulator.credentials().get_client(min_submit_interval=0) as client:
        prepared = await client.prepare(request(frames))
        answers = await asyncio.gather(*(client.submit(prepared) for _ in range(3)), return_exceptions=True)
        throttled = [a for a in answers if isinstance(a, ThrottledError)]
        assert len(throttled) == 1 and throttled[0].code == "Throttling.RateQuota"
        emulator.configure(submit_rps=1000, queue_limit=2)
        with pytest.raises(ThrottledError):
            await client.submit(prepared)
    counters = emulator.counters()
    assert counters.submissions_accepted == 2 and counters.throttled == 2


async def test_task_and_video_expiry(emulator, frames):
    emulator.configure(task_ttl_seconds=100, video_ttl_seconds=50)
    async with emulator.credentials().get_client() as client:
        task = await client.submit(request(frames))
        result = await wait_for_task(client, task.task_id, QUICK)
        emulator.advance_clock(60)
        assert (await client.http.get(result.video_url)).status_code == 403
        assert (await client.get_task(task.task_id)).output.task_status is TaskStatus.SUCCEEDED
        emulator.advance_clock(60)
        with pytest.raises(TaskExpiredError):
            await wait_for_task(client, task.task_id, QUICK)
        unknown = await client.get_task("no-such-task")
    assert unknown.output.task_status is TaskStatus.UNKNOWN


async def test_faults_on_submit_and_query(emulator, frames):
    async with emulator.credentials().get_client() as client:
        prepared = await client.prepare(request(frames))
        emulator.inject(op="submit", count=2, status=500, code="InternalError")
        for _ in range(2):
            # A 5xx on create proves nothing: the client reports it as an unknown outcome, never as retryable.
            with pytest.raises(SubmissionOutcomeUnknownError) as lost:
                await client.submit(prepared)
            assert lost.value.status_code == 500 and not lost.value.retryable
        task = await client.submit(prepared)
        emulator.inject(op="query", count=2, status=503, code="ModelServingError", message="Too many requests.")
        result = await wait_for_task(client, task.task_id, QUICK)  # rides out the query faults
        assert result.status is TaskStatus.SUCCEEDED
        emulator.inject(op="query", status=401, code="InvalidApiKey", message="Invalid API-key provided.")
        with pytest.raises(AuthenticationError):
            await client.get_task(task.task_id)
    counters = emulator.counters()
    assert counters.submissions_accepted == 1
    assert counters.faults_injected == {"submit:error:InternalError": 2, "query:error:ModelServingError": 2, "query:error:InvalidApiKey": 1}


async def _throttled_queries(emulator, fraction: float, *, even: bool = False, calls: int = 20) -> list[int]:
    """Which of ``calls`` queries were throttled, with that fraction of them armed to be."""
    emulator.inject(op="query", fraction=fraction, even=even, count=None, status=429, code="Throttling", message="Requests throttling triggered.")
    throttled = []
    async with emulator.credentials().get_client() as client:
        for call in range(calls):
            try:
                await client.get_task("x")
            except ThrottledError:
                throttled.append(call)
    emulator.clear_faults()
    return throttled


async def test_throttled_fraction_is_deterministic(emulator, frames):
    async def run() -> list[int]:
        emulator.reset()
        emulator.configure(seed=7)
        return await _throttled_queries(emulator, 0.5)

    first, second = await run(), await run()
    assert first == second and 3 <= len(first) <= 17


async def test_an_even_fraction_hits_exactly_that_share_of_calls_evenly_spaced(emulator, frames):
    emulator.reset()
    assert await _throttled_queries(emulator, 0.2, even=True) == [4, 9, 14, 19]


async def test_dropped_connection_creates_the_task_but_the_client_cannot_know(emulator, frames):
    emulator.inject(op="submit", action="drop")
    async with emulator.credentials().get_client() as client:
        with pytest.raises(SubmissionOutcomeUnknownError) as info:
            await client.submit(request(frames))
        listing = await client.list_tasks(model_name="wan2.2-kf2v-flash")
    assert not info.value.retryable
    assert emulator.counters().submissions_accepted == 1 and listing.total == 1


async def test_task_faults_fail_and_expire(emulator, frames):
    emulator.inject(op="task", action="fail", code="DataInspectionFailed", message="Output data may contain inappropriate content.")
    emulator.inject(op="task", action="expire")
    async with emulator.credentials().get_client() as client:
        failing = await client.submit(request(frames, seed=1))
        expiring = await client.submit(request(frames, seed=2))
        with pytest.raises(TaskFailedError) as failed:
            await wait_for_task(client, failing.task_id, QUICK)
        with pytest.raises(TaskExpiredError):
            await wait_for_task(client, expiring.task_id, QUICK)
        good = await client.submit(request(frames, seed=3))
        emulator.expire_task(good.task_id)
        assert (await client.get_task(good.task_id)).output.task_status is TaskStatus.UNKNOWN
    assert failed.value.code == "DataInspectionFailed" and not failed.value.worth_resubmitting


async def test_download_faults(emulator, frames):
    async with emulator.credentials().get_client() as client:
        task = await client.submit(request(frames))
        result = await wait_for_task(client, task.task_id, QUICK)
        token = result.video_url.split("/")[-1].split(".")[0]
        emulator.inject(op="download", action="truncate", after_bytes=1000)
        with pytest.raises(httpx.HTTPError):
            await client.http.get(result.video_url)
        emulator.inject(op="download", action="slow", bytes_per_second=2_000_000, task_id=token)
        started = time.monotonic()
        slow = await client.http.get(result.video_url)
        assert slow.status_code == 200 and time.monotonic() - started >= len(slow.content) / 2_000_000 * 0.8
        emulator.inject(op="download", status=503, code="ServiceUnavailable", message="busy")
        assert (await client.http.get(result.video_url)).status_code == 503
    counters = emulator.counters()
    assert counters.downloads == 3 and counters.downloads_completed == 1


def test_faults_armed_at_start_up_and_admin_validation(frames):
    config = EmulatorConfig(faults=[{"op": "query", "status": 500, "code": "InternalError"}])
    with run_emulator(config) as emu:
        assert raw(emu, "GET", "/api/v1/tasks/x").status_code == 500
        assert raw(emu, "GET", "/api/v1/tasks/x").status_code == 200
        assert httpx.post(emu.base_url + "/__emulator__/faults", json={"op": "nope"}).status_code == 422


async def test_mountable_asgi_app():
    from asgi_lifespan import LifespanManager

    async with LifespanManager(create_app(EmulatorConfig())) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as http:
            answer = await http.get("/api/v1/tasks/abc", headers={"Authorization": "Bearer sk-emulator-0000000000000000"})
    assert answer.json()["output"]["task_status"] == "UNKNOWN"


def test_console_script_prints_its_url_and_key():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect_wan.cli", "emulator", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        assert f"http://127.0.0.1:{port}" in lines[0] and "sk-emulator-" in lines[1]
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/tasks/x")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert answer.status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_frames_from_http_urls_are_downloaded_by_the_emulator(emulator, tmp_path):
    import functools
    import http.server
    import threading

    (tmp_path / "a.png").write_bytes(make_image(480, 640))
    (tmp_path / "b.jpg").write_bytes(make_image(480, 640, (0, 0, 200), fmt="JPEG"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        created = raw(
            emulator,
            "POST",
            KF2V,
            body={
                "model": "wan2.2-kf2v-flash",
                "parameters": {"resolution": "480P"},
                "input": {"first_frame_url": f"{base}/a.png?token=x", "last_frame_url": f"{base}/b.jpg"},
            },
        )
        missing = raw(
            emulator, "POST", KF2V, body={"model": "wan2.2-kf2v-flash", "input": {"first_frame_url": f"{base}/none.png", "last_frame_url": f"{base}/b.jpg"}}
        )
    finally:
        server.shutdown()
    assert created.status_code == 200, created.text
    assert missing.json()["code"] == "InvalidURL" and "404" in missing.json()["message"]
