"""How far along a run is: pairs by stage, an ETA from the generation times observed, spend so far.

A pair is "generating" while the service generates its video, and "queued" before it is sent and
while its task waits at the service for the account's turn (2 run at once, 5 for wan2.7).

The batch and storyboard flows keep one ``RunProgress`` up to date; the progress artifact and the
CLI's live display read the same numbers. A process that wants to show them (the CLI) subscribes
with ``watching()`` before it starts the flow.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from prefect_wan.client.watcher import service_status
from prefect_wan.flows.pipeline import PairProgress
from prefect_wan.spend.budget import SpendLedger

QUEUED_STAGES = frozenset({"checking", "submitting"})
GENERATING_STAGES = frozenset({"generating", "archiving"})


@dataclass
class RunProgress:
    title: str
    pairs: list[PairProgress]
    spend: SpendLedger
    started_at: float = field(default_factory=time.monotonic)

    def counts(self) -> dict[str, int]:
        counts = {"done": 0, "generating": 0, "queued": 0, "review": 0, "failed": 0, "skipped": 0}
        for pair in self.pairs:
            if pair.stage in QUEUED_STAGES:
                counts["queued"] += 1
            elif pair.stage == "generating" and pair.task_id and service_status(pair.task_id) == "PENDING":
                counts["queued"] += 1  # accepted, and waiting at the service for the account's turn
            elif pair.stage in GENERATING_STAGES:
                counts["generating"] += 1
            else:
                counts[pair.stage] += 1
        return counts

    def eta_seconds(self, now: Optional[float] = None) -> Optional[float]:
        """Time left at the pace this run's own videos have been finishing; None before the first.

        A pace, not one generation's length: with the service running two tasks at once and more
        queued, videos finish at twice the rate one takes to generate.
        """
        now = now or time.monotonic()
        finished = [p.finished_at for p in self.pairs if p.finished_at is not None]
        submitted = [p.submitted_at for p in self.pairs if p.submitted_at is not None]
        counts = self.counts()
        left = counts["queued"] + counts["generating"]  # a pair in review waits on a person, not on the pace
        if not left:
            return 0.0
        if not finished or not submitted:
            return None
        elapsed = max(finished) - min(submitted)
        if elapsed <= 0:
            return None
        pace = len(finished) / elapsed
        return max(0.0, left / pace - (now - max(finished)))

    def line(self) -> str:
        """``3/10 done, 2 generating, 4 queued, 1 failed, 0 skipped; ETA 4m 10s; spend 1.2 CNY committed (0.6 billed)``."""
        counts = self.counts()
        eta = self.eta_seconds()
        review = f"{counts['review']} waiting for review, " if counts["review"] else ""
        return (
            f"{counts['done']}/{len(self.pairs)} done, {counts['generating']} generating, {counts['queued']} queued, {review}"
            f"{counts['failed']} failed, {counts['skipped']} skipped; ETA {duration_text(eta)}; spend {self.spend.describe()}"
        )

    @property
    def fraction_done(self) -> float:
        ended = sum(1 for p in self.pairs if p.stage in ("done", "failed", "skipped"))
        return ended / len(self.pairs) if self.pairs else 1.0


def duration_text(seconds: Optional[float]) -> str:
    if seconds is None:
        return "after the first video"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


_WATCHERS: list[Callable[[RunProgress], None]] = []


def announce(progress: RunProgress) -> None:
    """Tell this process's watchers that a run has started and where its progress lives."""
    for watcher in list(_WATCHERS):
        watcher(progress)


@contextlib.contextmanager
def watching() -> Iterator[Callable[[], Optional[RunProgress]]]:
    """Yields a function returning the progress of the run started in this process, once one has."""
    seen: list[RunProgress] = []
    _WATCHERS.append(seen.append)
    try:
        yield lambda: seen[0] if seen else None
    finally:
        _WATCHERS.remove(seen.append)
