"""When a run ends early (cancelled, crashed, interrupted): cancel its tasks still queued at the
service, and keep the records of those already running so a later run adopts them.

The service cancels only PENDING tasks; a RUNNING one will finish and bill whatever we do, so
its record is the one thing worth keeping. The tasks of a run are found in the submission journal
(each create is recorded with the flow run that sent it), not in memory: Prefect's runner calls
the cancellation hook in its own process, after the flow's process was stopped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional, Union

from prefect.events import emit_event
from pydantic import BaseModel, Field

from prefect_wan.blocks.coordination import WanCoordination, resolve_coordination
from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.client import DashScopeClient
from prefect_wan.client.errors import DashScopeError, UnsupportedOperationError, WanError
from prefect_wan.client.wire import TaskStatus
from prefect_wan.ledger.journal import AttemptState, SubmissionJournal, SubmissionRecord, current_flow_run_id

STOPPED_EVENT = "prefect_wan.run.stopped"
# Queries and cancels at once: well under the service's 20 queries/s, quick for hundreds of tasks.
CANCEL_CONCURRENCY = 5

_RUN_STATE: dict[str, tuple[WanCredentials, WanCoordination]] = {}


class StoppedTasks(BaseModel):
    """What became of a stopped run's tasks."""

    canceled: list[str] = Field(default_factory=list, description="Were queued; canceled at the service, never billed.")
    running: list[str] = Field(default_factory=list, description="Already generating: they finish and bill; their records stay for reuse.")
    finished: list[str] = Field(default_factory=list, description="Already succeeded: a later run archives them without paying.")
    archived: list[str] = Field(default_factory=list, description="Already archived by this run: nothing left to do.")
    creates_in_flight: int = Field(default=0, description="Creates whose answer never came; a later run reconciles them.")
    errors: dict[str, str] = Field(default_factory=dict, description="Tasks whose fate could not be learned or changed.")

    def describe(self) -> str:
        parts = [f"canceled {len(self.canceled)} queued task(s) at the service" + (f" ({', '.join(self.canceled)})" if self.canceled else "")]
        if self.running:
            parts.append(
                f"{len(self.running)} already running will finish and bill; their records are kept, so the next run adopts them: {', '.join(self.running)}"
            )
        if self.finished:
            parts.append(f"{len(self.finished)} finished and will be archived by the next run without paying: {', '.join(self.finished)}")
        if self.archived:
            parts.append(f"{len(self.archived)} already archived")
        if self.creates_in_flight:
            parts.append(f"{self.creates_in_flight} create call(s) had no answer yet; the next run reconciles them before sending anything")
        if self.errors:
            parts.append("could not settle " + "; ".join(f"{task}: {error}" for task, error in self.errors.items()))
        return "; ".join(parts)


# What the hooks of this process did, for a caller that says so in its own words (the CLI on Ctrl-C).
_STOPPED: list[StoppedTasks] = []


# Tasks whose videos this process has archived: a stopped run names them as done, not as work left.
_ARCHIVED_TASKS: set[str] = set()


def note_archived(task_id: str) -> None:
    """A task's video is archived: nothing is left for a later run to adopt."""
    _ARCHIVED_TASKS.add(task_id)


def stopped_in_this_process() -> list[StoppedTasks]:
    """The reports of the runs this process stopped since the last call."""
    reports = list(_STOPPED)
    _STOPPED.clear()
    return reports


def remember_run_credentials(credentials: WanCredentials, coordination: WanCoordination) -> None:
    """Keep the run's credentials and records' location for its cancellation hook, when that runs in this process."""
    run_id = current_flow_run_id()
    if run_id is not None:
        _RUN_STATE[run_id] = (credentials, coordination)


async def cancel_queued_tasks(flow_run_id: str, credentials: WanCredentials, journal: Optional[SubmissionJournal] = None) -> StoppedTasks:
    """Cancel every task this flow run created that is still PENDING; report on the others."""
    journal = journal or SubmissionJournal()
    records = await journal.sent_by(flow_run_id)
    report = StoppedTasks()
    gate = asyncio.Semaphore(CANCEL_CONCURRENCY)
    async with credentials.get_client() as client:

        async def settle(record: SubmissionRecord) -> None:
            changed = False
            for attempt in record.live_attempts():
                if attempt.flow_run_id != flow_run_id:
                    continue
                if attempt.unresolved:
                    report.creates_in_flight += 1
                elif attempt.state is AttemptState.ACCEPTED and attempt.task_id:
                    async with gate:
                        fate = await _stop(client, attempt.task_id, report)
                    if fate == "canceled":
                        attempt.state, attempt.detail = AttemptState.CANCELED, f"canceled while queued when flow run {flow_run_id} ended"
                        if record.current is not None and record.current.task_id == attempt.task_id:
                            record.current = None  # nothing left to adopt: the next run submits afresh
                        changed = True
            if changed:
                # Not under the submit lock: the run that held it is gone, and a rival run would
                # have recorded a task of its own, which this write keeps (only ours is cleared).
                await journal.write(record)

        await asyncio.gather(*(settle(record) for record in records))
    return report


async def _stop(client: DashScopeClient, task_id: str, report: StoppedTasks) -> str:
    if task_id in _ARCHIVED_TASKS:
        report.archived.append(task_id)
        return "archived"
    try:
        status = (await client.get_task(task_id)).output.task_status
        if status is TaskStatus.PENDING:
            try:
                await client.cancel_task(task_id)
            except UnsupportedOperationError:
                status = TaskStatus.RUNNING  # it started between the query and the cancel
            else:
                report.canceled.append(task_id)
                return "canceled"
    except DashScopeError as error:
        report.errors[task_id] = f"{type(error).__name__}: {error}"
        return "error"
    if status is TaskStatus.RUNNING:
        report.running.append(task_id)
    elif status is TaskStatus.SUCCEEDED:
        report.finished.append(task_id)
    return status.value.lower()


async def _run_state_of(flow_run: Any) -> tuple[Union[WanCredentials, str], SubmissionJournal]:
    """The run's credentials (or why they cannot be had, never the key itself) and its journal."""
    run_id = str(flow_run.id)
    if run_id in _RUN_STATE:
        credentials, coordination = _RUN_STATE.pop(run_id)
        return credentials, coordination.journal()
    given = (flow_run.parameters or {}).get("coordination")
    try:
        journal = (await resolve_coordination(given if isinstance(given, str) else None)).journal()
    except WanError:
        journal = SubmissionJournal()
    return await _credentials_from_parameters(flow_run), journal


async def _credentials_from_parameters(flow_run: Any) -> Union[WanCredentials, str]:
    given = (flow_run.parameters or {}).get("credentials")
    try:
        if isinstance(given, str):
            return await WanCredentials.aload(given)
        if given is None:
            credentials = WanCredentials()
            credentials.resolved_api_key()
            return credentials
    except (WanError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    return "the run was given inline credentials, which cannot be read back from the API (save them as a block)"


async def cancel_queued_work(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect ``on_cancellation`` / ``on_crashed`` hook of every prefect-wan flow."""
    from prefect.logging.loggers import flow_run_logger

    logger: Union[logging.Logger, logging.LoggerAdapter] = flow_run_logger(flow_run, flow)
    credentials, journal = await _run_state_of(flow_run)
    if isinstance(credentials, str):
        records = await journal.sent_by(str(flow_run.id))
        ids = sorted({a.task_id for r in records for a in r.live_attempts() if a.task_id and a.flow_run_id == str(flow_run.id)})
        logger.error("Could not cancel this run's queued tasks (%s); cancel them by hand if they are still PENDING: %s", credentials, ", ".join(ids) or "none")
        return
    report = await cancel_queued_tasks(str(flow_run.id), credentials, journal)
    _STOPPED.append(report)
    logger.warning("Run %s: %s", state.name if state is not None else "stopped", report.describe())
    emit_event(
        STOPPED_EVENT,
        resource={"prefect.resource.id": f"prefect.flow-run.{flow_run.id}", "prefect.resource.name": str(flow_run.name)},
        payload=report.model_dump(),
    )
