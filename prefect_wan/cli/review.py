"""A review answered from a terminal: ``prefect-wan review RUN`` for a run waiting on a Prefect
server, and the terminal of a CLI run that has no server to show the form on."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from prefect_wan.flows.review import ReviewRequest, answer_review

CHOICES = ("approve", "retake", "drop")


def _excerpt(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def show(request: ReviewRequest, console: Console) -> None:
    """The waiting drafts as a table (checks, draft and final cost, the prompt the service used),
    then where each draft's video is, one line each, whole, to open or copy."""
    if not console.is_terminal:
        console.width = 200  # a pipe or a file: no reason to wrap at 80 columns
    table = Table(title=f"{request.run_name}: review round {request.round}", title_justify="left")
    for column in ("label", "checks", "draft", "final", "prompt used"):
        table.add_column(column, overflow="fold")
    for draft in request.drafts:
        style = "green" if draft.passed else "red" if draft.passed is False else ""
        table.add_row(draft.label, f"[{style}]{draft.checks}[/{style}]" if style else draft.checks, draft.draft, draft.final, _excerpt(draft.prompt_used))
    console.print(table)
    for draft in request.drafts:
        console.print(f"{draft.label}: {draft.video_url}", highlight=False, soft_wrap=True)


def ask(request: ReviewRequest, console: Console) -> dict[str, Any]:
    """Each draft's decision asked on the terminal, with no default (Enter asks again: nothing is
    paid for without a choice). At the end of input every draft not decided is dropped."""
    chosen: dict[str, list[str]] = {choice: [] for choice in CHOICES}
    prompts: dict[str, str] = {}
    try:
        for draft in request.drafts:
            choice = click.prompt(f"{draft.label} ({'passed' if draft.passed else draft.checks})", type=click.Choice(CHOICES), err=True)
            chosen[choice].append(draft.label)
            if choice == "retake":
                prompt = click.prompt("  new prompt (Enter keeps the one used)", default="", show_default=False, err=True).strip()
                if prompt:
                    prompts[draft.label] = prompt
    except click.Abort:
        undecided = [d.label for d in request.drafts if not any(d.label in labels for labels in chosen.values())]
        console.print(f"[yellow]No answer (end of input):[/yellow] dropped {', '.join(undecided)}", highlight=False)
        chosen["drop"] += undecided
    return request.answer(approve=chosen["approve"], retake=chosen["retake"], drop=chosen["drop"], prompts=prompts)


async def ask_here(request: ReviewRequest, console: Console) -> None:
    """The review of a CLI run with no Prefect server: asked in this terminal, answered to the run."""
    console.print(
        f"[bold]Review round {request.round}[/bold]: {len(request.drafts)} draft(s) wait for you. With a Prefect server "
        "(PREFECT_API_URL set), the run waits in the Prefect UI instead, or for `prefect-wan review RUN`.",
        highlight=False,
        soft_wrap=True,
    )
    show(request, console)
    answers = await asyncio.to_thread(ask, request, console)
    await answer_review(request, answers)


async def point_to_ui(request: ReviewRequest, console: Console) -> None:
    """The review of a CLI run on a Prefect server: it waits there; say where."""
    console.print(
        f"[bold]Review round {request.round}[/bold]: {len(request.drafts)} draft(s) wait in the Prefect UI at {request.ui_url}, "
        f"or answer from a terminal: prefect-wan review {request.run_name} --approve LABEL ...",
        highlight=False,
        soft_wrap=True,
    )
