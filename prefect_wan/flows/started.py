"""Who is told when a run of this process starts (the CLI prints where to watch it): the run's name
and, with a Prefect server's UI configured, its link."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

_LISTENERS: list[Callable[[str, Optional[str]], None]] = []


@contextlib.contextmanager
def telling_starts(listener: Callable[[str, Optional[str]], None]) -> Iterator[None]:
    """Call ``listener(run_name, ui_url)`` when a run of this process starts."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


def run_started() -> None:
    """Tell the listeners this run has started (a run of another run, a pair's, is told too: once each)."""
    if not _LISTENERS:
        return
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    name, url = str(flow_run.get_name()), flow_run.ui_url if PREFECT_UI_URL.value() else None
    for listener in list(_LISTENERS):
        listener(name, url)
