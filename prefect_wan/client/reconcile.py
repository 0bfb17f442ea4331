"""Finding out what a create call whose answer was lost actually did.

The service keeps no idempotency key, so the only witness is its task list. List the tasks of
the model created since the call was sent, drop every id already accounted for (known to this
process or recorded in a submission record), and decide:

- a candidate whose prompt shows and is not ours is someone else's, and is dropped too;
- none left (after a short settle, since a list may lag a create): the call created nothing,
  and sending it again cannot double-bill;
- exactly one left, no other unresolved create in the window, and its prompt is ours: adopt it.
  The service may show ``orig_prompt`` only once a task has succeeded (UNCONFIRMED; the emulator
  does so): then the task is adopted with its prompt still to verify, and the poll task checks it;
- otherwise: ambiguous. Fail, naming only the unexplained candidates, and send nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Optional

from prefect_wan.client.errors import DashScopeError, SubmissionOutcomeUnknownError
from prefect_wan.client.wire import LIST_WINDOW, ListedTask, TaskResponse

if TYPE_CHECKING:
    from prefect_wan.client.client import DashScopeClient

# Service times have second resolution and clocks drift: look a little before the send.
WINDOW_SLACK = timedelta(seconds=10)
# UNCONFIRMED how quickly a created task shows in the list; wait this long before concluding "none".
DEFAULT_SETTLE_SECONDS = 2.0
MAX_LISTED = 1000
MAX_QUERIED = 20


@dataclass
class Reconciliation:
    """``adopted`` holds the task when one was found; ``created_nothing`` says a resend is safe."""

    adopted: Optional[TaskResponse] = None
    prompt_unverified: bool = False
    created_nothing: bool = False
    candidates: list[str] = field(default_factory=list)
    detail: str = ""


async def _list_window(client: DashScopeClient, model: str, since: datetime) -> list[ListedTask]:
    rows: list[ListedTask] = []
    page = 1
    while len(rows) < MAX_LISTED:
        listing = await client.list_tasks(
            model_name=model,
            start_time=since,
            end_time=datetime.now(timezone.utc) + timedelta(minutes=1),
            page_no=page,
            page_size=100,
        )
        rows.extend(listing.data)
        if page >= max(listing.total_page, 1) or not listing.data:
            break
        page += 1
    return rows


def same_prompt(ours: Optional[str], theirs: Optional[str]) -> bool:
    return (ours or "").strip() == (theirs or "").strip()


async def reconcile_lost_create(
    client: DashScopeClient,
    *,
    model: str,
    sent_at: datetime,
    prompt: Optional[str],
    known_ids: set[str],
    rival_intents: int = 0,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
) -> Reconciliation:
    """Decide what a lost create did. Raises ``SubmissionOutcomeUnknownError`` if the list fails."""
    # The list API answers for windows of at most 24 h.
    since = max(sent_at - WINDOW_SLACK, datetime.now(timezone.utc) - LIST_WINDOW)
    try:
        unexplained = [row for row in await _list_window(client, model, since) if row.task_id not in known_ids]
        if not unexplained and settle_seconds > 0:
            await asyncio.sleep(settle_seconds)
            unexplained = [row for row in await _list_window(client, model, since) if row.task_id not in known_ids]
    except DashScopeError as exc:
        # Not knowing is not "nothing was created": keep the outcome unknown, never resend.
        raise SubmissionOutcomeUnknownError(
            f"a create call for {model} sent at {sent_at.isoformat()} got no usable answer, and listing the "
            f"tasks created since then failed too ({exc}); nothing was resent. Run again later to reconcile",
            code="SubmissionOutcomeUnknown",
            sent_at=sent_at.isoformat(),
            model=model,
        ) from None
    # A candidate whose prompt shows and differs is someone else's: it explains nothing of ours.
    answers: dict[str, Optional[TaskResponse]] = {}
    for row in unexplained[:MAX_QUERIED]:
        try:
            answers[row.task_id] = await client.get_task(row.task_id)
        except DashScopeError:
            answers[row.task_id] = None

    def someone_elses(task_id: str) -> bool:
        answer = answers.get(task_id)
        shown = answer.output.orig_prompt if answer is not None else None
        return shown is not None and not same_prompt(prompt, shown)

    ids = [row.task_id for row in unexplained if not someone_elses(row.task_id)]
    if not ids:
        others = f" ({len(unexplained)} other task(s) with other prompts)" if unexplained else ""
        return Reconciliation(created_nothing=True, detail=f"no task of ours was created since {since.isoformat()}{others}")
    if len(ids) == 1 and rival_intents == 0:
        candidate = answers.get(ids[0])
        if candidate is None:  # not asked above, or its answer failed: ask once more
            try:
                candidate = await client.get_task(ids[0])
            except DashScopeError as exc:
                return Reconciliation(candidates=ids, detail=f"could not query the candidate {ids[0]}: {exc}")
        if candidate.output.orig_prompt is None:
            return Reconciliation(
                adopted=candidate,
                prompt_unverified=True,
                candidates=ids,
                detail=f"adopted {ids[0]}: the only new task; its prompt is checked when it shows",
            )
        return Reconciliation(adopted=candidate, candidates=ids, detail=f"adopted {ids[0]}: the only new task, with our prompt")
    extra = f"; {rival_intents} other create(s) of unknown outcome in the same window" if rival_intents else ""
    return Reconciliation(candidates=ids, detail=f"{len(ids)} unexplained task(s) of {model} with our prompt since {since.isoformat()}{extra}")
