"""Shot checks on every archived video, calibrated on the emulator: a clean crossfade passes every
check, and each defect the emulator renders on demand is caught by its own check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefect_wan.flows.reporting import FLAGGED_EVENT
from tests.test_flows import events_named, generate, read_artifacts

NAMES = ["first_frame", "last_frame", "black", "frozen", "duration", "size"]


async def test_a_clean_crossfade_passes_every_check(prefect_harness, emulator, tmp_path):
    video = await generate(emulator, 1901, str(tmp_path))
    checks = video.record.checks
    assert checks is not None and checks.passed, checks
    assert [item.name for item in checks.items] == NAMES
    first, last = (next(i for i in checks.items if i.name == n) for n in ("first_frame", "last_frame"))
    assert first.value > 0.9 and last.value > 0.9  # the emulator lands on its keyframes
    sidecar = json.loads(Path(video.sidecar_url.removeprefix("file://")).read_text())
    assert sidecar["checks"]["passed"] is True and {i["name"] for i in sidecar["checks"]["items"]} == set(NAMES)
    assert all({"name", "value", "threshold", "passed"} <= set(i) for i in sidecar["checks"]["items"])


@pytest.mark.parametrize(("defect", "caught"), [("miss_last_frame", "last_frame"), ("freeze", "frozen"), ("black", "black")])
async def test_each_defect_is_caught_by_its_check(prefect_harness, emulator, tmp_path, asserting_events_worker, defect, caught):
    emulator.inject(op="render", action=defect)
    video = await generate(emulator, 1910 + NAMES.index(caught), str(tmp_path), label=f"bad-{defect}")
    checks = video.record.checks
    assert checks is not None and not checks.passed
    assert caught in checks.failed, checks
    if defect != "black":  # a video gone black also ends off its keyframe and stops moving
        assert checks.failed == [caught], checks
    flagged = events_named(asserting_events_worker, FLAGGED_EVENT)
    assert flagged and flagged[-1].payload["label"] == f"bad-{defect}" and caught in flagged[-1].payload["failed"]
    markdown = (await read_artifacts())[f"wan-bad-{defect.replace('_', '-')}-prompts"].data
    assert "## Shot checks" in markdown and f"| {caught} |" in markdown and "failed" in markdown
