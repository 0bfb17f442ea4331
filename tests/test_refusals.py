"""Refusals a user can act on, and nothing paid or archived lost on odd answers: one test per
defect found by the fault suite and by trying the project as a new user."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import fsspec
import pytest
from PIL import Image
from prefect.client.orchestration import get_client

from prefect_wan.archive.destination import ArchiveDestination, ArchiveDestinationError
from prefect_wan.archive.store import archive_stem, find_archived
from prefect_wan.blocks import WanCredentials
from prefect_wan.client import KeyframeVideoRequest
from prefect_wan.client.errors import PreflightError, VideoMissingError
from prefect_wan.client.regions import Region
from prefect_wan.flows import BatchFailedError, KeyframePair, keyframes_batch, keyframes_to_video
from prefect_wan.flows.manifest import ManifestError, load_manifest
from prefect_wan.flows.reporting import FAILED_EVENT
from prefect_wan.ledger.atomic import sweep_partials
from tests.helpers import make_image
from tests.test_flows import FIRST, LAST, POLL, events_named, generate, options, read_artifacts
from tests.test_preflight import one, refused

ROOT = Path(__file__).resolve().parent.parent


# --- preflight -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
async def test_truncated_frames_are_refused_before_sending(frames, fmt):
    whole = make_image(480, 640, (10, 120, 200), fmt=fmt)
    cut = whole[: len(whole) * 2 // 3]
    with Image.open(io.BytesIO(cut)) as header_only:
        assert header_only.size == (480, 640)  # the header alone looks fine
    _, last = frames
    violation = one(await refused(KeyframeVideoRequest(first_frame=cut, last_frame=last)), "first_frame")
    assert "truncated or corrupt" in violation.rule


@pytest.mark.parametrize("url", ["oss://", "oss://dashscope-instant", "oss://dashscope-instant/"])
async def test_an_oss_url_without_a_key_is_refused(frames, url):
    first, _ = frames
    violation = one(await refused(KeyframeVideoRequest(first_frame=first, last_frame=url)), "last_frame")
    assert "names no object" in violation.rule


def test_an_empty_first_frame_names_the_field():
    with pytest.raises(PreflightError) as info:
        KeyframePair.from_fields(first_frame="", last_frame="b.png")
    assert info.value.fields == ["first_frame"] and "first_frame is empty" in str(info.value)


async def test_the_pair_flow_refuses_an_empty_first_frame_before_sending(prefect_harness, emulator, tmp_path):
    with pytest.raises(PreflightError, match="first_frame is empty"):
        await keyframes_to_video("", LAST, credentials=emulator.credentials(), destination=str(tmp_path))
    assert emulator.counters().submissions_accepted == 0


# --- manifests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix,text",
    [
        ("yaml", "pairs:\n  - {first_frame: a.png, last_frame: b.png}\n  - {first_frame: a.png, last_frame: b.png, resolutoin: 1080P}\n"),
        ("csv", "first_frame,last_frame,resolutoin\na.png,b.png,1080P\na.png,b.png,720P\n"),
    ],
)
def test_a_misspelled_manifest_field_is_refused_with_a_suggestion(tmp_path, suffix, text):
    manifest = tmp_path / f"m.{suffix}"
    manifest.write_text(text)
    with pytest.raises(ManifestError) as info:
        load_manifest(str(manifest))
    row = 2 if suffix == "yaml" else 1
    assert f"pair {row}: unknown field 'resolutoin'; did you mean 'resolution'?" in str(info.value)


def test_a_misspelled_option_is_refused():
    from prefect_wan.flows import GenerationOptions

    with pytest.raises(ValueError, match="resolutoin"):
        GenerationOptions(resolutoin="1080P")


# --- the archive -------------------------------------------------------------------------------


async def test_a_destination_under_a_regular_file_is_refused_clearly(tmp_path):
    (tmp_path / "afile").write_text("x")
    destination = ArchiveDestination(url=str(tmp_path / "afile" / "videos"))
    with pytest.raises(ArchiveDestinationError, match="part of that path is a regular file"):
        await find_archived(destination, "f" * 64, "https://dashscope-intl.aliyuncs.com")
    with pytest.raises(ArchiveDestinationError, match="part of that path is a regular file"):
        destination.check_writable()


async def test_missing_storage_credentials_are_refused_clearly(s3_server, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    destination = ArchiveDestination(url="s3://my-media/wan-archive", storage_options={"client_kwargs": {"endpoint_url": s3_server}})
    with pytest.raises(ArchiveDestinationError, match="no storage credentials were found"):
        await find_archived(destination, "f" * 64, "https://dashscope-intl.aliyuncs.com")
    fsspec.filesystem("s3").clear_instance_cache()


async def test_videos_are_never_reused_across_endpoints(prefect_harness, emulator, tmp_path):
    from prefect_wan.emulator import run_emulator

    mine = await generate(emulator, 501, str(tmp_path))
    assert mine.record.endpoint == emulator.credentials().endpoint
    from prefect_wan.client.client import resolve_host

    # Another endpoint: an emulator behind a host of its own (a proxy, say). A loopback address on
    # another port is the same endpoint (the bundled emulator's identity does not depend on its port).
    with run_emulator(pending_seconds=0.05, running_seconds=0.2, submit_rps=1000.0) as other:
        undo = resolve_host("proxy.example.test", other.base_url)
        try:
            credentials = WanCredentials(api_key=other.api_key, region="singapore", base_url="http://proxy.example.test", min_submit_interval=0)
            theirs = await keyframes_to_video(
                FIRST, LAST, prompt="sunrise to noon", options=options(501), credentials=credentials, destination=str(tmp_path), poll=POLL
            )
        finally:
            undo()
        assert not theirs.reused and other.counters().submissions_accepted == 1
    assert theirs.fingerprint == mine.fingerprint and theirs.video_url != mine.video_url
    assert Path(mine.record.video.path).exists() and Path(theirs.record.video.path).exists()
    # A legacy sidecar (no endpoint) of a loopback video is not taken for a real service's video.
    legacy = json.loads(Path(mine.sidecar_url.removeprefix("file://")).read_text())
    legacy.pop("endpoint")
    public = Region.SINGAPORE.base_url
    stem = archive_stem(mine.fingerprint, public)
    (tmp_path / f"{stem}.json").write_text(json.dumps(legacy))
    (tmp_path / f"{stem}.mp4").write_bytes(Path(mine.record.video.path).read_bytes())
    assert await find_archived(ArchiveDestination(url=str(tmp_path)), mine.fingerprint, public) is None
    # Between public hosts of the region (classic and a workspace's), an archive is reused.
    legacy["endpoint"] = public
    (tmp_path / f"{stem}.json").write_text(json.dumps(legacy))
    workspace = "https://ws1.ap-southeast-1.maas.aliyuncs.com#workspace=ws1"
    assert archive_stem(mine.fingerprint, workspace) == stem
    assert await find_archived(ArchiveDestination(url=str(tmp_path)), mine.fingerprint, workspace) is not None


def _killed_while_publishing(destination: str) -> None:
    script = textwrap.dedent(f"""
        import os, signal, uuid
        from prefect_wan.archive.destination import ArchiveDestination
        from prefect_wan.ledger import atomic as store
        fs, root = ArchiveDestination(url={destination!r}).ensure_root()
        def write(partial):
            fs.pipe_file(partial, b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
        store.replace_atomically(fs, root + "/video.mp4", write)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_partials_left_by_a_killed_publish_are_swept(tmp_path):
    _killed_while_publishing(str(tmp_path))
    assert not (tmp_path / "video.mp4").exists()
    left = list((tmp_path / ".partials").glob("video.mp4.partial-*"))
    assert len(left) == 1
    fs, root = ArchiveDestination(url=str(tmp_path)).ensure_root()
    assert sweep_partials(fs, root) == [str(left[0])]
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_live_writers_partial_is_left_alone(tmp_path):
    fs, root = ArchiveDestination(url=str(tmp_path)).ensure_root()
    from prefect_wan.ledger.atomic import _partial_name

    live = _partial_name(f"{root}/video.mp4")  # this process: alive
    fs.makedirs(str(Path(live).parent), exist_ok=True)
    fs.pipe_file(live, b"x")
    assert sweep_partials(fs, root) == [] and Path(live).exists()


# --- odd answers -------------------------------------------------------------------------------


async def test_succeeded_without_a_video_url_keeps_the_task_and_a_rerun_fetches_it(prefect_harness, emulator, tmp_path):
    emulator.inject(op="answer", action="reshape", drop_fields=["video_url"], count=10)
    with pytest.raises(VideoMissingError) as info:
        await generate(emulator, 502, str(tmp_path))
    assert "billed" in str(info.value) and info.value.task_id in emulator.state.tasks
    emulator.clear_faults()
    video = await generate(emulator, 502, str(tmp_path))
    assert video.task_id == info.value.task_id and emulator.counters().submissions_accepted == 1


async def test_odd_usage_never_loses_the_video(prefect_harness, emulator, tmp_path):
    emulator.inject(op="answer", action="reshape", usage={"video_duration": "5s", "video_count": [1], "SR": "720"}, count=10)
    video = await generate(emulator, 503, str(tmp_path))
    assert Path(video.record.video.path).exists() and emulator.counters().submissions_accepted == 1
    assert video.record.usage["raw_video_duration"] == "5s" and video.record.usage["SR"] == 720
    assert video.record.cost.amount is None  # no billed seconds could be read: unknown, not guessed


# --- what a batch shows ----------------------------------------------------------------------------


async def _failing_batch(emulator, tmp_path, seed: int):
    emulator.inject(op="task", action="fail", code="DataInspectionFailed", message="Output data may contain inappropriate content.")
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt="p", seed=seed + i, label=f"edge{i}") for i in range(3)]
    state = await keyframes_batch(
        pairs=pairs, options=options(None), credentials=emulator.credentials(), destination=str(tmp_path), poll=POLL, return_state=True
    )
    with pytest.raises(BatchFailedError):
        await state.aresult()
    failed_task = next(t for t, task in emulator.state.tasks.items() if task.status.value == "FAILED")
    return state, failed_task


async def test_a_failed_pair_keeps_its_task_id_in_the_event_and_the_table(prefect_harness, emulator, tmp_path, asserting_events_worker):
    state, failed_task = await _failing_batch(emulator, tmp_path, 510)
    event = next(e for e in events_named(asserting_events_worker, FAILED_EVENT) if e.payload["label"].startswith("edge"))
    assert event.payload["task_id"] == failed_task
    table = (await read_artifacts())["wan-batch"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert [row["task_id"] for row in rows if row["status"] == "failed"] == [failed_task]
    async with get_client() as client:
        assert (await client.read_flow_run(state.state_details.flow_run_id)).name == "wan-batch-3-pairs"


async def test_the_run_graph_links_each_pair_only_to_itself(prefect_harness, emulator, tmp_path):
    state, _ = await _failing_batch(emulator, tmp_path, 520)
    task_runs: list = []
    async with get_client() as client:
        for _ in range(100):  # task runs reach the server through its event pipeline, a little later
            response = await client._client.post(
                "/task_runs/filter",
                json={
                    "flow_runs": {"id": {"any_": [str(state.state_details.flow_run_id)]}},
                    "limit": 200,
                    "offset": 0,
                    "sort": "EXPECTED_START_TIME_DESC",
                },
            )
            task_runs = response.json()
            if len(task_runs) >= 8:
                break
            await asyncio.sleep(0.2)
    assert len(task_runs) == 3 * 3 - 1  # submit, poll and archive per pair; the failed pair archives nothing
    label_of = {t["id"]: t["name"].split("-", 1)[1] for t in task_runs}
    edges = 0
    for task_run in task_runs:
        upstream = [i["id"] for inputs in task_run["task_inputs"].values() for i in inputs if i.get("input_type") == "task_run"]
        assert all(label_of[u] == label_of[task_run["id"]] for u in upstream), (
            task_run["name"],
            {k: [label_of.get(i.get("id")) for i in v] for k, v in task_run["task_inputs"].items() if v},
        )
        edges += len(upstream)
    assert edges == 2 * 2 + 1  # submit -> poll -> archive for the two good pairs, submit -> poll for the failed one


# --- the command line ----------------------------------------------------------------------------


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "DASHSCOPE_API_KEY": "sk-test",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true",
            "PREFECT_API_URL": "http://127.0.0.1:9/api",
            **(env_extra or {}),
        }
    )
    return subprocess.run([sys.executable, "-m", "prefect_wan.cli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_cli_refuses_missing_storage_credentials_in_one_line_before_prefect_starts(s3_server):
    # PREFECT_API_URL points nowhere: reaching Prefect at all would fail differently.
    done = _cli("generate", FIRST, LAST, "--dest", "s3://my-media/wan-archive", env_extra={"AWS_ENDPOINT_URL_S3": s3_server})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "no storage credentials were found" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_refusals_exit_2_with_the_reason(tmp_path):
    (tmp_path / "afile").write_text("x")
    nested = _cli("generate", FIRST, LAST, "--dest", str(tmp_path / "afile" / "videos"))
    assert nested.returncode == 2 and "regular file" in nested.stderr and "Traceback" not in nested.stderr
    empty = _cli("generate", "", LAST, "--dest", str(tmp_path / "out"))
    assert empty.returncode == 2 and "first_frame is empty" in empty.stderr
    manifest = tmp_path / "m.yaml"
    manifest.write_text("pairs:\n  - {first_frame: a.png, last_frame: b.png, resolutoin: 1080P}\n")
    typo = _cli("batch", str(manifest), "--dest", str(tmp_path / "out"))
    assert typo.returncode == 2 and "did you mean 'resolution'" in typo.stderr
