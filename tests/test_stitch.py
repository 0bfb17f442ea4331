"""Joining clips: remux when codec parameters match (packets untouched), re-encode otherwise."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from prefect_wan.emulator.render import render_transition
from prefect_wan.media import StitchError, stitch
from prefect_wan.media.poster import contact_sheet
from prefect_wan.media.scan import scan_video
from tests.helpers import make_image

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three 2 s transitions through four keyframes, with sound, as wan2.7 makes them."""
    folder = tmp_path_factory.mktemp("clips")
    frames = [make_image(640, 480, colour) for colour in COLOURS]
    paths = []
    for index in range(3):
        path = folder / f"clip{index}.mp4"
        render_transition(frames[index], frames[index + 1], 416, 320, path, seconds=2, audio=True)
        paths.append(path)
    return paths


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]


def seconds_of_sound(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


def test_remuxing_keeps_every_packet_and_the_sound_in_step(clips, tmp_path):
    result = stitch(clips, tmp_path / "all.mp4")
    assert result.method == "remux" and result.frames == 180 and result.duration_seconds == pytest.approx(6.0)
    assert video_packets(result.path) == [p for clip in clips for p in video_packets(clip)]  # no re-encode
    assert abs(seconds_of_sound(result.path) - 6.0) < 0.05


def test_dropping_the_shared_boundary_frames(clips, tmp_path):
    result = stitch(clips, tmp_path / "dropped.mp4", drop_boundary=True)
    assert result.method == "remux" and result.dropped_frames == 2 and result.frames == 178
    packets = [video_packets(clip) for clip in clips]
    assert video_packets(result.path) == packets[0][:-1] + packets[1][:-1] + packets[2]
    assert abs(seconds_of_sound(result.path) - 178 / 30) < 0.05


def test_clips_that_differ_are_re_encoded_and_say_why(clips, tmp_path):
    other = tmp_path / "wide.mp4"
    render_transition(make_image(640, 480, COLOURS[0]), make_image(640, 480, COLOURS[1]), 480, 272, other, seconds=1, audio=True)
    result = stitch([clips[0], other], tmp_path / "mixed.mp4")
    assert result.method == "reencode" and "wide.mp4 differs" in result.reason
    with av.open(str(result.path)) as container:
        video = container.streams.video[0]
        assert (video.width, video.height) == (416, 320) and sum(1 for _ in container.decode(video)) == 90
    assert abs(seconds_of_sound(result.path) - 3.0) < 0.1


def test_silent_clips_make_a_silent_video(tmp_path):
    paths = []
    for index in range(2):
        path = tmp_path / f"silent{index}.mp4"
        render_transition(make_image(320, 240, COLOURS[index]), make_image(320, 240, COLOURS[index + 1]), 320, 240, path, seconds=1)
        paths.append(path)
    result = stitch(paths, tmp_path / "silent.mp4")
    assert not result.audio and result.frames == 60
    with av.open(str(result.path)) as container:
        assert not container.streams.audio


def test_one_clip_is_not_a_stitch(clips, tmp_path):
    with pytest.raises(StitchError, match="at least 2 clips"):
        stitch(clips[:1], tmp_path / "one.mp4")


def test_a_poster_shows_the_first_middle_and_last_frames(clips, tmp_path):
    from PIL import Image

    (tmp_path / "poster.png").write_bytes(contact_sheet(scan_video(clips[0]).thumbs))
    sheet = Image.open(tmp_path / "poster.png").convert("RGB")
    thumb = sheet.width // 3
    left = sheet.crop((0, 0, thumb - 4, sheet.height)).resize((1, 1)).getpixel((0, 0))
    right = sheet.crop((sheet.width - thumb + 4, 0, sheet.width, sheet.height)).resize((1, 1)).getpixel((0, 0))
    assert left[0] > 150 and left[1] < 90  # keyframe 1 is red
    assert right[1] > 150 and right[0] < 90  # keyframe 2 is green
    assert Image.open(tmp_path / "poster.png").format == "PNG"
