"""Review before the expensive render: drafts at 480P, a person's answers through Prefect's API (as the
UI's form sends them), rounds for retakes, finals at 1080P for the approved pairs only."""

from __future__ import annotations

import asyncio
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run

from prefect_wan.client.errors import PreflightError
from prefect_wan.flows import GenerationOptions, KeyframePair, keyframes_batch
from prefect_wan.flows.review import ANSWERED_EVENT, WAITING_EVENT, Review
from tests.test_flows import FIRST, LAST, POLL, events_named


async def _paused_run(name: str, submitted: int, emulator, timeout: float = 180):
    """The flow run ``name`` once it is paused with ``submitted`` tasks sent."""
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            runs = await client.read_flow_runs()
            run = next((r for r in runs if r.name == name), None)
            if run is not None and run.state is not None and run.state.is_paused() and emulator.counters().submissions_accepted == submitted:
                return run
            assert time.monotonic() < deadline, [(r.name, r.state.name if r.state else None) for r in runs]
            await asyncio.sleep(0.3)


async def test_a_reviewed_batch_renders_only_the_approved_pairs(prefect_harness, emulator, tmp_path, asserting_events_worker):
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"shot {i}", label=f"r{i}", seed=2100 + i) for i in range(4)]
    running = asyncio.ensure_future(
        keyframes_batch(
            pairs=pairs,
            options=GenerationOptions(resolution="1080P"),
            credentials=emulator.credentials(),
            destination=str(tmp_path),
            poll=POLL,
            review=Review(draft_resolution="480P"),
        )
    )
    run = await _paused_run("wan-batch-4-pairs", 4, emulator)
    await resume_flow_run(run.id, run_input={"r0": "approve", "r1": "approve", "r2": "drop", "r3": "retake"})
    await asyncio.sleep(1)
    run = await _paused_run("wan-batch-4-pairs", 5, emulator)  # round 2: one new draft
    await resume_flow_run(run.id, run_input={"r3": "approve"})
    result = await asyncio.wait_for(running, 240)

    sizes = sorted(max(t.size) for t in emulator.state.tasks.values())
    assert sizes.count(832) == 5 and sizes.count(1920) == 3, sizes  # 5 drafts at 480P, 3 finals at 1080P
    assert sorted(v.label for v in result.videos) == ["r0", "r1", "r3"] and result.dropped == ["r2"] and len(result.drafts) == 5
    assert all(v.record.request.resolution == "1080P" and v.record.request.prompt_extend is False for v in result.videos)
    drafts = {d.label: d for d in result.drafts}
    finals = {v.label: v for v in result.videos}
    assert finals["r0"].record.request.seed == drafts["r0-draft"].record.request.seed  # the final keeps the approved draft's seed
    assert finals["r0"].record.request.prompt == (drafts["r0-draft"].record.actual_prompt or "shot 0")
    assert finals["r3"].record.request.seed == drafts["r3-draft2"].record.request.seed != drafts["r3-draft"].record.request.seed
    waiting = events_named(asserting_events_worker, WAITING_EVENT)
    assert [e.payload["drafts"] for e in waiting][-2:] == [["r0", "r1", "r2", "r3"], ["r3"]]
    assert events_named(asserting_events_worker, ANSWERED_EVENT)[-1].payload["decisions"] == {"r3": "approve"}


async def test_auto_approve_asks_nothing_when_every_draft_passes(prefect_harness, emulator, tmp_path):
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt="auto", label=f"a{i}", seed=2200 + i) for i in range(2)]
    result = await keyframes_batch(
        pairs=pairs,
        options=GenerationOptions(resolution="720P"),
        credentials=emulator.credentials(),
        destination=str(tmp_path),
        poll=POLL,
        review=Review(draft_resolution="480P", auto_approve="passing"),
    )
    assert len(result.videos) == 2 and len(result.drafts) == 2 and emulator.counters().submissions_accepted == 4


async def test_a_model_with_no_cheaper_tier_is_refused_before_sending(prefect_harness, emulator, tmp_path):
    with pytest.raises(PreflightError, match="no tier below 720P.*wan2.2-kf2v-flash"):
        await keyframes_batch(
            pairs=[KeyframePair(first_frame=FIRST, last_frame=LAST, label="x")],
            options=GenerationOptions(model="wan2.1-kf2v-plus"),
            credentials=emulator.credentials(),
            destination=str(tmp_path),
            poll=POLL,
            review=Review(),
        )
    assert emulator.counters().api_requests == 0
