"""Pay once in every path: lost answers, ambiguous 5xx, crashes between create and record, retried
flows, stale and racing locks. Every test asserts on the emulator's counters."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from prefect_wan.client.errors import SubmissionOutcomeUnknownError
from prefect_wan.client.reconcile import reconcile_lost_create
from prefect_wan.client.request import KeyframeVideoRequest
from prefect_wan.flows import keyframes_to_video
from prefect_wan.ledger.journal import JournalError, SubmissionJournal, remember_task_ids
from tests.test_flows import FIRST, LAST, POLL, generate, options

MODEL = "wan2.2-kf2v-flash"


def request(seed: int, prompt: str = "sunrise to noon") -> KeyframeVideoRequest:
    return KeyframeVideoRequest(first_frame=FIRST, last_frame=LAST, prompt=prompt, resolution="480P", seed=seed)


# --- the flow: lost answers are reconciled, never resent blindly ------------------------------


async def test_a_lost_answer_is_adopted_not_resent(prefect_harness, emulator, tmp_path):
    emulator.inject(op="submit", action="drop")
    video = await generate(emulator, 401, str(tmp_path))
    counters = emulator.counters()
    assert counters.submissions_accepted == 1 and Path(video.record.video.path).exists()
    (created,) = emulator.state.tasks
    assert video.task_id == created


@pytest.mark.parametrize("status", [502, 504, 500])
async def test_a_5xx_after_the_task_was_created_is_not_paid_twice(prefect_harness, emulator, tmp_path, status):
    emulator.inject(op="submit", action="error_after_create", status=status, code="BadGateway", message="upstream timed out")
    video = await generate(emulator, 402 + status, str(tmp_path))
    assert emulator.counters().submissions_accepted == 1
    assert video.task_id == next(iter(emulator.state.tasks))


async def test_a_5xx_that_created_nothing_is_sent_again(prefect_harness, emulator, tmp_path):
    emulator.inject(op="submit", status=503, code="ServiceUnavailable", message="busy")
    await generate(emulator, 403, str(tmp_path))
    counters = emulator.counters()
    assert counters.submissions_accepted == 1 and counters.submissions_rejected == 1


async def test_a_failed_list_keeps_the_outcome_unknown_and_a_flow_retry_adopts(prefect_harness, emulator, tmp_path):
    # The answer is lost and the list made to find the task fails too: the error must stay
    # "outcome unknown" (not retried). The flow's own retry then reconciles and adopts.
    emulator.inject(op="submit", action="drop")
    emulator.inject(op="list", status=500, code="InternalError")
    with pytest.raises(SubmissionOutcomeUnknownError) as info:
        await generate(emulator, 404, str(tmp_path))
    assert "listing the tasks created since then failed too" in str(info.value) and not info.value.retryable
    assert emulator.counters().submissions_accepted == 1
    rerun = await generate(emulator, 404, str(tmp_path))  # a manual re-run adopts the task
    assert emulator.counters().submissions_accepted == 1 and rerun.task_id in emulator.state.tasks

    emulator.inject(op="submit", action="drop")
    emulator.inject(op="list", status=500, code="InternalError")
    retried = keyframes_to_video.with_options(retries=1, retry_delay_seconds=0)
    video = await retried(FIRST, LAST, prompt="sunrise to noon", options=options(405), credentials=emulator.credentials(), destination=str(tmp_path), poll=POLL)
    assert emulator.counters().submissions_accepted == 2  # one for each seed, none twice
    assert video.task_id in emulator.state.tasks


async def test_ambiguity_is_reported_then_resolved_by_a_rerun(prefect_harness, emulator, tmp_path):
    async with emulator.credentials().get_client() as client:
        # Same prompt, other frames: the list cannot tell it from ours.
        rival = await client.submit(request(406))  # unknown to our journal
    emulator.inject(op="submit", action="drop")
    with pytest.raises(SubmissionOutcomeUnknownError) as info:
        await generate(emulator, 407, str(tmp_path))
    ours = next(t for t in emulator.state.tasks if t != rival.task_id)
    assert set(info.value.candidates) == {rival.task_id, ours} and rival.task_id in str(info.value)
    with pytest.raises(SubmissionOutcomeUnknownError):
        await generate(emulator, 407, str(tmp_path))  # still ambiguous: nothing is resent
    assert emulator.counters().submissions_accepted == 2
    remember_task_ids([rival.task_id])  # the other submission is now accounted for
    video = await generate(emulator, 407, str(tmp_path))
    assert video.task_id == ours and emulator.counters().submissions_accepted == 2


async def test_an_adopted_task_with_another_prompt_is_replaced(prefect_harness, emulator, tmp_path):
    # The emulator shows a prompt only once the task succeeded, so adoption is checked then.
    emulator.configure(pending_seconds=1.5)
    async with emulator.credentials().get_client() as client:
        prepared = await client.prepare(request(408))
        call = await client.build_create_call(prepared)
        call.body.input.prompt = "not our prompt"
        emulator.inject(op="submit", action="drop")
        with pytest.raises(SubmissionOutcomeUnknownError):
            await client.send_create(call)
    # Our journal now says "unknown" for this pair's key, as a crash mid-send would leave it.
    journal = SubmissionJournal()
    key = emulator.credentials().submission_key(prepared.fingerprint)
    from prefect_wan.ledger.journal import AttemptState, SubmissionAttempt, SubmissionRecord

    await journal.write(
        SubmissionRecord(
            key=key,
            fingerprint=prepared.fingerprint,
            model=MODEL,
            endpoint=emulator.base_url,
            prompt="sunrise to noon",
            attempts=[SubmissionAttempt(sent_at=datetime.now(timezone.utc) - timedelta(seconds=1), state=AttemptState.UNKNOWN)],
        )
    )
    emulator.configure(pending_seconds=0.05)
    video = await generate(emulator, 408, str(tmp_path))
    assert emulator.counters().submissions_accepted == 2  # the stranger's task, then ours
    assert video.record.orig_prompt == "sunrise to noon"


async def test_an_unreadable_journal_sends_nothing(prefect_harness, emulator, tmp_path):
    async with emulator.credentials().get_client() as client:
        prepared = await client.prepare(request(409))
    journal = SubmissionJournal()
    key = emulator.credentials().submission_key(prepared.fingerprint)
    Path(journal.root).mkdir(parents=True, exist_ok=True)
    Path(journal.root, f"{key}.json").write_text("{not json")
    with pytest.raises(JournalError, match="unreadable"):
        await generate(emulator, 409, str(tmp_path))
    assert emulator.counters().submissions_accepted == 0
    Path(journal.root, f"{key}.json").unlink()


# --- crash between "accepted" and "recorded" --------------------------------------------------


def _crash_after_create(emulator, destination: str, seed: int) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from prefect_wan.blocks import WanCredentials
        from prefect_wan.client.client import DashScopeClient
        from prefect_wan.client.polling import PollSchedule
        from prefect_wan.flows import GenerationOptions, keyframes_to_video

        original = DashScopeClient.send_create
        async def send_then_die(self, call):
            await original(self, call)
            os.kill(os.getpid(), signal.SIGKILL)  # accepted by the service, recorded nowhere
        DashScopeClient.send_create = send_then_die
        creds = WanCredentials(api_key={emulator.api_key!r}, base_url={emulator.base_url!r}, region="singapore", min_submit_interval=0)
        asyncio.run(keyframes_to_video({FIRST!r}, {LAST!r}, prompt="sunrise to noon", options=GenerationOptions(resolution="480P", seed={seed}),
                    credentials=creds, destination={destination!r}, poll=PollSchedule(initial_delay=0.05, interval=0.1, jitter=0)))
    """)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=180)


async def test_a_crash_between_create_and_record_is_reconciled_at_once(prefect_harness, emulator, tmp_path, caplog):
    finished = _crash_after_create(emulator, str(tmp_path), seed=410)
    assert finished.returncode == -9, finished.stderr.decode()[-2000:]
    assert emulator.counters().submissions_accepted == 1
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        video = await generate(emulator, 410, str(tmp_path))
    # The dead holder's lock is taken over at once (not after its 10 min hold), and said so.
    assert time.monotonic() - started < 60
    assert any("is gone" in r.getMessage() for r in caplog.records)
    assert emulator.counters().submissions_accepted == 1 and video.task_id == next(iter(emulator.state.tasks))


# --- reconciliation, branch by branch ------------------------------------------------------------


async def test_reconcile_branches(emulator):
    async with emulator.credentials().get_client() as client:
        sent_at = datetime.now(timezone.utc)
        nothing = await reconcile_lost_create(client, model=MODEL, sent_at=sent_at, prompt="p", known_ids=set(), settle_seconds=0.05)
        assert nothing.created_nothing and nothing.adopted is None
        ours = await client.submit(request(411, prompt="p"))
        adopted = await reconcile_lost_create(client, model=MODEL, sent_at=sent_at, prompt="p", known_ids=set())
        assert adopted.adopted is not None and adopted.adopted.output.task_id == ours.task_id
        rivals = await reconcile_lost_create(client, model=MODEL, sent_at=sent_at, prompt="p", known_ids=set(), rival_intents=1)
        assert rivals.adopted is None and rivals.candidates == [ours.task_id]
        other = await client.submit(request(412, prompt="q"))
        two = await reconcile_lost_create(client, model=MODEL, sent_at=sent_at, prompt="p", known_ids=set())
        assert two.adopted is None and set(two.candidates) == {ours.task_id, other.task_id}
        known = await reconcile_lost_create(client, model=MODEL, sent_at=sent_at, prompt="p", known_ids={other.task_id})
        assert known.adopted is not None
        emulator.inject(op="list", status=429, code="Throttling", message="Requests throttling triggered.")
        with pytest.raises(SubmissionOutcomeUnknownError, match="listing the tasks"):
            await reconcile_lost_create(client, model=MODEL, sent_at=sent_at, prompt="p", known_ids=set())


async def test_reconciling_an_old_intent_keeps_to_the_list_windows_24_hours(emulator):
    async with emulator.credentials().get_client() as client:
        long_ago = datetime.now(timezone.utc) - timedelta(hours=30)
        outcome = await reconcile_lost_create(client, model=MODEL, sent_at=long_ago, prompt="p", known_ids=set(), settle_seconds=0)
        assert outcome.created_nothing
        with pytest.raises(Exception, match="within 24 hours"):
            await client.list_tasks(start_time=long_ago)


async def test_no_create_is_sent_on_a_connection_the_server_is_closing(frames):
    # Scaled down: the server closes idle connections after 1 s (servers: 5-60 s), the client reuses
    # only those idle for less than 0.4 s (2 s by default). Requests go out after ~1 s of idleness,
    # the moment a connection kept for longer would be closing under them.
    from prefect_wan.emulator import run_emulator

    with run_emulator(idle_timeout_seconds=1, pending_seconds=0.05, running_seconds=0.1, submit_rps=1000.0) as emu:
        credentials = emu.credentials()
        async with credentials.get_client(keepalive_expiry=0.4) as client:
            prepared = await client.prepare(request(413))
            call = await client.build_create_call(prepared)
            for gap in (0.95, 0.98, 1.0, 1.02, 1.05, 0.99):
                await asyncio.sleep(gap)
                await client.send_create(call)
        assert emu.counters().submissions_accepted == 6


async def test_twenty_in_flight_with_dropped_answers_pay_each_pair_once(prefect_harness, emulator, tmp_path):
    from prefect_wan.flows import GenerationOptions, KeyframePair, keyframes_batch

    emulator.configure(seed=3)
    emulator.inject(op="submit", action="drop", fraction=0.25, count=None)
    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt="same prompt for all", seed=600 + i, label=f"d{i}") for i in range(20)]
    result = await keyframes_batch(
        pairs=pairs, options=GenerationOptions(resolution="480P"), credentials=emulator.credentials(), destination=str(tmp_path), poll=POLL, max_in_flight=20
    )
    counters = emulator.counters()
    assert len(result.videos) == 20 and not result.failures
    assert counters.faults_injected["submit:drop"] >= 2 and counters.submissions_accepted == 20
    assert len({v.task_id for v in result.videos}) == 20
