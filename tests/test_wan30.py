"""wan3.0-video in every region, the workspace hosts, and the catalog the README shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from prefect_wan.blocks import WanCredentials
from prefect_wan.client import KeyframeVideoRequest, PreflightError
from prefect_wan.client.catalog import MODELS, catalog_table, lookup_model
from prefect_wan.client.preflight import check_request
from prefect_wan.client.regions import Region
from prefect_wan.client.wire import CreateTaskBody, MediaItem, TaskInput, TaskParameters, TaskStatus
from prefect_wan.emulator import run_emulator
from prefect_wan.flows import GenerationOptions, keyframes_to_video
from tests.test_emulator import probe
from tests.test_flows import FIRST, LAST, POLL
from tests.test_preflight import one, refused

ROOT = Path(__file__).resolve().parent.parent
FAST = {"pending_seconds": 0.05, "running_seconds": 0.2, "submit_rps": 1000.0, "tick_seconds": 0.02}


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("region", list(Region))
def test_each_model_is_accepted_exactly_where_it_is_offered(model, region):
    request = KeyframeVideoRequest(first_frame=FIRST, last_frame=LAST, model=model)
    spec = MODELS[model]
    if region in spec.regions:
        assert check_request(request, region).spec is spec
        return
    with pytest.raises(PreflightError) as info:
        check_request(request, region)
    rule = one(info.value, "model").rule
    assert f"not offered in region {region.value}" in rule
    assert all(r.value in rule for r in spec.regions)  # says where it is offered


async def test_a_model_outside_its_regions_is_refused_before_sending():
    error = await refused(KeyframeVideoRequest(first_frame=FIRST, last_frame=LAST, model="wan2.7-i2v"), region="frankfurt")
    assert "offered in beijing, singapore" in one(error, "model").rule


@pytest.mark.parametrize(
    "changes,field,words",
    [
        ({"model": "wan3.0-video", "ratio": "2:1"}, "ratio", "adaptive, 16:9"),
        ({"ratio": "16:9"}, "ratio", "takes no ratio"),
        ({"audio": False}, "audio", "makes silent videos"),
        ({"model": "wan2.7-i2v", "audio": False}, "audio", "always has an audio track"),
        ({"model": "wan3.0-video", "duration": 31}, "duration", "2 to 30 s, or -1"),
        ({"model": "wan2.7-i2v", "duration": -1}, "duration", "2 to 15 s"),
        ({"model": "wan3.0-video", "negative_prompt": "blur"}, "negative_prompt", "no negative prompt"),
        ({"model": "wan3.0-video-prime", "prompt": "p" * 20_001}, "prompt", "the limit is 20000"),
    ],
)
def test_wan30_parameter_rules(changes, field, words):
    with pytest.raises(PreflightError) as info:
        check_request(KeyframeVideoRequest(first_frame=FIRST, last_frame=LAST, **changes), "singapore")
    assert words in one(info.value, field).rule


def test_wan30_defaults_and_smart_duration():
    checked = check_request(KeyframeVideoRequest(first_frame=FIRST, last_frame=LAST, model="wan3.0-video", duration=-1), "tokyo")
    params = checked.parameters
    assert (params.resolution, params.ratio, params.audio, params.duration) == ("1080P", "adaptive", True, -1)
    assert lookup_model("wan3.0-video-2026-08-06").family.name == "wan3.0"


def test_workspace_hosts():
    frankfurt = WanCredentials(region="frankfurt", workspace="ws1", api_key="sk-x")
    assert frankfurt.effective_base_url == "https://ws1.eu-central-1.maas.aliyuncs.com"
    assert WanCredentials(region="singapore", workspace="ws2", workspace_host=True, api_key="sk-x").effective_base_url == (
        "https://ws2.ap-southeast-1.maas.aliyuncs.com"
    )
    assert WanCredentials(region="beijing", workspace="ws3", api_key="sk-x").effective_base_url == "https://dashscope.aliyuncs.com"
    with pytest.raises(ValidationError, match="region virginia needs a workspace id"):
        WanCredentials(region="virginia", api_key="sk-x")
    assert WanCredentials(region="tokyo", base_url="http://127.0.0.1:9", api_key="sk-x").effective_base_url == "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def frankfurt():
    with run_emulator(region=Region.FRANKFURT, **FAST) as emu:
        yield emu


async def test_a_wan30_pair_in_frankfurt_through_a_workspace_host(prefect_harness, frankfurt, tmp_path):
    credentials = frankfurt.workspace_credentials("ws-fra")
    assert credentials.effective_base_url == "https://ws-fra.eu-central-1.maas.aliyuncs.com"
    options = GenerationOptions(model="wan3.0-video", resolution="480P", duration=3, seed=701)
    video = await keyframes_to_video(FIRST, LAST, prompt="dawn to dusk", options=options, credentials=credentials, destination=str(tmp_path), poll=POLL)
    found = probe(Path(video.record.video.path).read_bytes())
    assert found["audio"] and abs(found["seconds"] - 3) < 0.2
    cost = video.record.cost
    price = MODELS["wan3.0-video"].price(Region.FRANKFURT, "480P")
    assert cost.billed_seconds == 3.0 and cost.amount == pytest.approx(3 * price.amount) and cost.currency == "CNY"
    assert video.record.usage["fps"] == 30 and video.record.endpoint == credentials.endpoint
    silent = await keyframes_to_video(
        FIRST, LAST, prompt="dawn to dusk", options=options.model_copy(update={"audio": False}), credentials=credentials, destination=str(tmp_path), poll=POLL
    )
    assert not probe(Path(silent.record.video.path).read_bytes())["audio"]
    assert frankfurt.counters().submissions_accepted == 2


async def test_smart_duration_and_fixed_ratio(prefect_harness, frankfurt, tmp_path):
    options = GenerationOptions(model="wan3.0-video", resolution="480P", duration=-1, ratio="1:1", seed=702)
    video = await keyframes_to_video(
        FIRST, LAST, prompt="grow", options=options, credentials=frankfurt.workspace_credentials(), destination=str(tmp_path), poll=POLL
    )
    chosen = video.record.usage["duration"]
    assert 2 <= chosen <= 30 and abs(video.record.probe.duration_seconds - chosen) < 0.2
    assert video.record.probe.width == video.record.probe.height and video.record.usage["ratio"] == "1:1"
    assert video.record.cost.billed_seconds == chosen


async def test_frames_with_reference_media_fail_asynchronously(frankfurt):
    async with frankfurt.workspace_credentials().get_client() as client:
        frame = await client.upload_file(Path(FIRST).read_bytes(), filename="f.png", model="wan3.0-video")
        body = CreateTaskBody(
            model="wan3.0-video",
            input=TaskInput(
                prompt="x",
                media=[
                    MediaItem(type="first_frame", url=frame),
                    MediaItem(type="reference_image", url=frame),
                ],
            ),
            parameters=TaskParameters(resolution="480P"),
        )
        created = await client.create_task(body, oss_resolve=True)
        assert created.output.task_status is TaskStatus.PENDING
        from prefect_wan.client.errors import TaskFailedError
        from prefect_wan.client.polling import wait_for_task

        with pytest.raises(TaskFailedError, match="mutually exclusive"):
            await wait_for_task(client, created.output.task_id, POLL)


async def test_a_workspace_host_of_another_region_is_refused(frankfurt):
    from prefect_wan.client.client import resolve_host
    from prefect_wan.client.errors import AuthenticationError

    undo = resolve_host("ws-x.ap-northeast-1.maas.aliyuncs.com", frankfurt.base_url)
    try:
        credentials = WanCredentials(region="tokyo", workspace="ws-x", api_key=frankfurt.api_key)
        async with credentials.get_client() as client:
            with pytest.raises(AuthenticationError, match="region tokyo"):
                await client.get_task("any")
    finally:
        undo()


def test_the_readme_table_is_the_catalog():
    readme = (ROOT / "README.md").read_text()
    assert catalog_table() in readme, "regenerate the README's model table from prefect_wan.client.catalog.catalog_table()"
