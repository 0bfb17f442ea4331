"""The CLI's view of a running batch or storyboard: a live rich display on a terminal, plain
periodic lines anywhere else (a pipe, a log file, CI)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Callable, Iterator, Optional

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from prefect_wan.flows.progress import RunProgress, duration_text

ProgressSource = Callable[[], Optional[RunProgress]]
LIVE_REFRESH_SECONDS = 0.25
# Plain output: a line when something changed, at most this often, and at least this often.
PLAIN_MIN_SECONDS = 2.0
PLAIN_MAX_SECONDS = 30.0
SHOWN_GENERATING = 8


def render(progress: RunProgress) -> Group:
    counts = progress.counts()
    total = len(progress.pairs)
    ended = counts["done"] + counts["failed"] + counts["skipped"]
    table = Table(show_edge=False, pad_edge=False, box=None)
    # A pair whose draft waits for a decision has not ended: the column shows only while one does.
    columns = ("done", "generating", "queued", *(("in review",) if counts["review"] else ()), "failed", "skipped", "ETA", "spend")
    for column in columns:
        table.add_column(column, justify="right" if column not in ("ETA", "spend") else "left")
    table.add_row(
        f"{counts['done']}/{total}",
        str(counts["generating"]),
        str(counts["queued"]),
        *((Text(str(counts["review"]), style="yellow"),) if counts["review"] else ()),
        Text(str(counts["failed"]), style="red" if counts["failed"] else ""),
        str(counts["skipped"]),
        duration_text(progress.eta_seconds()),
        progress.spend.describe(),
    )
    now = time.monotonic()
    generating = [p for p in progress.pairs if p.stage in ("generating", "archiving")][:SHOWN_GENERATING]
    lines = [Text(f"  {p.label}: {p.stage}, task {p.task_id or '?'}, {duration_text(now - p.submitted_at) if p.submitted_at else ''}") for p in generating]
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=total or 1, completed=ended, width=40), f"{ended}/{total} ended")
    return Group(Text(f"prefect-wan: {progress.title}", style="bold"), bar, table, *lines)


def _never() -> bool:
    return False


async def follow(source: ProgressSource, console: Console, held: Callable[[], bool] = _never) -> None:
    """Show the run's progress until cancelled; nothing while ``held()`` (the terminal asks something)."""
    if console.is_terminal:
        with Live(console=console, refresh_per_second=1 / LIVE_REFRESH_SECONDS, transient=False) as live:
            try:
                while True:
                    if held() and live.is_started:
                        live.stop()
                    elif not held() and not live.is_started:
                        live.start()
                    if (progress := source()) is not None and live.is_started:
                        live.update(render(progress))
                    await asyncio.sleep(LIVE_REFRESH_SECONDS)
            finally:
                if (progress := source()) is not None:
                    live.update(render(progress), refresh=True)
        return
    last, last_at = "", 0.0
    try:
        while True:
            progress = source()
            now = time.monotonic()
            if progress is not None and not held():
                line = progress.line()
                if (line != last and now - last_at >= PLAIN_MIN_SECONDS) or now - last_at >= PLAIN_MAX_SECONDS:
                    console.print(f"progress: {line}", highlight=False, soft_wrap=True)
                    last, last_at = line, now
            await asyncio.sleep(0.5)
    finally:
        if (progress := source()) is not None and progress.line() != last:
            console.print(f"progress: {progress.line()}", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def quiet_prefect_console(level: int) -> Iterator[None]:
    """Prefect's console logs at ``level`` and above only, for as long as the block runs (every log
    still reaches the Prefect API and UI): a live display owns the terminal, and a command says
    what became of each pair itself, one line each, where Prefect would print tracebacks."""
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers = [h for name in ("prefect", "") for h in logging.getLogger(name).handlers if isinstance(h, PrefectConsoleHandler)]
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(max(handler.level, level))
    try:
        yield
    finally:
        for handler, old in zip(handlers, levels):
            handler.setLevel(old)
