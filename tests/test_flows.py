"""The flows end to end: emulator + real Prefect server + real S3 (moto), asserting on counters."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fsspec
import pytest
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from prefect_wan.archive.errors import VideoDownloadError
from prefect_wan.archive.store import archive_stem
from prefect_wan.client.errors import TaskFailedError
from prefect_wan.client.polling import PollSchedule
from prefect_wan.flows import (
    BatchFailedError,
    GenerationOptions,
    KeyframePair,
    keyframes_batch,
    keyframes_to_video,
)
from prefect_wan.flows.reporting import ARCHIVED_EVENT, FAILED_EVENT
from prefect_wan.media.chart import HEIGHT as CHART_HEIGHT
from tests.test_emulator import probe

EXAMPLES = Path(__file__).resolve().parent.parent / "prefect_wan" / "examples"
FIRST, LAST = str(EXAMPLES / "first.png"), str(EXAMPLES / "last.png")
POLL = PollSchedule(initial_delay=0.05, interval=0.1, max_interval=0.3, jitter=0.1, deadline=120)


def options(seed: int, **changes) -> GenerationOptions:
    # A distinct seed per test gives a distinct fingerprint, so tests never share cache records.
    return GenerationOptions(resolution="480P", seed=seed, **changes)


async def generate(emulator, seed, destination, **kwargs):
    return await keyframes_to_video(
        FIRST,
        LAST,
        prompt="sunrise to noon",
        options=options(seed),
        credentials=emulator.credentials(),
        destination=destination,
        poll=POLL,
        **kwargs,
    )


def archived(folder: Path) -> list[Path]:
    """What a local archive holds; its ``.partials/`` (where writes are staged) must be empty."""
    partials = folder / ".partials"
    assert not partials.exists() or list(partials.iterdir()) == [], list(partials.iterdir())
    return [p for p in folder.iterdir() if p.name != ".partials"]


def stem(emulator, video) -> str:
    """Archive names of the emulator's videos: the fingerprint, tagged with the endpoint."""
    name = archive_stem(video.fingerprint, emulator.credentials().endpoint)
    assert name.startswith(video.fingerprint[:32] + "-")
    return name


async def read_artifacts() -> dict:
    """The newest artifact of each key. Uses the REST endpoint: Prefect 3.8.8's client sends None
    defaults its server (on fastapi<0.155) rejects, and its empty filter objects match nothing."""
    from prefect.client.schemas.objects import Artifact

    async with get_client() as client:
        response = await client._client.post("/artifacts/filter", json={"limit": 200, "sort": "CREATED_DESC", "offset": 0})
    latest: dict = {}
    for artifact in map(Artifact.model_validate, response.json()):
        latest.setdefault(artifact.key, artifact)
    return latest


def events_named(worker, name):
    worker.drain()
    return [e for e in worker._client.events if e.event == name]


async def test_archives_to_s3_with_a_sidecar_that_matches(prefect_harness, emulator, s3, asserting_events_worker):
    bucket, storage = s3
    video = await generate(emulator, 101, f"s3://{bucket}/videos", storage_options=storage, label="dawn")
    fs = fsspec.filesystem("s3", **storage)
    data = fs.cat_file(video.record.video.path)
    sidecar = json.loads(fs.cat_file(video.sidecar_url))
    assert video.video_url == f"s3://{bucket}/videos/{stem(emulator, video)}.mp4"
    assert sidecar["video"]["sha256"] == hashlib.sha256(data).hexdigest() and sidecar["video"]["bytes"] == len(data)
    assert sidecar["fingerprint"] == video.fingerprint and sidecar["task_id"] == video.task_id
    assert sidecar["request"]["prompt"] == "sunrise to noon" and sidecar["actual_prompt"].startswith("sunrise to noon")
    assert sidecar["usage"]["video_duration"] == 5 and sidecar["probe"]["frames"] == 150
    assert "Signature" not in sidecar["source_video_url"] and emulator.api_key not in json.dumps(sidecar)
    assert probe(data)["codec"] == "h264"
    name = f"{bucket}/videos/{stem(emulator, video)}"
    assert fs.ls(f"{bucket}/videos") == [f"{name}.json", f"{name}.mp4", f"{name}.png"]
    assert sidecar["poster"]["path"] == f"{name}.png"
    poster = Image.open(io.BytesIO(fs.cat_file(f"{name}.png")))
    assert poster.format == "PNG" and poster.height == 180 + CHART_HEIGHT  # the frames, and the motion chart under them
    archived = events_named(asserting_events_worker, ARCHIVED_EVENT)
    assert archived[-1].payload["video_url"] == video.video_url
    assert archived[-1].resource.id == f"prefect_wan.video.{video.fingerprint}"
    artifacts = await read_artifacts()
    assert artifacts["wan-dawn"].type == "markdown" and video.video_url in artifacts["wan-dawn"].data
    assert "sunrise to noon" in artifacts["wan-dawn-prompts"].data
    # moto presigns like S3 does: the UI's markdown shows the poster itself, not a link to it.
    assert video.poster_view_url.startswith("http")
    assert f"![first, middle and last frames]({video.poster_view_url})" in artifacts["wan-dawn-prompts"].data


async def test_rerun_submits_and_downloads_nothing_unless_forced(prefect_harness, emulator, tmp_path):
    first = await generate(emulator, 102, str(tmp_path))
    again = await generate(emulator, 102, str(tmp_path))
    counters = emulator.counters()
    assert again.reused and again.video_url == first.video_url
    assert counters.submissions_accepted == 1 and counters.downloads == 1
    forced = await generate(emulator, 102, str(tmp_path), force=True)
    assert not forced.reused and emulator.counters().submissions_accepted == 2
    assert sorted(p.name for p in archived(tmp_path)) == [f"{stem(emulator, first)}.{ext}" for ext in ("json", "mp4", "png")]


async def test_flow_retry_reuses_the_submitted_task(prefect_harness, emulator, tmp_path):
    # A non-retryable query error fails the first attempt mid-poll; the flow retry must not pay again.
    emulator.inject(op="query", status=401, code="InvalidApiKey", message="Invalid API-key provided.")
    retried = keyframes_to_video.with_options(retries=1, retry_delay_seconds=0)
    video = await retried(FIRST, LAST, prompt="sunrise", options=options(103), credentials=emulator.credentials(), destination=str(tmp_path), poll=POLL)
    counters = emulator.counters()
    assert counters.submissions_accepted == 1 and counters.faults_injected == {"query:error:InvalidApiKey": 1}
    assert Path(video.record.video.path).exists()


async def test_two_concurrent_runs_submit_once(prefect_harness, emulator, tmp_path):
    one, two = await asyncio.gather(generate(emulator, 104, str(tmp_path)), generate(emulator, 104, str(tmp_path)))
    assert one.task_id == two.task_id and one.video_url == two.video_url
    assert emulator.counters().submissions_accepted == 1


async def test_failed_task_raises_with_the_service_code(prefect_harness, emulator, tmp_path, asserting_events_worker):
    emulator.inject(op="task", action="fail", code="DataInspectionFailed", message="Output data may contain inappropriate content.")
    with pytest.raises(TaskFailedError) as info:
        await generate(emulator, 105, str(tmp_path))
    assert info.value.code == "DataInspectionFailed" and "inappropriate" in info.value.message
    assert emulator.counters().submissions_accepted == 1  # moderation failures are not resubmitted
    failed = events_named(asserting_events_worker, FAILED_EVENT)
    assert failed[-1].payload["code"] == "DataInspectionFailed" and failed[-1].payload["fingerprint"]
    assert list(tmp_path.iterdir()) == []


async def test_unknown_task_leads_to_one_fresh_submission(prefect_harness, emulator, tmp_path):
    emulator.inject(op="task", action="expire")
    video = await generate(emulator, 106, str(tmp_path))
    assert emulator.counters().submissions_accepted == 2 and Path(video.record.video.path).exists()


async def test_throttling_and_server_errors_on_submit_are_retried(prefect_harness, emulator, tmp_path):
    emulator.inject(op="submit", status=429, code="Throttling.RateQuota", message="Requests rate limit exceeded, please try again later.")
    emulator.inject(op="submit", status=500, code="InternalError")
    emulator.inject(op="query", count=3, status=503, code="ModelServingError", message="Too many requests.")
    video = await generate(emulator, 107, str(tmp_path))
    counters = emulator.counters()
    assert counters.submissions_accepted == 1 and counters.submissions_rejected == 2
    assert counters.faults_injected["query:error:ModelServingError"] == 3
    assert video.record.video.bytes > 0


async def test_retry_after_is_honoured_before_resubmitting(prefect_harness, emulator, tmp_path):
    emulator.inject(op="submit", status=429, code="Throttling", message="Requests throttling triggered.", retry_after=1.5)
    started = time.monotonic()
    await generate(emulator, 112, str(tmp_path))
    assert time.monotonic() - started >= 1.5
    counters = emulator.counters()
    assert counters.submissions_accepted == 1 and counters.submissions_rejected == 1


async def test_cut_downloads_never_leave_a_partial_object(prefect_harness, emulator, s3):
    bucket, storage = s3
    fs = fsspec.filesystem("s3", **storage)
    emulator.inject(op="download", action="truncate", after_bytes=50_000, count=10)
    with pytest.raises(VideoDownloadError):
        await generate(emulator, 109, f"s3://{bucket}/cut", storage_options=storage)
    fs.invalidate_cache()
    assert not fs.exists(f"{bucket}/cut") or fs.ls(f"{bucket}/cut") == []
    emulator.clear_faults()
    emulator.inject(op="download", action="truncate", after_bytes=50_000, count=1)
    video = await generate(emulator, 109, f"s3://{bucket}/cut", storage_options=storage)
    fs.invalidate_cache()
    assert fs.ls(f"{bucket}/cut") == [f"{bucket}/cut/{stem(emulator, video)}.{ext}" for ext in ("json", "mp4", "png")]
    assert emulator.counters().submissions_accepted == 1  # the download retries reused the task


async def test_an_archive_is_never_replaced_by_a_broken_one(prefect_harness, emulator, tmp_path):
    good = await generate(emulator, 110, str(tmp_path))
    before = Path(good.record.video.path).read_bytes()
    emulator.inject(op="download", action="truncate", after_bytes=10_000, count=10)
    with pytest.raises(VideoDownloadError):
        await generate(emulator, 110, str(tmp_path), force=True)
    assert Path(good.record.video.path).read_bytes() == before
    assert sorted(p.suffix for p in archived(tmp_path)) == [".json", ".mp4", ".png"]


def _run_flow_in_subprocess(emulator, destination: str, seed: int) -> subprocess.Popen:
    script = textwrap.dedent(f"""
        import asyncio
        from prefect_wan.blocks import WanCredentials
        from prefect_wan.client.polling import PollSchedule
        from prefect_wan.flows import GenerationOptions, keyframes_to_video
        creds = WanCredentials(api_key={emulator.api_key!r}, base_url={emulator.base_url!r}, region="singapore", min_submit_interval=0)
        asyncio.run(keyframes_to_video({FIRST!r}, {LAST!r}, prompt="sunrise to noon", options=GenerationOptions(resolution="480P", seed={seed}),
                    credentials=creds, destination={destination!r}, poll=PollSchedule(initial_delay=0.05, interval=0.1, jitter=0)))
    """)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_a_killed_process_resumes_the_same_task(prefect_harness, emulator, tmp_path):
    emulator.configure(running_seconds=120)
    process = _run_flow_in_subprocess(emulator, str(tmp_path), seed=111)
    deadline = time.monotonic() + 120
    while not (emulator.counters().submissions_accepted == 1 and emulator.counters().queries + emulator.counters().lists >= 2):
        assert process.poll() is None and time.monotonic() < deadline
        await asyncio.sleep(0.2)
    process.kill()
    process.wait()
    emulator.configure(running_seconds=0.2)
    video = await generate(emulator, 111, str(tmp_path))
    counters = emulator.counters()
    assert counters.submissions_accepted == 1 and video.task_id == next(iter(emulator.state.tasks))


async def test_batch_from_an_s3_manifest(prefect_harness, emulator, s3, asserting_events_worker):
    bucket, storage = s3
    fs = fsspec.filesystem("s3", **storage)
    fs.put_file(FIRST, f"{bucket}/in/frames/a.png")
    fs.put_file(LAST, f"{bucket}/in/frames/b.png")
    fs.pipe(
        f"{bucket}/in/manifest.yaml",
        textwrap.dedent("""
        pairs:
          - {first_frame: frames/a.png, last_frame: frames/b.png, prompt: rise, label: rise, seed: 201}
          - {first_frame: frames/b.png, last_frame: frames/a.png, prompt: set, label: set, seed: 202}
          - {first_frame: frames/a.png, last_frame: frames/b.png, prompt: bad, label: bad, seed: -1}
          - {first_frame: frames/a.png, last_frame: frames/missing.png, label: missing}
    """).encode(),
    )
    run = keyframes_batch(
        manifest=f"s3://{bucket}/in/manifest.yaml",
        manifest_storage_options=storage,
        options=GenerationOptions(resolution="480P"),
        credentials=emulator.credentials(),
        destination=f"s3://{bucket}/out",
        storage_options=storage,
        poll=POLL,
    )
    with pytest.raises(BatchFailedError) as info:
        await run
    assert "2 archived" in str(info.value) and "2 failed" in str(info.value)
    assert "seed=-1" in str(info.value) and "missing.png: no such file" in str(info.value)
    fs.invalidate_cache()
    assert len(fs.glob(f"{bucket}/out/*.mp4")) == 2 and emulator.counters().submissions_accepted == 2
    assert {e.payload["label"] for e in events_named(asserting_events_worker, FAILED_EVENT)} >= {"bad", "missing"}
    artifacts = await read_artifacts()
    assert artifacts["wan-batch"].type == "table" and artifacts["wan-batch-progress"].data == 100.0


async def test_batch_rerun_and_concurrency_limit(prefect_harness, emulator, tmp_path):
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="wan-test-account", limit=2))
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt="p", seed=300 + i, label=f"p{i}") for i in range(3)]
    kwargs = dict(
        pairs=pairs,
        options=GenerationOptions(resolution="480P"),
        credentials=emulator.credentials(),
        destination=str(tmp_path),
        poll=POLL,
        concurrency_limit="wan-test-account",
    )
    first = await keyframes_batch(**kwargs)
    assert len(first.videos) == 3 and not any(v.reused for v in first.videos)
    second = await keyframes_batch(**kwargs)
    assert all(v.reused for v in second.videos)
    assert emulator.counters().submissions_accepted == 3 and emulator.counters().downloads == 3
    with pytest.raises(BatchFailedError, match="ConcurrencySlotAcquisitionError|no-such-limit"):
        await keyframes_batch(**{**kwargs, "concurrency_limit": "no-such-limit", "force": True})


async def test_batch_takes_a_named_rate_limit_before_each_submission(prefect_harness, emulator, tmp_path):
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="wan-test-submits", limit=1, slot_decay_per_second=2.0))
        pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt="rl", seed=500 + i, label=f"rl{i}") for i in range(2)]
        result = await keyframes_batch(
            pairs=pairs,
            options=GenerationOptions(resolution="480P"),
            credentials=emulator.credentials(),
            destination=str(tmp_path),
            poll=POLL,
            rate_limit="wan-test-submits",
        )
        limit = await client.read_global_concurrency_limit_by_name("wan-test-submits")
    assert len(result.videos) == 2 and emulator.counters().submissions_accepted == 2
    assert limit.active_slots <= 1
    # The limit is really consulted, strictly: a name that does not exist stops every submission.
    with pytest.raises(BatchFailedError, match="ConcurrencySlotAcquisitionError|no-such-rate"):
        await keyframes_batch(
            pairs=pairs,
            options=GenerationOptions(resolution="480P"),
            credentials=emulator.credentials(),
            destination=str(tmp_path),
            poll=POLL,
            rate_limit="no-such-rate",
            force=True,
        )
    assert emulator.counters().submissions_accepted == 2


async def test_tasks_work_on_their_own_in_a_user_flow(prefect_harness, emulator, tmp_path):
    from prefect import flow

    from prefect_wan.archive.destination import ArchiveDestination
    from prefect_wan.client import KeyframeVideoRequest
    from prefect_wan.flows.prepared import request_record
    from prefect_wan.tasks import archive_video, poll_video, submit_video

    credentials = emulator.credentials()
    request = KeyframeVideoRequest(first_frame=FIRST, last_frame=LAST, prompt="mine", resolution="480P", seed=601)

    @flow
    async def my_pipeline():
        # No fingerprint passed: the cache policy computes it from the frames' content.
        first = await submit_video(request, credentials)
        again = await submit_video(request, credentials, return_state=True)
        video = await poll_video(first, credentials, POLL)
        async with credentials.get_client() as client:
            record = request_record(await client.prepare(request))
        archived = await archive_video(video, first, record, ArchiveDestination(url=str(tmp_path)))
        return first, again, archived

    first, again, archived = await my_pipeline()
    assert again.name == "Cached" and (await again.aresult()).task_id == first.task_id
    assert emulator.counters().submissions_accepted == 1
    assert Path(archived.video.path).stat().st_size == archived.video.bytes


async def test_saved_credentials_and_a_remote_file_system_block(prefect_harness, emulator, s3):
    from prefect.filesystems import RemoteFileSystem

    bucket, storage = s3
    await emulator.credentials().asave("wan-emulator-test", overwrite=True)
    block = RemoteFileSystem(basepath=f"s3://{bucket}/via-block", settings=storage)
    video = await keyframes_to_video(
        FIRST,
        LAST,
        prompt="saved",
        options=options(602),
        credentials="wan-emulator-test",
        destination=block,
        poll=POLL,
    )
    fs = fsspec.filesystem("s3", **storage)
    assert video.video_url.startswith(f"s3://{bucket}/via-block/")
    assert fs.info(video.record.video.path)["size"] == video.record.video.bytes


async def test_an_unwritable_destination_is_refused_before_paying(prefect_harness, emulator, s3):
    from prefect_wan.archive.destination import ArchiveDestinationError

    _, storage = s3
    with pytest.raises(ArchiveDestinationError, match="s3://no-such-bucket-here/videos"):
        await generate(emulator, 603, "s3://no-such-bucket-here/videos", storage_options=storage)
    assert emulator.counters().submissions_accepted == 0
