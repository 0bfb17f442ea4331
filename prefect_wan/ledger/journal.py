"""The submission journal: what was sent, when, and what came of it, written *before* each create.

Prefect's cache record is written only once the submit task has finished, so a crash between
"task accepted" and "result recorded", a lost answer, or a retry of the flow would otherwise
send a second create (a second bill). The journal closes those gaps: every create call is
recorded as an intent first, then as accepted or refused. A later attempt that finds an intent
without an outcome reconciles it with the service's task list before it sends anything.

One JSON document per submission key (fingerprint + endpoint), on any fsspec filesystem: local by
default (``PREFECT_HOME/prefect-wan/submissions``), or a shared one named by
``PREFECT_WAN_SUBMISSIONS_URL``. Writes happen under the submit lock of their key.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Iterable, Iterator, Optional

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, Field, ValidationError

from prefect_wan.client.errors import WanError
from prefect_wan.client.results import SubmittedTask
from prefect_wan.ledger.atomic import replace_atomically
from prefect_wan.ledger.places import home_or_prefects

SUBMISSIONS_URL_ENV = "PREFECT_WAN_SUBMISSIONS_URL"
# The name of a WanCoordination block every run of this environment uses when given none.
COORDINATION_ENV = "PREFECT_WAN_COORDINATION"
# Task ids answer for 24 h; older records cannot be adopted or reconciled.
TASK_LIFETIME = timedelta(hours=24)
# A recorded task is adopted while younger than this; an older id would poll into UNKNOWN.
REUSABLE_FOR = timedelta(hours=23)


class AttemptState(str, Enum):
    SENDING = "sending"  # the intent: recorded before the create call goes out
    ACCEPTED = "accepted"
    REFUSED = "refused"  # the service provably did not create a task
    UNKNOWN = "unknown"  # the answer was lost or ambiguous; reconcile before sending again
    SUPERSEDED = "superseded"  # reconciled: no task was created
    CANCELED = "canceled"  # accepted, then canceled at the service while still queued (not billed)


class SubmissionAttempt(BaseModel):
    attempt_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    sent_at: datetime
    state: AttemptState = AttemptState.SENDING
    task_id: Optional[str] = None
    request_id: Optional[str] = None
    detail: Optional[str] = None
    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid)
    # Set by the sender, never defaulted from context: a record read back must keep its own run.
    flow_run_id: Optional[str] = Field(default=None, description="The run that sent it: its cancellation cancels it.")

    @property
    def unresolved(self) -> bool:
        return self.state in (AttemptState.SENDING, AttemptState.UNKNOWN)


class SubmissionRecord(BaseModel):
    """Everything sent for one submission key, oldest first, and the task in force."""

    key: str
    fingerprint: str
    model: str
    endpoint: str = Field(description="Host (and workspace) the tasks belong to; no secret.")
    prompt: Optional[str] = None
    attempts: list[SubmissionAttempt] = Field(default_factory=list)
    current: Optional[SubmittedTask] = None

    def live_attempts(self, now: Optional[datetime] = None) -> list[SubmissionAttempt]:
        now = now or datetime.now(timezone.utc)
        return [a for a in self.attempts if now - a.sent_at < TASK_LIFETIME]

    def unresolved(self) -> list[SubmissionAttempt]:
        return [a for a in self.live_attempts() if a.unresolved]

    def reusable(self, max_age: timedelta) -> Optional[SubmittedTask]:
        if self.current is None:
            return None
        return self.current if datetime.now(timezone.utc) - self.current.submitted_at < max_age else None

    def task_ids(self) -> set[str]:
        return {a.task_id for a in self.attempts if a.task_id}


def current_flow_run_id() -> Optional[str]:
    """The flow run this code runs for (from a task or a flow), if any."""
    if "prefect.context" not in sys.modules:
        return None  # Prefect is not loaded (a command sending before it is): no run
    from prefect.context import FlowRunContext, TaskRunContext

    task_run = TaskRunContext.get()
    if task_run is not None and task_run.task_run.flow_run_id is not None:
        return str(task_run.task_run.flow_run_id)
    flow_run = FlowRunContext.get()
    return str(flow_run.flow_run.id) if flow_run is not None and flow_run.flow_run is not None else None


def default_journal_url(home: Optional[Path] = None) -> str:
    """``PREFECT_WAN_SUBMISSIONS_URL``, else under ``home`` (Prefect's own home when not given)."""
    if url := os.environ.get(SUBMISSIONS_URL_ENV):
        return url
    return str(home_or_prefects(home) / "prefect-wan" / "submissions")


class SubmissionJournal:
    """Reads and writes submission records under one fsspec root."""

    def __init__(self, url: Optional[str] = None, storage_options: Optional[dict] = None, *, home: Optional[Path] = None) -> None:
        self.url = url or default_journal_url(home)
        self.fs, self.root = url_to_fs(self.url, **(storage_options or {}))
        self.root = self.root.rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}.json"

    def _read(self, key: str) -> Optional[SubmissionRecord]:
        try:
            return SubmissionRecord.model_validate(json.loads(self.fs.cat_file(self._path(key))))
        except FileNotFoundError:
            return None
        except (ValueError, ValidationError) as exc:
            # Never treat an unreadable record as "nothing sent": that is how a second bill happens.
            raise JournalError(f"submission record {self._path(key)} is unreadable ({exc}); inspect or remove it") from None

    def _write(self, record: SubmissionRecord) -> None:
        if isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(self.root, exist_ok=True)
        document = record.model_dump_json(indent=1).encode()
        replace_atomically(self.fs, self._path(record.key), lambda partial: self.fs.pipe_file(partial, document))

    async def read(self, key: str) -> Optional[SubmissionRecord]:
        return await asyncio.to_thread(self._read, key)

    async def write(self, record: SubmissionRecord) -> None:
        await asyncio.to_thread(self._write, record)

    async def recorded_task(self, key: str) -> Optional[SubmittedTask]:
        """The live task recorded for this work (which a run would adopt), if any. Sends nothing."""
        record = await self.read(key)
        return record.reusable(REUSABLE_FOR) if record else None

    def _records_written_since(self, since: datetime) -> Iterator[SubmissionRecord]:
        """Every readable record written at or after ``since`` (older files are not even opened)."""
        try:
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return
        for entry in entries:
            name = entry["name"]
            if not name.endswith(".json"):
                continue
            modified = _modified(entry)
            if modified is not None and modified < since:
                continue
            try:
                record = SubmissionRecord.model_validate(json.loads(self.fs.cat_file(name)))
            except (FileNotFoundError, ValueError, ValidationError):
                continue
            yield record

    def _known_task_ids(self, since: datetime) -> tuple[set[str], int]:
        """Task ids recorded since ``since`` by any run, and how many intents are still unresolved."""
        ids: set[str] = set()
        unresolved = 0
        for record in self._records_written_since(since):
            for attempt in record.attempts:
                if attempt.sent_at < since:
                    continue
                if attempt.task_id:
                    ids.add(attempt.task_id)
                elif attempt.unresolved:
                    unresolved += 1
            if record.current is not None:
                ids.add(record.current.task_id)
        return ids, unresolved

    async def known_task_ids(self, since: datetime) -> tuple[set[str], int]:
        return await asyncio.to_thread(self._known_task_ids, since)

    def _sent_by(self, flow_run_id: str) -> list[SubmissionRecord]:
        since = datetime.now(timezone.utc) - TASK_LIFETIME
        return [r for r in self._records_written_since(since) if any(a.flow_run_id == flow_run_id for a in r.live_attempts())]

    async def sent_by(self, flow_run_id: str) -> list[SubmissionRecord]:
        """Records with a create sent by this flow run in the last 24 h."""
        return await asyncio.to_thread(self._sent_by, flow_run_id)


class JournalError(WanError):
    """The journal cannot be read or written; nothing is sent while it is so."""


def _modified(entry: dict) -> Optional[datetime]:
    for field in ("mtime", "LastModified", "updated", "last_modified"):
        value = entry.get(field)
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, timezone.utc)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return None


_PROCESS_TASK_IDS: set[str] = set()


def remember_task_ids(ids: Iterable[str]) -> None:
    """Task ids this process created or adopted: never candidates for someone else's lost create."""
    _PROCESS_TASK_IDS.update(ids)


def process_task_ids() -> set[str]:
    return set(_PROCESS_TASK_IDS)
