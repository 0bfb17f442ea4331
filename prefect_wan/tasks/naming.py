"""Readable task-run names: the pair's label when there is one."""

from __future__ import annotations

from typing import Callable


def run_name(verb: str) -> Callable[[], str]:
    def name() -> str:
        from prefect.runtime import task_run

        parameters = task_run.parameters or {}
        label = parameters.get("label")
        if not label:
            submitted = parameters.get("submitted")
            fingerprint = parameters.get("fingerprint") or getattr(submitted, "fingerprint", "") or ""
            label = fingerprint[:12] or "pair"
        return f"{verb}-{label}"

    return name
