"""Shot checks on every archived video, for what Wan's first-and-last-frame models are reported to get
wrong: a clean emulator render (a camera move, not a cross-fade) passes every check, and each defect
the emulator renders on demand is caught by its own check and no other."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from prefect_wan.flows import QualityGate
from prefect_wan.flows.reporting import FLAGGED_EVENT
from prefect_wan.media import ShotThresholds, VideoCheckError, check_video, recheck
from prefect_wan.media.check import check_video_profile
from tests.test_first_ten_minutes import CLI
from tests.test_flows import FIRST, LAST, events_named, generate, read_artifacts

NAMES = ["first_frame", "end_window", "dissolve", "cut", "morph", "flicker", "motion", "colour", "revert", "black", "frozen", "duration", "size"]
# Defects the model is reported to make, and the check that exists for each (at a visible severity).
DEFECTS = [
    ("dissolve", "dissolve"),
    ("wipe", "dissolve"),
    ("iris", "dissolve"),
    ("cut", "cut"),
    ("late_morph", "morph"),
    ("flicker", "flicker"),
    ("colour_drift", "colour"),
    ("revert", "revert"),
    ("miss_last_frame", "end_window"),
    ("freeze", "frozen"),
]


def local(url: str) -> Path:
    return Path(url.removeprefix("file://"))


async def test_a_clean_render_moves_and_passes_every_check(prefect_harness, emulator, tmp_path):
    video = await generate(emulator, 1901, str(tmp_path))
    checks, profile = video.record.checks, video.record.profile
    assert checks is not None and checks.passed, checks.summary() if checks else None
    assert [item.name for item in checks.items] == NAMES
    values = {i.name: i.value for i in checks.items}
    assert values["first_frame"] > 0.9 and values["end_window"] > 0.9  # the emulator lands on its keyframes
    assert values["motion"] > 0.5  # a camera move (and, as every check passed, not a cross-fade)
    sidecar = json.loads(local(video.sidecar_url).read_text())
    assert sidecar["checks"]["passed"] is True and {i["name"] for i in sidecar["checks"]["items"]} == set(NAMES)
    assert profile is not None and profile.frames == video.record.probe.frames and len(profile.luma) == profile.frames
    assert len(local(video.sidecar_url).read_bytes()) < 64_000  # the profile is kept small
    poster = Image.open(io.BytesIO(local(video.record.poster.url).read_bytes()))
    assert poster.height > 180 + 100  # the frames, and the motion chart under them


@pytest.mark.parametrize(("defect", "caught"), DEFECTS)
async def test_each_defect_fails_its_own_check_and_no_other(prefect_harness, emulator, tmp_path, asserting_events_worker, defect, caught):
    # A visible severity; a dissolve at its grossest, since a partial one also reads as a move back.
    emulator.inject(op="render", action=defect, severity=1.0 if defect == "dissolve" else 0.6)
    video = await generate(emulator, 1910 + [d for d, _ in DEFECTS].index(defect), str(tmp_path), label=f"bad-{defect}")
    checks = video.record.checks
    # A pure cross-fade does not move either: the motion check says so too.
    assert checks is not None and checks.failed == ([caught, "motion"] if defect == "dissolve" else [caught]), checks.summary()
    flagged = events_named(asserting_events_worker, FLAGGED_EVENT)
    assert flagged and flagged[-1].payload["label"] == f"bad-{defect}" and caught in flagged[-1].payload["failed"]
    markdown = (await read_artifacts())[f"wan-bad-{defect.replace('_', '-')}-prompts"].data
    assert "## Shot checks" in markdown and f"| {caught} |" in markdown and "failed" in markdown


async def test_a_video_gone_black_fails_black(prefect_harness, emulator, tmp_path):
    emulator.inject(op="render", action="black")
    video = await generate(emulator, 1930, str(tmp_path), label="bad-black")
    assert video.record.checks is not None and "black" in video.record.checks.failed  # it also ends off its keyframe and stops


async def test_a_gate_retakes_a_dissolve_and_keeps_the_clean_retake(prefect_harness, emulator, tmp_path):
    emulator.inject(op="render", action="dissolve", count=1)
    video = await generate(emulator, 1940, str(tmp_path), quality=QualityGate(retakes=2), label="faded")
    assert emulator.counters().submissions_accepted == 2 and video.record.checks is not None and video.record.checks.passed
    takes = json.loads(local(video.sidecar_url).read_text())["takes"]
    assert [t["chosen"] for t in takes] == [False, True] and "dissolve" in [i["name"] for i in takes[0]["checks"]["items"] if not i["passed"]]


async def test_thresholds_applied_again_to_a_stored_profile_match_a_fresh_decode(prefect_harness, emulator, tmp_path):
    emulator.inject(op="render", action="revert", severity=0.6)
    video = await generate(emulator, 1950, str(tmp_path), label="again")
    strict = ShotThresholds(revert=0.9, cut=5.0, motion=0.99, colour=0.5)
    stored = recheck(video.record, strict)
    fresh, profile = check_video_profile(local(video.video_url), first_frame=FIRST, last_frame=LAST, duration=5, thresholds=strict)
    assert profile == video.record.profile  # the same curves, to the last decimal
    assert stored is not None and [i for i in stored.items if i.name != "size"] == fresh.items
    assert stored.failed != video.record.checks.failed  # other lines, other verdicts: revert passes, cut and motion fail


async def test_the_check_command_reapplies_thresholds_to_an_archive_reading_no_video(prefect_harness, emulator, tmp_path):
    archive = tmp_path / "archive"
    await generate(emulator, 1960, str(archive), label="calm")
    emulator.inject(op="render", action="revert", severity=0.6)
    await generate(emulator, 1961, str(archive), label="back")
    for mp4 in archive.glob("*.mp4"):
        mp4.unlink()  # nothing to read but the sidecars
    loose = tmp_path / "loose.yaml"
    loose.write_text("revert: 0.9\n")
    done = subprocess.run(CLI + ["check", str(archive), "--thresholds", str(loose), "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    shots = {row["label"]: row for row in json.loads(done.stdout)["shots"]}
    assert shots["back"]["archived"].startswith("failed: revert") and shots["back"]["now"] == "passed" and shots["back"]["changed"] == "yes"
    assert shots["calm"]["now"] == "passed" and shots["calm"]["changed"] == ""
    done = subprocess.run(CLI + ["check", str(archive)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "2 shots checked again from their profiles (no video read): 1 fail" in done.stdout, done.stdout + done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("revert: lots\nsharpness: 3\n")
    done = subprocess.run(CLI + ["check", str(archive), "--thresholds", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "revert" in done.stderr and "sharpness" in done.stderr and len(done.stderr.strip().splitlines()) == 1


async def test_check_video_and_the_command_check_any_file(prefect_harness, emulator, tmp_path):
    emulator.inject(op="render", action="flicker", severity=0.6)
    video = await generate(emulator, 1970, str(tmp_path / "a"), label="pumping")
    path = local(video.video_url)
    checks = check_video(str(path), first_frame=FIRST, last_frame=LAST, duration=5)
    assert checks.failed == ["flicker"] and [i.name for i in checks.items] == [n for n in NAMES if n != "size"]
    assert check_video(str(path)).failed == ["flicker"]  # no keyframes: the keyframe checks are left out
    assert [i.name for i in check_video(str(path)).items] == ["cut", "flicker", "motion", "black", "frozen"]
    done = subprocess.run(CLI + ["check", str(path), "--first", FIRST, "--last", LAST, "--duration", "5"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "failed: flicker" in done.stdout and "FAILED" in done.stdout, done.stdout + done.stderr
    clean = await generate(emulator, 1971, str(tmp_path / "b"))
    done = subprocess.run(
        CLI + ["check", clean.video_url.removeprefix("file://"), "--first", FIRST, "--last", LAST, "--json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and json.loads(done.stdout)["passed"] is True


def test_a_missing_or_undecodable_video_is_refused_in_one_line(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(VideoCheckError, match="no such file"):
        check_video(str(tmp_path / "missing.mp4"))
    with pytest.raises(VideoCheckError, match="not a decodable video"):
        check_video(str(broken))
    with pytest.raises(VideoCheckError, match="first frame .*no such file"):
        check_video(str(broken), first_frame=str(tmp_path / "nope.png"))
    for target in (tmp_path / "missing.mp4", broken):
        done = subprocess.run(CLI + ["check", str(target)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("Refused: video"), done.stderr


def test_the_cut_curve_is_pyscenedetects_content_score(tmp_path):
    """The profile's ``difference`` curve, taken for the whole shot at once, is what PySceneDetect's
    ContentDetector (luma weight alone) scores frame by frame on the same grid."""
    from fractions import Fraction

    import av
    import numpy as np
    from scenedetect.detectors import ContentDetector

    from prefect_wan.media.profile import grid_luma
    from prefect_wan.media.scan import scan_video
    from prefect_wan.media.shots import ShotObserver

    path, rng = tmp_path / "cut.mp4", np.random.default_rng(7)
    # Two smooth pictures (a blown-up 4 x 8 of random colours): a pan changes them little, a cut much.
    scenes = [np.asarray(Image.fromarray(rng.integers(0, 255, size=(4, 8, 3), dtype=np.uint8)).resize((256, 144), Image.Resampling.BICUBIC)) for _ in range(2)]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 256, 144, "yuv420p"  # limited range, as H.264 usually is
        for index in range(30):
            pixels = np.roll(scenes[index >= 17], 3 * index, axis=1)  # a pan, and a cut at frame 17
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 30)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    shot = ShotObserver()
    scan_video(path, observers=[shot])
    difference = shot.profile().difference
    detector = ContentDetector(weights=ContentDetector.Components(delta_hue=0.0, delta_sat=0.0, delta_lum=1.0, delta_edges=0.0))
    with av.open(str(path)) as container:
        scored = [detector._calculate_frame_score(n, np.repeat(grid_luma(f)[:, :, None], 3, axis=2)) for n, f in enumerate(container.decode(video=0))]
    assert len(difference) == len(scored) - 1 == 29 and int(np.argmax(difference)) + 1 == 17  # the first frame scores 0
    assert difference == pytest.approx([s * 255 / 219 for s in scored[1:]], abs=1e-4)  # limited range, read on the full range's scale
