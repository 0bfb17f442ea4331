"""Storyboards: N keyframes, N-1 transitions paid once each, one stitched video."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
from PIL import Image

from prefect_wan.client import PreflightError
from prefect_wan.flows import GenerationOptions, keyframes_storyboard
from prefect_wan.flows.storyboard import STORYBOARD_EVENT
from tests.helpers import make_image
from tests.test_flows import POLL, events_named, read_artifacts

COLOURS = [(220, 40, 40), (40, 220, 40), (40, 40, 220), (220, 220, 40), (40, 220, 220)]


def keyframes(folder: Path, count: int, size=(480, 640), start: int = 0) -> list[str]:
    paths = []
    for index in range(count):
        path = folder / f"k{start + index}.png"
        path.write_bytes(make_image(*size, COLOURS[(start + index) % len(COLOURS)]))
        paths.append(str(path))
    return paths


def frames_and_sound(path: str) -> tuple[int, float, float]:
    with av.open(path) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
    with av.open(path) as container:
        sound = 0.0
        if container.streams.audio:
            stream = container.streams.audio[0]
            sound = sum(f.samples for f in container.decode(stream)) / stream.rate
        return frames, container.duration / 1e6, sound


async def test_five_keyframes_four_transitions_one_video(prefect_harness, emulator, tmp_path, asserting_events_worker):
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    keys = keyframes(frames_dir, 5)
    kwargs = dict(
        prompts="a slow dissolve",
        options=GenerationOptions(resolution="480P", seed=801),
        label="five",
        credentials=emulator.credentials(),
        destination=str(tmp_path / "archive"),
        poll=POLL,
    )
    board = await keyframes_storyboard(keys, **kwargs)
    assert emulator.counters().submissions_accepted == 4
    record = board.record
    assert [s.label for s in record.segments] == ["five-01", "five-02", "five-03", "five-04"]
    assert record.stitch.method == "remux" and record.stitch.dropped_frames == 3
    frames, seconds, _ = frames_and_sound(record.video.path)
    assert frames == 4 * 150 - 3 and abs(seconds - frames / 30) < 0.1
    segment = json.loads(Path(record.segments[0].sidecar_url.removeprefix("file://")).read_text())
    assert (record.probe.width, record.probe.height) == (segment["probe"]["width"], segment["probe"]["height"])
    sidecar = json.loads(Path(board.sidecar_url.removeprefix("file://")).read_text())
    assert [s["fingerprint"] for s in sidecar["segments"]] == [s.fingerprint for s in record.segments]
    # wan2.2-kf2v-flash has no published Singapore price: the total is unknown, never a guess.
    assert record.total_cost.amount is None and "unknown" in record.total_cost.note
    assert events_named(asserting_events_worker, STORYBOARD_EVENT)[-1].payload["video_url"] == board.video_url
    poster = Image.open(record.poster.path)
    assert poster.format == "PNG" and poster.height == 180
    thumbs = [
        poster.convert("RGB").crop((i * (poster.width + 4) // 5, 0, i * (poster.width + 4) // 5 + 40, 180)).resize((1, 1)).getpixel((0, 0)) for i in range(5)
    ]
    assert thumbs[0][0] > 150 and thumbs[1][1] > 150 and thumbs[2][2] > 150  # each segment starts on its keyframe
    markdown = (await read_artifacts())["wan-storyboard-five"].data
    assert "joined by remux" in markdown and "five-04" in markdown and record.poster.url in markdown  # linked: not http(s)

    again = await keyframes_storyboard(keys, **kwargs)
    assert again.reused and emulator.counters().submissions_accepted == 4

    keys[2] = keyframes(frames_dir, 1, start=9)[0]  # a new third keyframe touches two transitions
    changed = await keyframes_storyboard(keys, **kwargs)
    assert emulator.counters().submissions_accepted == 6 and not changed.reused
    assert [s.fingerprint for s in changed.record.segments][::3] == [s.fingerprint for s in record.segments][::3]


async def test_keyframes_of_other_shapes_are_refused_before_paying(prefect_harness, emulator, tmp_path):
    keys = keyframes(tmp_path, 2) + keyframes(tmp_path, 1, size=(640, 360), start=2) + keyframes(tmp_path, 1, start=3)
    with pytest.raises(PreflightError) as info:
        await keyframes_storyboard(
            keys, options=GenerationOptions(resolution="480P"), credentials=emulator.credentials(), destination=str(tmp_path / "archive"), poll=POLL
        )
    assert info.value.fields == ["keyframes[2]"] and "k2.png" in str(info.value) and "fit='pad'" in str(info.value)
    assert emulator.counters().submissions_accepted == 0


async def test_a_fit_stitches_transitions_of_other_sizes(prefect_harness, emulator, tmp_path):
    keys = keyframes(tmp_path, 2) + keyframes(tmp_path, 1, size=(640, 360), start=2) + keyframes(tmp_path, 1, start=3)
    board = await keyframes_storyboard(
        keys,
        options=GenerationOptions(resolution="480P", seed=802),
        fit="pad",
        credentials=emulator.credentials(),
        destination=str(tmp_path / "archive"),
        poll=POLL,
    )
    assert board.record.stitch.method == "reencode" and board.record.stitch.fit == "pad"
    first = board.record.segments[0]
    assert (board.record.probe.width, board.record.probe.height) != (0, 0) and first.seconds == 5


async def test_a_wan27_storyboard_keeps_its_sound(prefect_harness, emulator, tmp_path):
    keys = keyframes(tmp_path, 3)
    board = await keyframes_storyboard(
        keys,
        prompts=["rise", "fall"],
        options=GenerationOptions(model="wan2.7-i2v", resolution="720P", duration=2, seed=803),
        credentials=emulator.credentials(),
        destination=str(tmp_path / "archive"),
        poll=POLL,
    )
    frames, seconds, sound = frames_and_sound(board.record.video.path)
    assert frames == 2 * 60 - 1 and abs(sound - frames / 30) < 0.06
    total = board.record.total_cost  # 2 segments x 2 s x the derived 0.10 USD/s, flagged unconfirmed
    assert total.amount == pytest.approx(0.4) and total.currency == "USD" and not total.confirmed


async def test_storyboard_runs_are_named_after_their_label(prefect_harness, emulator, tmp_path):
    from prefect.client.orchestration import get_client

    keys = keyframes(tmp_path, 2)
    state = await keyframes_storyboard(
        keys,
        label="named",
        options=GenerationOptions(resolution="480P", seed=804),
        credentials=emulator.credentials(),
        destination=str(tmp_path / "archive"),
        poll=POLL,
        return_state=True,
    )
    async with get_client() as client:
        assert (await client.read_flow_run(state.state_details.flow_run_id)).name == "wan-storyboard-named"


async def test_storyboard_inputs_are_checked(prefect_harness, emulator, tmp_path):
    with pytest.raises(PreflightError, match="at least 2 keyframes"):
        await keyframes_storyboard(["one.png"], credentials=emulator.credentials(), destination=str(tmp_path))
    with pytest.raises(PreflightError, match="one per transition"):
        await keyframes_storyboard(["a.png", "b.png", "c.png"], prompts=["x"], credentials=emulator.credentials(), destination=str(tmp_path))
