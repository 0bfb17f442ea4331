"""Every preflight rule names the field, the value and the rule, and nothing is sent."""

from __future__ import annotations

import base64
import io
import math
import wave

import httpx
import pytest
from PIL import Image

from prefect_wan.client import DashScopeClient, KeyframeVideoRequest, PreflightError, predict_output_size
from prefect_wan.client.preflight import check_request
from tests.helpers import FAKE_KEY, make_image


def silent_client(region="beijing"):
    sent: list[httpx.Request] = []

    def handler(request):
        sent.append(request)
        return httpx.Response(500)

    return DashScopeClient(FAKE_KEY, region=region, base_url="https://dashscope.invalid", transport=httpx.MockTransport(handler)), sent


async def refused(request: KeyframeVideoRequest, region="beijing") -> PreflightError:
    client, sent = silent_client(region)
    async with client:
        with pytest.raises(PreflightError) as info:
            await client.submit(request)
    assert sent == [], "preflight must refuse before any request is sent"
    return info.value


def one(error: PreflightError, field: str):
    matches = [v for v in error.violations if v.field == field]
    assert matches, f"no violation for {field}: {error}"
    return matches[0]


@pytest.mark.parametrize(
    "changes,field,words",
    [
        ({"model": "wan9-kf2v"}, "model", "unknown model"),
        ({"model": "wan2.1-kf2v-plus"}, "model", "not offered in region beijing"),
        ({"resolution": "4K"}, "resolution", "takes 480P, 720P, 1080P"),
        ({"model": "wanx2.1-kf2v-plus", "resolution": "480P"}, "resolution", "takes 720P"),
        ({"duration": 10}, "duration", "exactly 5 s"),
        ({"model": "wan2.7-i2v", "duration": 16}, "duration", "2 to 15 s"),
        ({"seed": -1}, "seed", "[0, 2147483647]"),
        ({"seed": 2**31}, "seed", "[0, 2147483647]"),
        ({"prompt": "x" * 801}, "prompt", "801 characters, the limit is 800"),
        ({"model": "wan2.7-i2v", "prompt": "猫" * 5001}, "prompt", "the limit is 5000"),
        ({"negative_prompt": "y" * 501}, "negative_prompt", "the limit is 500"),
        ({"template": "hanfu-1"}, "template", "takes no template"),
        ({"model": "wanx2.1-kf2v-plus", "template": "hufu-1"}, "template", "must be one of"),
        ({"last_frame": None}, "last_frame", "required"),
        ({"driving_audio": b"RIFF"}, "driving_audio", "takes no driving audio"),
    ],
)
async def test_parameter_rules(frames, changes, field, words):
    first, last = frames
    request = KeyframeVideoRequest(**{"first_frame": first, "last_frame": last, **changes})
    violation = one(await refused(request), field)
    assert words in violation.rule
    assert field in str(violation)


async def test_all_problems_are_reported_at_once(frames):
    first, last = frames
    error = await refused(KeyframeVideoRequest(first_frame=first, last_frame=last, seed=-5, resolution="2K", prompt="p" * 900))
    assert set(error.fields) == {"seed", "resolution", "prompt"}
    assert "-5" in str(error) and "'2K'" in str(error)


async def test_prompt_truncation_is_opt_in(frames):
    first, last = frames
    checked = check_request(KeyframeVideoRequest(first_frame=first, last_frame=last, prompt="z" * 900, truncate_prompts=True), "beijing")
    assert len(checked.prompt) == 800


def png(width, height, mode="RGB") -> bytes:
    return make_image(width, height, mode=mode)


@pytest.mark.parametrize(
    "image,words",
    [
        (make_image(300, 300, fmt="GIF"), "format GIF is not accepted"),
        (png(300, 300, mode="RGBA"), "PNG with transparency"),
        (png(200, 300), "width 200 px is outside [240, 8000]"),
        (png(300, 8001), "height 8001 px is outside [240, 8000]"),
        (b"definitely not an image", "not a readable image"),
    ],
)
async def test_image_rules(frames, image, words):
    _, last = frames
    violation = one(await refused(KeyframeVideoRequest(first_frame=image, last_frame=last)), "first_frame")
    assert words in violation.rule


async def test_file_size_and_aspect_limits(frames, tmp_path):
    first, _ = frames
    big = tmp_path / "big.bmp"
    Image.new("RGB", (2000, 1800)).save(big)  # ~10.8 MB as BMP
    violation = one(await refused(KeyframeVideoRequest(first_frame=first, last_frame=big)), "last_frame")
    assert "larger than the limit of 10485760 bytes" in violation.rule
    # wan2.7 allows 20 MB but limits the aspect ratio to 1:8.
    wide = png(2500, 300)
    violation = one(await refused(KeyframeVideoRequest(model="wan2.7-i2v", first_frame=wide, last_frame=first)), "first_frame")
    assert "beyond 1:8" in violation.rule


async def test_missing_sources_are_named(frames, tmp_path):
    first, _ = frames
    error = await refused(KeyframeVideoRequest(first_frame=first, last_frame=tmp_path / "nope.png"))
    assert "no such file" in one(error, "last_frame").rule
    error = await refused(KeyframeVideoRequest(first_frame="memory://nowhere/x.png", last_frame=first))
    assert "no such file" in one(error, "first_frame").rule


def wav_bytes(seconds: float) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        frames = bytearray()
        for i in range(int(8000 * seconds)):
            value = int(3000 * math.sin(i / 10))
            frames += value.to_bytes(2, "little", signed=True)
        out.writeframes(bytes(frames))
    return buffer.getvalue()


async def test_driving_audio_rules(frames):
    first, last = frames
    error = await refused(KeyframeVideoRequest(model="wan2.7-i2v", first_frame=first, last_frame=last, driving_audio=wav_bytes(1.0)))
    assert "1.0 s is outside [2, 30] s" in one(error, "driving_audio").rule
    error = await refused(KeyframeVideoRequest(model="wan2.7-i2v", first_frame=first, last_frame=last, driving_audio=b"\x00" * 100))
    assert "not readable as WAV or MP3" in one(error, "driving_audio").rule


async def test_fingerprint_follows_content_not_location(frames, tmp_path):
    import fsspec

    first, last = frames
    copy_dir = tmp_path / "elsewhere"
    copy_dir.mkdir()
    (copy_dir / "a.png").write_bytes(first.read_bytes())
    fsspec.filesystem("memory").pipe("/fp/last.jpg", last.read_bytes())
    data_uri = "data:image/png;base64," + base64.b64encode(first.read_bytes()).decode()
    client, sent = silent_client()
    async with client:
        base = await client.prepare(KeyframeVideoRequest(first_frame=first, last_frame=last, prompt="p"))
        moved = await client.prepare(KeyframeVideoRequest(first_frame=copy_dir / "a.png", last_frame="memory://fp/last.jpg", prompt="p"))
        inline = await client.prepare(KeyframeVideoRequest(first_frame=data_uri, last_frame=last.read_bytes(), prompt="p"))
        other_prompt = await client.prepare(KeyframeVideoRequest(first_frame=first, last_frame=last, prompt="q"))
        swapped = await client.prepare(KeyframeVideoRequest(first_frame=last, last_frame=first, prompt="p"))
        explicit_default = await client.prepare(KeyframeVideoRequest(first_frame=first, last_frame=last, prompt="p", resolution="720P"))
        pil = await client.prepare(KeyframeVideoRequest(first_frame=Image.open(first), last_frame=last, prompt="p"))
    assert sent == []
    assert base.fingerprint == moved.fingerprint == inline.fingerprint == explicit_default.fingerprint
    assert len({base.fingerprint, other_prompt.fingerprint, swapped.fingerprint}) == 3
    assert pil.first_frame.width == 480 and len(pil.fingerprint) == 64
    # The region is part of the work: a Singapore task is another bill.
    sg, _ = silent_client("singapore")
    async with sg:
        assert (await sg.prepare(KeyframeVideoRequest(first_frame=first, last_frame=last, prompt="p"))).fingerprint != base.fingerprint


@pytest.mark.parametrize(
    "size,tier,expected",
    [
        ((750, 1000), "720P", (816, 1104)),
        ((1280, 720), "720P", (1280, 720)),
        ((832, 480), "480P", (832, 480)),
        ((1000, 1000), "480P", (624, 624)),
        ((1000, 1000), "720P", (960, 960)),
        ((1000, 1000), "1080P", (1440, 1440)),
    ],
)
def test_output_size_prediction(size, tier, expected):
    assert predict_output_size(*size, tier) == expected
    w, h = predict_output_size(*size, tier)
    assert w % 16 == 0 and h % 16 == 0
