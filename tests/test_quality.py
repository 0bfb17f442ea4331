"""The quality gate: a failing shot is taken again with another seed, every take archived and paid
once (a crash mid-retake included), the first passing take chosen, retakes charged like any submission."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from prefect.settings import PREFECT_API_URL

from prefect_wan.flows import QualityGate
from prefect_wan.flows.quality import take_seed
from tests.test_flows import FIRST, LAST, POLL, generate

ROOT = Path(__file__).resolve().parent.parent


def sidecar(video) -> dict:
    return json.loads(Path(video.sidecar_url.removeprefix("file://")).read_text())


async def test_a_gate_archives_the_first_passing_take(prefect_harness, emulator, tmp_path):
    emulator.inject(op="render", action="freeze", count=1)  # take 1 freezes; take 2 is clean
    video = await generate(emulator, 2001, str(tmp_path), quality=QualityGate(retakes=2), label="gated")
    assert emulator.counters().submissions_accepted == 2
    assert video.record.checks.passed and video.label == "gated"
    takes = sidecar(video)["takes"]
    assert [t["take"] for t in takes] == [1, 2] and [t["chosen"] for t in takes] == [False, True]
    assert takes[0]["checks"]["passed"] is False and takes[1]["seed"] == take_seed(takes[0]["fingerprint"], 2)
    assert len(list(tmp_path.glob("*.mp4"))) == 2  # every take archived, none overwritten

    again = await generate(emulator, 2001, str(tmp_path), quality=QualityGate(retakes=2), label="gated")
    assert again.reused and again.fingerprint == video.fingerprint and emulator.counters().submissions_accepted == 2


async def test_no_take_passing_keeps_the_best_flagged(prefect_harness, emulator, tmp_path):
    emulator.inject(op="render", action="black", count=1)
    emulator.inject(op="render", action="freeze", count=1)
    video = await generate(emulator, 2011, str(tmp_path), quality=QualityGate(retakes=1))
    assert emulator.counters().submissions_accepted == 2
    takes = sidecar(video)["takes"]
    assert [t["chosen"] for t in takes] == [False, True]  # a freeze fails one check, black three
    assert not video.record.checks.passed and video.record.checks.failed == ["frozen"]


async def test_retakes_are_charged_to_max_cost(prefect_harness, emulator, tmp_path):
    from tests.test_spend import PRICED

    emulator.inject(op="render", action="freeze", count=5)
    from prefect_wan.flows import GenerationOptions, keyframes_to_video

    video = await keyframes_to_video(
        FIRST,
        LAST,
        prompt="p",
        options=GenerationOptions(**PRICED, seed=2021),
        credentials=emulator.credentials(),
        destination=str(tmp_path),
        poll=POLL,
        max_cost="1.2 USD",
        quality=QualityGate(retakes=5),
    )
    # 0.5 USD a take: two fit in 1.2 USD, the third is not sent.
    assert emulator.counters().submissions_accepted == 2 and len(sidecar(video)["takes"]) == 2


async def test_a_crash_mid_retake_then_a_rerun_pays_each_take_once(prefect_harness, emulator, tmp_path):
    emulator.inject(op="render", action="freeze", count=2)  # takes 1 and 2 freeze; take 3 is clean
    emulator.configure(running_seconds=3.0)
    code = textwrap.dedent(f"""
        import asyncio
        from prefect_wan.client.polling import PollSchedule
        from prefect_wan.flows import GenerationOptions, QualityGate, keyframes_to_video
        from prefect_wan.blocks import WanCredentials
        asyncio.run(keyframes_to_video({FIRST!r}, {LAST!r}, prompt="sunrise to noon", options=GenerationOptions(resolution="480P", seed=2031),
            credentials=WanCredentials(base_url={emulator.base_url!r}, api_key={emulator.api_key!r}, region="singapore"),
            destination={str(tmp_path)!r}, poll=PollSchedule(initial_delay=0.05, interval=0.1, max_interval=0.3), quality=QualityGate(retakes=3)))
    """)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    crashing = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while emulator.counters().submissions_accepted < 2:  # take 2 was sent: crash while it generates
        assert crashing.poll() is None and time.monotonic() < deadline, crashing.stdout.read()[-3000:] if crashing.stdout else ""
        await asyncio.sleep(0.1)
    crashing.kill()
    crashing.wait()
    emulator.configure(running_seconds=0.2)
    video = await generate(emulator, 2031, str(tmp_path), quality=QualityGate(retakes=3))
    assert emulator.counters().submissions_accepted == 3  # take 2 adopted from the journal, take 3 sent once
    assert [t["take"] for t in sidecar(video)["takes"]] == [1, 2, 3] and video.record.checks.passed
