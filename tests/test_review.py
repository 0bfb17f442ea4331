"""Review before the expensive render: drafts at 480P, a person's answers through Prefect's API (as the
UI's form sends them), rounds for retakes, finals at 1080P for the approved pairs only."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from asyncio.subprocess import DEVNULL, PIPE

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.client.errors import PreflightError
from prefect_wan.flows import GenerationOptions, KeyframePair, keyframes_batch
from prefect_wan.flows.plan import plan_pairs
from prefect_wan.flows.review import (
    ANSWERED_EVENT,
    WAITING_EVENT,
    DraftForReview,
    Review,
    ReviewAnswerError,
    ReviewRequest,
    answer_review,
    waiting_review,
)
from prefect_wan.spend.budget import Budget
from tests.test_first_ten_minutes import CLI
from tests.test_flows import FIRST, LAST, POLL, events_named


async def _paused_run(name: str, submitted: int, emulator, timeout: float = 180):
    """The flow run ``name`` once it is paused with ``submitted`` tasks sent."""
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            runs = await client.read_flow_runs()
            run = next((r for r in runs if r.name == name and r.state is not None and r.state.is_paused()), None)
            if run is not None and run.state is not None and run.state.is_paused() and emulator.counters().submissions_accepted == submitted:
                return run
            assert time.monotonic() < deadline, ([(r.name, r.state.name if r.state else None) for r in runs], emulator.counters().submissions_accepted)
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
    request = await waiting_review(str(run.id))
    assert request is not None
    assert await answer_review(request, request.answer(approve=["r0", "r1"], drop=["r2"], retake=["r3"])) == "answered"
    await asyncio.sleep(1)
    run = await _paused_run("wan-batch-4-pairs", 5, emulator)  # round 2: one new draft
    request = await waiting_review(str(run.id))
    assert request is not None and request.round == 2
    await answer_review(request, request.answer(approve=["r3"]))
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


async def test_a_reviewer_of_this_process_answers_once_the_run_is_paused_and_a_failing_one_is_logged(prefect_harness, emulator, tmp_path):
    """A listener answers at once: it is told only once Prefect would take the answer. One that
    fails is logged, and the run still waits for an answer from elsewhere (here: the API)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from prefect_wan.flows.review import reviewing

    told: list[int] = []

    async def answers_at_once(request: ReviewRequest) -> None:
        told.append(request.round)
        await answer_review(request, request.answer(approve=[d.label for d in request.drafts]))

    async def fails(request: ReviewRequest) -> None:
        raise RuntimeError("the reviewer's own bug")

    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt="listened", label=f"l{i}", seed=2250 + i) for i in range(2)]
    with reviewing(answers_at_once):
        listened = keyframes_batch(
            pairs=pairs,
            options=GenerationOptions(resolution="720P"),
            credentials=emulator.credentials(),
            destination=str(tmp_path / "a"),
            poll=POLL,
            review=Review(),
        )
        result = await asyncio.wait_for(listened, 120)  # an answer Prefect refused would leave it waiting
    assert told == [1] and len(result.videos) == 2 and emulator.counters().submissions_accepted == 4

    with reviewing(fails):
        running = asyncio.ensure_future(
            keyframes_batch(
                pairs=[KeyframePair(first_frame=FIRST, last_frame=LAST, prompt="listened", label="l0", seed=2260)],
                options=GenerationOptions(resolution="720P"),
                credentials=emulator.credentials(),
                destination=str(tmp_path / "b"),
                poll=POLL,
                review=Review(),
            )
        )
        run = await _paused_run("wan-batch-1-pairs", 5, emulator)
        request = await waiting_review(str(run.id))
        assert request is not None
        await answer_review(request, request.answer(drop=["l0"]))
        result = await asyncio.wait_for(running, 120)
    assert result.dropped == ["l0"]
    async with get_client() as client:
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    assert any("the reviewer of this process failed" in entry.message and "the reviewer's own bug" in entry.message for entry in logs), [
        e.message for e in logs
    ]


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


async def _run_state(run_id, wanted: str, emulator, submitted: int, log, timeout: float = 180):
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            run = await client.read_flow_run(run_id)
            if run.state is not None and run.state.name == wanted and emulator.counters().submissions_accepted == submitted:
                return run
            assert time.monotonic() < deadline, (run.state, emulator.counters(), log.read_text()[-4000:])
            await asyncio.sleep(0.3)


async def test_a_deployment_run_suspends_for_review_and_resumes_from_its_archive(prefect_harness, emulator, tmp_path, runner):
    """A deployment run does not hold its process while it waits: it suspends; each answer starts it
    again from the top, its drafts found in the archive and the answered rounds read back."""
    from prefect.deployments import arun_deployment

    process, log = runner
    await emulator.credentials().save("wan-review-test", overwrite=True)
    pairs = [{"first_frame": FIRST, "last_frame": LAST, "prompt": f"suspended {i}", "seed": 2300 + i, "label": f"s{i}"} for i in range(2)]
    run = await arun_deployment(
        "keyframes-batch/cancel-test",
        timeout=0,
        parameters={
            "pairs": pairs,
            "options": {"resolution": "720P"},
            "credentials": "wan-review-test",
            "destination": str(tmp_path / "archive"),
            "poll": POLL,
            "review": {"draft_resolution": "480P"},
        },
    )
    suspended = await _run_state(run.id, "Suspended", emulator, 2, log)
    request = await waiting_review(suspended.name)  # the name the run gave itself once it started
    assert request is not None and request.round == 1 and [d.label for d in request.drafts] == ["s0", "s1"]
    await answer_review(request, request.answer(approve=["s0"], retake=["s1"]))

    await _run_state(run.id, "Suspended", emulator, 3, log)  # round 2: the drafts were reused, one retake sent
    request = await waiting_review(str(run.id))
    assert request is not None and request.round == 2 and [d.label for d in request.drafts] == ["s1"]
    await answer_review(request, request.answer(approve=["s1"]))

    finished = await _run_state(run.id, "Completed", emulator, 5, log)  # 3 drafts and 2 finals, each paid once
    assert finished.state is not None and finished.state.is_completed()
    async with get_client() as client:
        states = [state.name for state in await client.read_flow_run_states(run.id)]
    assert states.count("Suspended") == 2 and states.count("Running") == 3, states  # the process ended at each wait
    sizes = sorted(max(t.size) for t in emulator.state.tasks.values())
    assert sizes.count(832) == 3 and sizes.count(1280) == 2, sizes


def _request(*passed: bool) -> ReviewRequest:
    drafts = [
        DraftForReview(
            label=f"p{i}", field=f"p{i}", passed=ok, checks="passed" if ok else "failed: frozen", draft="480P", final="1080P", prompt_used="x", video_url="v"
        )
        for i, ok in enumerate(passed)
    ]
    return ReviewRequest(run_id="00000000-0000-0000-0000-000000000000", run_name="r", round=1, drafts=drafts)


def test_answers_decide_every_draft_once_and_name_what_does_not_fit():
    request = _request(True, False, True)
    assert request.answer(approve_passing=True, retake=["p1"], prompts={"p1": "slower"}) == {
        "p0": "approve",
        "p2": "approve",
        "p1": "retake",
        "p1_prompt": "slower",
    }
    assert request.answer(drop=["p0"], approve_passing=True, retake=["p1"])["p0"] == "drop"  # a named draft keeps its decision
    with pytest.raises(ReviewAnswerError, match="no decision for p1"):
        request.answer(approve_passing=True)
    with pytest.raises(ReviewAnswerError, match="'p9' is not waiting"):
        request.answer(approve=["p0", "p1", "p2", "p9"])
    with pytest.raises(ReviewAnswerError, match="'p0' is both approve and drop"):
        request.answer(approve=["p0", "p1", "p2"], drop=["p0"])
    with pytest.raises(ReviewAnswerError, match="a new prompt for 'p0', which is not retaken"):
        request.answer(approve=["p0", "p1", "p2"], prompts={"p0": "y"})


async def test_a_plan_with_review_counts_drafts_and_finals_and_covers_them_together(prefect_harness, emulator, tmp_path):
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"plan {i}", label=f"q{i}", seed=2400 + i) for i in range(3)]
    # Beijing prices wan2.2-kf2v-flash: 0.1 CNY/s at 480P, 0.48 CNY/s at 1080P; 5 s each.
    credentials = emulator.credentials().model_copy(update={"region": "beijing"})
    plan = await plan_pairs(
        pairs, GenerationOptions(resolution="1080P"), credentials, ArchiveDestination.coerce(str(tmp_path)), budget=Budget.coerce("6 CNY"), review=Review()
    )
    assert [(p.label, p.resolution, p.action.value) for p in plan.pairs] == [
        ("q0-draft", "480P", "submit"),
        ("q0", "1080P", "submit"),
        ("q1-draft", "480P", "submit"),
        ("q1", "1080P", "submit"),
        ("q2-draft", "480P", "over budget"),  # 2 x (0.5 + 2.4) = 5.8 CNY: the third pair's draft and final do not fit together
        ("q2", "1080P", "over budget"),
    ]
    assert plan.summary.startswith("6 drafts and finals: 4 to submit, 2 over budget; estimated cost 5.8 CNY")
    assert emulator.counters().api_requests == 0


async def test_a_reviewed_storyboard_stitches_finals_only_and_none_when_a_transition_is_dropped(prefect_harness, emulator, tmp_path):
    from prefect_wan.flows import keyframes_storyboard
    from prefect_wan.flows.storyboard import StoryboardFailedError
    from tests.test_storyboard import keyframes

    keys = keyframes(tmp_path, 3)
    common = dict(options=GenerationOptions(resolution="720P", seed=2500), credentials=emulator.credentials(), destination=str(tmp_path / "a"), poll=POLL)
    board = await keyframes_storyboard(keys, label="rv", review=Review(auto_approve="passing"), **common)
    assert [s.label for s in board.record.segments] == ["rv-01", "rv-02"]
    sizes = sorted(max(t.size) for t in emulator.state.tasks.values())
    assert sizes == [720, 720, 1104, 1104], sizes  # portrait keyframes: 2 drafts at 480P, 2 finals at 720P
    assert max(board.record.probe.width, board.record.probe.height) == 1104  # the finals are what was stitched

    running = asyncio.ensure_future(keyframes_storyboard(keys, label="rv2", prompts="another take", review=Review(), **common))
    run = await _paused_run("wan-storyboard-rv2", 6, emulator)
    request = await waiting_review(str(run.id))
    assert request is not None
    await answer_review(request, request.answer(approve=["rv2-01"], drop=["rv2-02"]))
    with pytest.raises(StoryboardFailedError, match="needs every transition, and rv2-02 was dropped in review: no final was rendered"):
        await asyncio.wait_for(running, 120)
    assert emulator.counters().submissions_accepted == 6  # the drafts only


async def test_the_review_command_lists_and_answers_a_waiting_run(prefect_harness, emulator, tmp_path):
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"cli {i}", label=f"c{i}", seed=2600 + i) for i in range(2)]
    running = asyncio.ensure_future(
        keyframes_batch(
            pairs=pairs, options=GenerationOptions(resolution="720P"), credentials=emulator.credentials(), destination=str(tmp_path), poll=POLL, review=Review()
        )
    )
    run = await _paused_run("wan-batch-2-pairs", 2, emulator)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}

    async def cli(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(*CLI, "review", *args, env=env, stdout=PIPE, stderr=PIPE, stdin=DEVNULL)
        out, err = await asyncio.wait_for(process.communicate(), 120)
        return process.returncode or 0, out.decode(), err.decode()

    code, out, err = await cli(run.name)  # a pipe, no answers: the list only
    assert code == 0 and "c0" in out and "c1" in out and "720P" in out, out + err
    code, out, err = await cli(run.name, "--approve", "c0", "--drop", "c9")
    assert code == 2 and "'c9' is not waiting" in err and "no decision for c1" in err, out + err
    code, out, err = await cli(run.name, "--approve", "c0", "--drop", "c1")
    assert code == 0 and "answered round 1 of wan-batch-2-pairs: c0 approve, c1 drop" in out, out + err
    result = await asyncio.wait_for(running, 120)
    assert [v.label for v in result.videos] == ["c0"] and result.dropped == ["c1"]
    code, out, err = await cli(run.name)
    assert code == 2 and "wan-batch-2-pairs is Completed: it waits for no review" in err, err


def test_a_cli_run_with_no_server_asks_in_its_terminal(tmp_path):
    manifest = tmp_path / "m.yaml"
    pairs = [{"first_frame": FIRST, "last_frame": LAST, "prompt": f"t{i}", "label": f"t{i}", "seed": 2700 + i} for i in range(2)]
    manifest.write_text(yaml.safe_dump({"pairs": pairs}))
    env = {**{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}, "PREFECT_HOME": str(tmp_path / "home")}
    # t0: approve; t1: retake with a new prompt, then approve its second draft.
    answers = "approve\nretake\nslower, please\napprove\n"
    done = subprocess.run(
        CLI + ["batch", str(manifest), "--emulator", "--review", "--resolution", "720P", "--dest", str(tmp_path / "a")],
        input=answers,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Review round 1: 2 draft(s) wait for you" in done.stderr and "Review round 2: 1 draft(s)" in done.stderr
    assert "With a Prefect server (PREFECT_API_URL set), the run waits in the Prefect UI instead" in done.stderr
    assert "2 archived" in done.stdout
    listed = subprocess.run(CLI + ["ls", str(tmp_path / "a"), "--json"], env=env, capture_output=True, text=True, timeout=60)
    entries = json.loads(listed.stdout)["entries"]
    assert sorted(e["label"] for e in entries) == ["t0", "t0-draft", "t1", "t1-draft", "t1-draft2"]
    assert next(e for e in entries if e["label"] == "t1-draft2")["prompt"].startswith("slower, please")
