"""The submission journal (ledger/journal.py): what was sent, read back exactly; what may be adopted;
what other runs sent; never a silent "nothing sent" for a record it cannot read."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from prefect_wan.client.results import SubmittedTask
from prefect_wan.ledger.journal import AttemptState, JournalError, SubmissionAttempt, SubmissionJournal, SubmissionRecord

NOW = datetime.now(timezone.utc)


def task(task_id: str, age: timedelta = timedelta(0)) -> SubmittedTask:
    return SubmittedTask(task_id=task_id, request_id="r", model="wan2.2-kf2v-flash", region="singapore", fingerprint="f" * 64, submitted_at=NOW - age)


def record(key: str, *attempts: SubmissionAttempt, current: SubmittedTask | None = None) -> SubmissionRecord:
    return SubmissionRecord(key=key, fingerprint="f" * 64, model="wan2.2-kf2v-flash", endpoint="e", attempts=list(attempts), current=current)


async def test_a_record_reads_back_as_written_and_replaces_the_old_one(tmp_path):
    journal = SubmissionJournal(str(tmp_path))
    assert await journal.read("k") is None
    first = record("k", SubmissionAttempt(sent_at=NOW, flow_run_id="run-1"))
    await journal.write(first)
    first.attempts[0].state, first.attempts[0].task_id = AttemptState.ACCEPTED, "t1"
    first.current = task("t1")
    await journal.write(first)
    again = await journal.read("k")
    assert again == first and sorted(p.name for p in tmp_path.iterdir()) == [".partials", "k.json"]
    assert list((tmp_path / ".partials").iterdir()) == []  # staged writes leave nothing behind


async def test_an_unreadable_record_is_an_error_never_nothing_sent(tmp_path):
    (tmp_path / "k.json").write_text("{ half a record")
    with pytest.raises(JournalError, match="k.json is unreadable"):
        await SubmissionJournal(str(tmp_path)).read("k")


async def test_a_recorded_task_is_adopted_only_while_it_can_still_be_polled(tmp_path):
    journal = SubmissionJournal(str(tmp_path))
    await journal.write(record("young", current=task("t-young", timedelta(hours=22))))
    await journal.write(record("old", current=task("t-old", timedelta(hours=23, minutes=1))))
    await journal.write(record("none", SubmissionAttempt(sent_at=NOW, state=AttemptState.REFUSED)))
    assert (await journal.recorded_task("young")).task_id == "t-young"
    assert await journal.recorded_task("old") is None
    assert await journal.recorded_task("none") is None and await journal.recorded_task("missing") is None


async def test_what_other_runs_sent_in_a_window(tmp_path):
    journal = SubmissionJournal(str(tmp_path))
    await journal.write(record("a", SubmissionAttempt(sent_at=NOW, state=AttemptState.ACCEPTED, task_id="t-a", flow_run_id="run-1")))
    await journal.write(record("b", SubmissionAttempt(sent_at=NOW, state=AttemptState.SENDING, flow_run_id="run-2")))
    await journal.write(record("c", SubmissionAttempt(sent_at=NOW - timedelta(hours=2), state=AttemptState.ACCEPTED, task_id="t-c")))
    ids, unresolved = await journal.known_task_ids(NOW - timedelta(minutes=1))
    assert ids == {"t-a"} and unresolved == 1
    assert [r.key for r in await journal.sent_by("run-2")] == ["b"]
    assert await journal.sent_by("run-3") == []
