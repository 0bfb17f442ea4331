"""Review you can trust with money: a final is paid for only when a person (or ``auto_approve``)
approved that draft, in that round; every refused final is reported; an outage costs a bounded
number of creates. Each test counts the emulator's creates."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from asyncio.subprocess import DEVNULL, PIPE

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL

from prefect_wan.flows import BatchFailedError, GenerationOptions, KeyframePair, keyframes_batch
from prefect_wan.flows.review import Review, ReviewAnswerError, ReviewClosedError, ReviewRequest, answer_review, find_review, waiting_review
from tests.test_first_ten_minutes import CLI
from tests.test_flows import FIRST, LAST, POLL
from tests.test_review import _paused_run


def creates(emulator) -> int:
    counters = emulator.counters()
    return counters.submissions_accepted + counters.submissions_rejected


def _batch(emulator, tmp_path, pairs, **kwargs):
    return asyncio.ensure_future(
        keyframes_batch(
            pairs=pairs,
            options=GenerationOptions(resolution="720P"),
            credentials=kwargs.pop("credentials", emulator.credentials()),
            destination=str(tmp_path),
            poll=POLL,
            review=kwargs.pop("review", Review()),
            **kwargs,
        )
    )


async def _request(run_id, round_: int) -> ReviewRequest:
    deadline = time.monotonic() + 60
    while True:
        request = await waiting_review(str(run_id))
        if request is not None and request.round == round_:
            return request
        assert time.monotonic() < deadline, request
        await asyncio.sleep(0.2)


async def test_a_stale_answer_to_an_earlier_round_is_refused_and_sends_nothing(prefect_harness, emulator, tmp_path):
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"stale {i}", label=f"s{i}", seed=3100 + i) for i in range(2)]
    running = _batch(emulator, tmp_path, pairs)
    run = await _paused_run("wan-batch-2-pairs", 2, emulator)
    first = await _request(run.id, 1)
    round_one = first.answer(approve=["s0"], retake=["s1"])
    assert await answer_review(first, round_one) == "answered"
    await _paused_run("wan-batch-2-pairs", 3, emulator)  # round 2: s1's retake
    second = await _request(run.id, 2)
    sent = creates(emulator)

    # The leftover round-1 answer, late: through the helper, and straight to Prefect's API (as a script or the UI would).
    with pytest.raises(ReviewClosedError, match=r"round 1 of wan-batch-2-pairs is not open: round 2 is"):
        await answer_review(first, round_one)
    with pytest.raises(RuntimeError, match="Additional properties are not allowed|is a required property"):
        await resume_flow_run(run.id, run_input=round_one)
    # An answer with round-2 keys for a draft of round 1 fits no field either.
    with pytest.raises(RuntimeError):
        await resume_flow_run(run.id, run_input={second.drafts[0].field: "approve", first.drafts[0].field: "approve"})
    await asyncio.sleep(1.5)
    assert creates(emulator) == sent and (await waiting_review(str(run.id))) is not None  # nothing sent; still waiting on round 2

    await answer_review(second, second.answer(drop=["s1"]))
    result = await asyncio.wait_for(running, 120)
    assert [v.label for v in result.videos] == ["s0"] and result.dropped == ["s1"]
    assert creates(emulator) == sent + 1  # s0's final only


async def test_an_answer_that_leaves_a_draft_undecided_or_no_answer_renders_nothing(prefect_harness, emulator, tmp_path):
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"partial {i}", label=f"g{i}", seed=3200 + i) for i in range(2)]
    running = _batch(emulator, tmp_path, pairs)
    run = await _paused_run("wan-batch-2-pairs", 2, emulator)
    request = await _request(run.id, 1)
    fields = {d.label: d.field for d in request.drafts}
    with pytest.raises(RuntimeError, match=f"'{fields['g1']}' is a required property"):
        await resume_flow_run(run.id, run_input={fields["g0"]: "drop"})  # g1 undecided
    with pytest.raises(RuntimeError, match="is a required property"):
        await resume_flow_run(run.id)  # no input at all
    with pytest.raises(ReviewAnswerError, match="no decision for g1"):
        request.answer(drop=["g0"])
    await asyncio.sleep(1.5)
    assert creates(emulator) == 2 and (await waiting_review(str(run.id))) is not None

    # The form pre-selects nothing: no decision field has a default.
    async with get_client() as client:
        schema = await client.read_flow_run_input(run.id, "paused-prefect-wan-review-1-schema")
    import json

    schema = json.loads(schema)
    assert set(schema["required"]) == set(fields.values()) and not any("default" in schema["properties"][f] for f in fields.values())

    await answer_review(request, request.answer(drop=["g0", "g1"]))
    result = await asyncio.wait_for(running, 120)
    assert result.videos == [] and creates(emulator) == 2


async def test_look_alike_and_emoji_labels_are_decided_each_alone(prefect_harness, emulator, tmp_path):
    labels = ["shot-1", "shot 1", "🎬", "🎥"]
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"alike {i}", label=label, seed=3300 + i) for i, label in enumerate(labels)]
    running = _batch(emulator, tmp_path, pairs)
    run = await _paused_run("wan-batch-4-pairs", 4, emulator)
    request = await _request(run.id, 1)
    assert len({d.field for d in request.drafts}) == 4
    await answer_review(request, request.answer(approve=["shot-1", "🎥"], drop=["shot 1", "🎬"]))
    result = await asyncio.wait_for(running, 120)
    assert sorted(v.label for v in result.videos) == ["shot-1", "🎥"] and sorted(result.dropped) == ["shot 1", "🎬"]
    assert creates(emulator) == 4 + 2


@pytest.mark.parametrize("first", ["approve", "retake"])
async def test_of_two_answers_at_once_exactly_one_is_taken(prefect_harness, emulator, tmp_path, first):
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"race {first}", label="race", seed=3400)]
    running = _batch(emulator, tmp_path, pairs)
    run = await _paused_run("wan-batch-1-pairs", 1, emulator)
    request = await _request(run.id, 1)
    approve, retake = answer_review(request, request.answer(approve=["race"])), answer_review(request, request.answer(retake=["race"]))
    outcomes = await asyncio.gather(*((approve, retake) if first == "approve" else (retake, approve)), return_exceptions=True)
    if first == "retake":
        outcomes.reverse()  # outcomes[0] is the approval's
    taken = [o for o in outcomes if o == "answered"]
    refused = [o for o in outcomes if isinstance(o, ReviewClosedError)]
    assert len(taken) == 1 and len(refused) == 1, outcomes
    assert "round 1 of wan-batch-1-pairs" in str(refused[0])
    if outcomes[0] == "answered":  # the approval was taken: one final
        result = await asyncio.wait_for(running, 120)
        assert [v.label for v in result.videos] == ["race"] and creates(emulator) == 2
    else:  # the retake was taken: its draft waits in round 2, and nobody approved a final
        await _paused_run("wan-batch-1-pairs", 2, emulator)
        second = await _request(run.id, 2)
        await answer_review(second, second.answer(drop=["race"]))
        result = await asyncio.wait_for(running, 120)
        assert result.videos == [] and creates(emulator) == 2


async def test_a_finished_reviewed_batch_run_again_asks_nothing_and_pays_nothing(prefect_harness, emulator, tmp_path):
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"again {i}", label=f"a{i}", seed=3500 + i) for i in range(3)]
    running = _batch(emulator, tmp_path, pairs)
    run = await _paused_run("wan-batch-3-pairs", 3, emulator)
    request = await _request(run.id, 1)
    await answer_review(request, request.answer(approve=["a0"], retake=["a1"], drop=["a2"]))
    await _paused_run("wan-batch-3-pairs", 4, emulator)
    second = await _request(run.id, 2)
    await answer_review(second, second.answer(approve=["a1"]))
    first = await asyncio.wait_for(running, 120)
    assert sorted(v.label for v in first.videos) == ["a0", "a1"] and creates(emulator) == 6

    again = await asyncio.wait_for(_batch(emulator, tmp_path, pairs), 60)  # would wait for an answer if it asked
    assert sorted(v.label for v in again.videos) == ["a0", "a1"] and all(v.reused for v in again.videos) and again.dropped == ["a2"]
    assert creates(emulator) == 6


async def test_an_answer_to_a_run_whose_process_died_is_kept_for_the_rerun(prefect_harness, emulator, tmp_path):
    manifest = tmp_path / "dead.yaml"
    pairs = [{"first_frame": FIRST, "last_frame": LAST, "prompt": f"dead {i}", "label": f"d{i}", "seed": 3600 + i} for i in range(2)]
    manifest.write_text(yaml.safe_dump({"pairs": pairs}))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    region = emulator.credentials().region
    args = ["batch", str(manifest), "--review", "--resolution", "720P", "--dest", str(tmp_path / "a"), "--base-url", emulator.base_url, "--region", region]
    env["DASHSCOPE_API_KEY"] = emulator.api_key
    process = subprocess.Popen(CLI + args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        run = await _paused_run("wan-batch-dead", 2, emulator)
        request = await _request(run.id, 1)
        assert request.waiter is not None and request.waiter.pid != os.getpid()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert await answer_review(request, request.answer(approve=["d0"], drop=["d1"])) == "kept"
    async with get_client() as client:
        dead = await client.read_flow_run(run.id)
    assert dead.state is not None and dead.state.name == "Crashed" and "the answer is kept" in (dead.state.message or "")
    with pytest.raises(ReviewClosedError, match="wan-batch-dead is Crashed: it waits for no review"):
        await find_review(str(run.id))
    assert creates(emulator) == 2

    again = await asyncio.to_thread(subprocess.run, CLI + args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]  # it asked nothing (it would wait in the UI)
    assert "d0: " in again.stdout and "d1: dropped in review" in again.stdout
    assert creates(emulator) == 3  # the drafts reused, d0's final the only new create


def test_a_final_the_budget_refuses_is_reported_and_the_command_exits_3(tmp_path):
    """Beijing prices the flash model at 0.5 CNY a 480P draft and 2.4 CNY a 1080P final. 3.2 CNY covers
    a draft and its final (2.9); a retake's second draft (1.0 spent) leaves no room for the final (3.4)."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"pairs": [{"first_frame": FIRST, "last_frame": LAST, "prompt": "b", "label": "b0", "seed": 3700}]}))
    env = {**{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}, "PREFECT_HOME": str(tmp_path / "home")}
    args = ["batch", str(manifest), "--emulator", "--region", "beijing", "--review", "--resolution", "1080P", "--max-cost", "3.2 CNY"]
    done = subprocess.run(CLI + args + ["--dest", str(tmp_path / "a")], input="retake\n\napprove\n", env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-3000:]
    assert "b0: skipped for budget (approved, but its 1080P final does not fit: its 2.4 CNY would take" in done.stdout, done.stdout
    assert "with its 2 draft(s) (1 CNY) the pair would cost 3.4 CNY" in done.stdout
    assert "1 skipped for budget" in done.stdout


async def test_the_review_command_says_one_line_for_a_run_that_waits_for_nothing(prefect_harness):
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    for run, said in (("2b1d7b1c-0000-4000-8000-000000000000", "no flow run has this id"), ("no-such-run", "no flow run has this name")):
        process = await asyncio.create_subprocess_exec(*CLI, "review", run, env=env, stdout=PIPE, stderr=PIPE, stdin=DEVNULL)
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 2 and said in err.decode() and len(err.decode().strip().splitlines()) == 1, (out + err).decode()


async def test_an_outage_costs_a_bounded_number_of_creates_for_500_pairs(prefect_harness, emulator, tmp_path, monkeypatch):
    """Every create answered 503 (the task list proving nothing was created): the run recognises the
    outage after 3 creates, says it once, and leaves every pair unsubmitted once its patience is out."""
    monkeypatch.setenv("PREFECT_WAN_OUTAGE_PATIENCE_SECONDS", "3")
    emulator.inject(op="submit", status=503, code="ServiceUnavailable", message="service unavailable", count=None)
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"outage {i}", label=f"o{i}", seed=4000 + i) for i in range(500)]
    with pytest.raises(BatchFailedError) as failed:
        await keyframes_batch(
            pairs=pairs, options=GenerationOptions(resolution="480P"), credentials=emulator.credentials(), destination=str(tmp_path), poll=POLL
        )
    result = failed.value.result
    assert result is not None and result.failures == [] and len(result.unsubmitted) == 500
    assert result.outage is not None and "ServiceUnavailable" in result.outage and "request ids" in result.outage
    assert str(failed.value).count("refused every create") == 1  # said once
    assert emulator.counters().submissions_accepted == 0
    assert creates(emulator) == 3, creates(emulator)  # OUTAGE_AFTER: no pair adds a create once the outage is seen


async def test_after_an_outage_one_probe_resumes_the_run(prefect_harness, emulator, tmp_path, monkeypatch):
    from prefect_wan.client import outage

    monkeypatch.setattr(outage, "COOL_DOWN_SECONDS", 0.5)
    emulator.inject(op="submit", status=503, code="ServiceUnavailable", message="service unavailable", count=4)
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"probe {i}", label=f"p{i}", seed=4600 + i) for i in range(8)]
    result = await keyframes_batch(
        pairs=pairs, options=GenerationOptions(resolution="480P"), credentials=emulator.credentials(), destination=str(tmp_path), poll=POLL
    )
    assert len(result.videos) == 8 and result.unsubmitted == []
    counters = emulator.counters()
    assert counters.submissions_accepted == 8 and counters.submissions_rejected == 4  # 3 to see it, 1 refused probe, then all paid once


def readme_example(name: str) -> str:
    """The Python block the README marks ``<!-- readme-example: NAME -->``, exactly as written there."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    after = readme.split(f"<!-- readme-example: {name} -->", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readmes_script_answers_a_waiting_run(prefect_harness, emulator, tmp_path):
    namespace: dict = {}
    exec(compile(readme_example("review-answer"), "README.md", "exec"), namespace)
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"script {i}", label=f"k{i}", seed=3800 + i) for i in range(2)]
    running = _batch(emulator, tmp_path, pairs)
    run = await _paused_run("wan-batch-2-pairs", 2, emulator)
    assert await namespace["approve_passing_and_drop_the_rest"](run.name) == "answered"
    result = await asyncio.wait_for(running, 120)
    assert sorted(v.label for v in result.videos) == ["k0", "k1"] and creates(emulator) == 4  # both drafts pass: two finals
    with pytest.raises(ReviewClosedError, match="wan-batch-2-pairs is Completed"):
        await namespace["approve_passing_and_drop_the_rest"](run.name)


async def test_a_waiting_process_is_gone_when_its_pid_ended_here_or_its_heartbeat_stopped_elsewhere(prefect_harness):
    from datetime import datetime, timedelta, timezone

    from prefect import flow
    from prefect.input.actions import acreate_flow_run_input

    from prefect_wan.flows.review_form import Waiter
    from prefect_wan.flows.review_waiter import gone, this_process

    @flow
    def placeholder() -> None: ...

    async with get_client() as client:
        run = await client.create_flow_run(placeholder)
    beat = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
    await acreate_flow_run_input("paused-prefect-wan-review-1-alive", {"at": beat.isoformat()}, flow_run_id=run.id)
    elsewhere = Waiter(host="0ther-h0", pid=4242)
    key = "paused-prefect-wan-review-1-alive"
    assert await gone(elsewhere, run.id, key, now=beat + timedelta(seconds=30)) is None
    said = await gone(elsewhere, run.id, key, now=beat + timedelta(seconds=120))
    assert said is not None and "not been heard from for 120 s" in said
    assert await gone(this_process(), run.id, key) is None  # this process lives
    here = this_process().model_copy(update={"pid": 2**22 + 7, "started": None})  # no such pid
    assert "has ended" in (await gone(here, run.id, key) or "")
    assert await gone(None, run.id, key) is None  # a suspended run has no process to lose
