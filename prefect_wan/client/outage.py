"""An outage, recognised once per process: when creates in a row are refused by the service itself
(a 5xx that provably created nothing, or no connection), stop sending creates there for a
cool-down, then let one create through (the probe); the first create answered otherwise ends it.

Without this, every pair of a night's batch would send its own creates into a failing service
(1 + the submit task's retries each) and report the same outage once per pair. With it, the
whole process sends ``OUTAGE_AFTER`` creates (plus one for each pair already sending), then one
probe per cool-down, and gives up after ``patience`` seconds: the pairs still waiting are left
unsubmitted, nothing paid for them. Exactly-once is untouched: only creates that provably created
nothing count as refused, and nothing is ever resent blindly.

Watches are per host and model (like the create turn) and shared by every event loop and thread of
the process.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from prefect_wan.client.errors import DashScopeError

# Creates refused in a row (across pairs) that make an outage.
OUTAGE_AFTER = 3
# The first cool-down; it doubles after each refused probe, up to MAX_COOL_DOWN_SECONDS.
COOL_DOWN_SECONDS = 30.0
MAX_COOL_DOWN_SECONDS = 300.0
# How long pairs wait for the service to answer again before they are left unsubmitted.
PATIENCE_ENV = "PREFECT_WAN_OUTAGE_PATIENCE_SECONDS"
DEFAULT_PATIENCE_SECONDS = 900.0
# The request ids an outage report names (the first ones: enough for a support ticket).
REPORTED_REQUEST_IDS = 5


class ServiceOutageError(DashScopeError):
    """The service refused every create for a while: this pair was not sent (nothing paid).

    Not retried by Prefect: the outage watch decides when the next create goes out."""

    def __init__(self, message: str, *, report: OutageReport, gave_up: bool, **kwargs: Any) -> None:
        self.report, self.gave_up = report, gave_up
        super().__init__(
            message,
            code=report.code or "ServiceOutage",
            status_code=report.status_code,
            request_id=report.request_ids[-1] if report.request_ids else None,
            **kwargs,
        )


def waiting(report: OutageReport, label: str) -> ServiceOutageError:
    """``label`` was not sent, and waits for the service: the watch decides when its create goes."""
    return ServiceOutageError(f"{label} not sent: {report.describe()}; the next create waits for the service", report=report, gave_up=False)


@dataclass
class OutageReport:
    """What is said of an outage, once: since when, what the service answered, how many creates it refused."""

    host: str
    model: str
    since: datetime
    refused: int = 0
    code: Optional[str] = None
    status_code: Optional[int] = None
    message: str = ""
    request_ids: list[str] = field(default_factory=list)

    def describe(self) -> str:
        answer = f"HTTP {self.status_code} {self.code}" if self.status_code else self.code or "no connection"
        ids = f"; request ids {', '.join(self.request_ids)}" if self.request_ids else ""
        return f"{self.host} refused every create of {self.model} since {self.since:%H:%M:%S} UTC ({self.refused} refused, {answer}: {self.message}{ids})"


def patience_seconds() -> float:
    try:
        return float(os.environ.get(PATIENCE_ENV, DEFAULT_PATIENCE_SECONDS))
    except ValueError:
        return DEFAULT_PATIENCE_SECONDS


class OutageWatch:
    """The creates of one host and model: whether they are in an outage, and who sends next."""

    def __init__(self, host: str, model: str) -> None:
        self.host, self.model = host, model
        self._lock = threading.Lock()
        self._in_a_row = 0
        self._pending: Optional[OutageReport] = None  # refusals in a row, before they make an outage
        self.report: Optional[OutageReport] = None  # the outage, while it lasts
        self._since = 0.0  # monotonic start of the outage
        self._cool_down = COOL_DOWN_SECONDS
        self._next_probe = 0.0
        self._probing = False

    @property
    def open(self) -> bool:
        return self.report is not None

    def refused(self, error: Optional[DashScopeError]) -> None:
        """A create the service refused (``error``; None: no answer) and that provably created nothing."""
        with self._lock:
            now = time.monotonic()
            self._in_a_row += 1
            report = self.report or self._pending or OutageReport(self.host, self.model, since=datetime.now(timezone.utc))
            report.refused += 1
            if error is not None:
                report.code, report.status_code, report.message = error.code, error.status_code, error.message
                if error.request_id and len(report.request_ids) < REPORTED_REQUEST_IDS:
                    report.request_ids.append(error.request_id)
            if self.report is not None:  # a probe refused: wait longer
                self._probing = False
                self._cool_down = min(self._cool_down * 2, MAX_COOL_DOWN_SECONDS)
                self._next_probe = now + self._cool_down
            elif self._in_a_row >= OUTAGE_AFTER:
                self.report, self._pending, self._since = report, None, now
                self._cool_down, self._next_probe, self._probing = COOL_DOWN_SECONDS, now + COOL_DOWN_SECONDS, False
            else:
                self._pending = report

    def answered(self) -> Optional[OutageReport]:
        """A create answered as a working service answers (accepted, or refused for its own reasons):
        the outage, if there was one, is over; it is returned."""
        with self._lock:
            ended, self.report, self._pending = self.report, None, None
            self._in_a_row, self._probing = 0, False
            return ended

    def release_probe(self) -> None:
        """The probe admitted is done (its answer counted already, or it sent nothing): another may probe."""
        with self._lock:
            self._probing = False

    def _gave_up(self, patience: float) -> Optional[ServiceOutageError]:
        if self.report is None or time.monotonic() - self._since < patience:
            return None
        return ServiceOutageError(f"not sent: {self.report.describe()}; gave up after {patience:g} s, nothing paid", report=self.report, gave_up=True)

    def before_send(self, label: str) -> None:
        """``ServiceOutageError`` (nothing sent) when an outage began after this create was admitted
        and no probe is out: a pair already on its way does not add a create to the outage."""
        with self._lock:
            if self.report is not None and not self._probing:
                report = self.report
            else:
                return
        raise waiting(report, label)

    async def admit(self, patience: Optional[float] = None) -> bool:
        """Return when this caller may send a create: at once without an outage (False); during one,
        when it is this caller's turn to probe (True: call ``release_probe`` when done).
        ``ServiceOutageError`` once the outage outlasts ``patience``."""
        patience = patience_seconds() if patience is None else patience
        while True:
            with self._lock:
                if self.report is None:
                    return False
                if (error := self._gave_up(patience)) is not None:
                    raise error
                now = time.monotonic()
                if not self._probing and now >= self._next_probe:
                    self._probing = True
                    return True
                wait = max(0.05, min(self._next_probe - now if not self._probing else 0.5, self._since + patience - now, 1.0))
            await asyncio.sleep(wait)


_watches: dict[tuple[str, str], OutageWatch] = {}
_watches_lock = threading.Lock()


def outage_watch(host: str, model: str) -> OutageWatch:
    """The process's watch over creates of ``model`` on ``host``."""
    with _watches_lock:
        watch = _watches.get((host, model))
        if watch is None:
            watch = _watches[(host, model)] = OutageWatch(host, model)
        return watch


def forget_outages() -> None:
    """Start every watch afresh (tests; a long-lived process after a configuration change)."""
    with _watches_lock:
        _watches.clear()
