"""The options the CLI's commands share, declared once as groups (see ``prefect_wan.signatures``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Union

import typer

from prefect_wan.cli.exits import EXIT_BAD_INPUT
from prefect_wan.client.regions import Region
from prefect_wan.signatures import parameter_group

if TYPE_CHECKING:
    from prefect_wan.blocks import WanCredentials
    from prefect_wan.client.access import ServiceAccess
    from prefect_wan.flows import GenerationOptions
    from prefect_wan.flows.drafts import Review


# What the command has to say once its checks have passed.
NOTICES: list[str] = []


def announce() -> None:
    """Say the notices waiting (each once), now that nothing was refused."""
    for notice in NOTICES:
        typer.echo(notice, err=True)
    NOTICES.clear()


@parameter_group
@dataclass
class GenerationFlags:
    """How to generate: the run's ``GenerationOptions``."""

    model: str = typer.Option(
        "wan2.2-kf2v-flash",
        help="Model: wan2.2-kf2v-flash, wanx2.1-kf2v-plus (Beijing), wan2.1-kf2v-plus (Singapore), wan2.7-i2v, wan3.0-video(-prime).",
    )
    resolution: Optional[str] = typer.Option(None, help="480P, 720P or 1080P (model default when omitted).")
    duration: Optional[int] = typer.Option(None, help="Seconds: 5 for kf2v, 2-15 for wan2.7, 2-30 or -1 (smart) for wan3.0.")
    seed: Optional[int] = typer.Option(None, help="Seed in [0, 2147483647].")
    negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt", help="What to avoid.")
    prompt_extend: bool = typer.Option(True, "--prompt-extend/--no-prompt-extend", help="Let the service rewrite the prompt.")
    watermark: bool = typer.Option(False, "--watermark/--no-watermark", help="Add the 'AI generated' mark.")

    def options(self) -> GenerationOptions:
        from prefect_wan.flows import GenerationOptions

        return GenerationOptions(
            model=self.model,
            resolution=self.resolution,
            duration=self.duration,
            seed=self.seed,
            negative_prompt=self.negative_prompt,
            prompt_extend=self.prompt_extend,
            watermark=self.watermark,
        )


@parameter_group
@dataclass
class TargetFlags:
    """Where the service, the archive and the shared state are, and what the run may spend."""

    dest: str = typer.Option("./wan-archive", "--dest", help="Archive: local path or fsspec URL (s3://bucket/prefix).")
    credentials: Optional[str] = typer.Option(None, "--credentials", help="Name of a saved WanCredentials block.")
    region: Region = typer.Option(Region.SINGAPORE, help="Region when no block is named (key from DASHSCOPE_API_KEY).")
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Host override (a proxy or an emulator).")
    workspace: Optional[str] = typer.Option(None, "--workspace", help="Workspace id; builds the workspace host in Tokyo, Frankfurt and Virginia.")
    force: bool = typer.Option(False, "--force", help="Generate again even if archived.")
    max_cost: Optional[str] = typer.Option(
        None, "--max-cost", help="Most the run may commit, with its currency: '12.5 CNY', '3 USD'. Pairs past it are not submitted."
    )
    coordination: Optional[str] = typer.Option(
        None, "--coordination", help="Name of a saved WanCoordination block (shared records and Redis lock, for several machines)."
    )
    verbose: bool = typer.Option(False, "--verbose", help="Show Prefect's own logs on the terminal, tracebacks included.")

    @contextlib.contextmanager
    def service(self, emulator: bool) -> Iterator[Union[ServiceAccess, str]]:
        """The account the command runs with: a local emulator's, a saved block's name, or built
        from the flags (without Prefect: see ``block_of``)."""
        if emulator:
            from prefect_wan.emulator import run_emulator

            with run_emulator(region=self.region) as emu:
                # Said once the command's checks have passed (``announce``): a refusal comes alone.
                NOTICES.append(f"Using the local emulator at {emu.base_url} (videos are its camera-move rendering)")
                try:
                    yield emu.access()
                finally:
                    NOTICES.clear()
            return
        if self.credentials:
            yield self.credentials
            return
        from pydantic import ValidationError

        from prefect_wan.client.access import ServiceAccess

        try:
            access = ServiceAccess(region=self.region, base_url=self.base_url, workspace=self.workspace)
        except ValidationError as error:
            reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
            typer.echo(f"Refused before sending: {reasons}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        yield access


def block_of(account: Union[ServiceAccess, str]) -> Union[WanCredentials, str]:
    """What a flow is given: the ``WanCredentials`` block of the account (imports Prefect), or the saved block's name."""
    if isinstance(account, str):
        return account
    from prefect_wan.blocks import WanCredentials

    return WanCredentials.of(account)


@parameter_group
@dataclass
class ReviewFlags:
    """Review before the expensive render: the run's ``Review``."""

    review: bool = typer.Option(
        False, "--review", help="Draft every pair cheaply, wait for your decisions (here, or in the Prefect UI with a server), render only the approved."
    )
    draft_resolution: str = typer.Option("480P", "--draft-resolution", help="Resolution of the drafts (below the final one).")
    draft_model: Optional[str] = typer.Option(None, "--draft-model", help="A cheaper model for the drafts, for a model with no cheaper tier.")
    approve_passing: bool = typer.Option(False, "--approve-passing", help="Approve drafts whose checks pass without asking.")

    def settings(self) -> Optional[Review]:
        """The ``Review`` asked for, or None without ``--review``."""
        if not (self.review or self.draft_model or self.approve_passing):
            return None
        from prefect_wan.flows.drafts import Review

        return Review(
            draft_resolution=self.draft_resolution.upper(),
            draft_model=self.draft_model,
            auto_approve="passing" if self.approve_passing else None,
        )


EMULATOR = typer.Option(False, "--emulator", help="Run against a local emulator started for this command.")
