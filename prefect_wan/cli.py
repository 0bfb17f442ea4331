"""The ``prefect-wan`` command: generate one video, run a batch manifest, or run the emulator.

Exit codes: 0 done; 1 the service or a task failed (or some batch pairs failed); 2 the input was
refused before anything was sent (bad parameters, unreadable frames or manifest, no API key);
3 the budget (``--max-cost``) left pairs unsubmitted; 130 interrupted (Ctrl-C), after cancelling
the run's tasks still queued at the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Awaitable, Iterator, Optional, TypeVar, Union

import typer

from prefect_wan.client.regions import Region

if TYPE_CHECKING:
    from prefect_wan.blocks import WanCredentials

T = TypeVar("T")
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_OVER_BUDGET, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

app = typer.Typer(help="Wan first-and-last-frame videos with Prefect.", no_args_is_help=True, add_completion=False)


@app.callback()
def _group() -> None:
    """Wan first-and-last-frame videos with Prefect."""


@contextlib.contextmanager
def _credentials(
    block: Optional[str], region: Region, base_url: Optional[str], emulator: bool, workspace: Optional[str] = None
) -> Iterator[Union["WanCredentials", str]]:
    if emulator:
        from prefect_wan.emulator import run_emulator

        with run_emulator(region=region) as emu:
            typer.echo(f"Using the local emulator at {emu.base_url} (videos are its crossfade rendering)", err=True)
            yield emu.credentials()
        return
    if block:
        yield block
        return
    from pydantic import ValidationError

    from prefect_wan.blocks import WanCredentials

    try:
        credentials = WanCredentials(region=region.value, base_url=base_url, workspace=workspace)
    except ValidationError as error:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
        typer.echo(f"Refused before sending: {reasons}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    yield credentials


def _refusals() -> tuple[type[BaseException], ...]:
    from prefect_wan.archive.destination import ArchiveDestinationError
    from prefect_wan.client.errors import MissingApiKeyError, PreflightError
    from prefect_wan.flows.manifest import ManifestError
    from prefect_wan.spend.budget import SkippedForBudgetError

    return (PreflightError, ManifestError, MissingApiKeyError, ArchiveDestinationError, SkippedForBudgetError)


async def _precheck(
    credentials, dest: str, *, manifest: Optional[str] = None, pair=None, options=None, max_cost: Optional[str] = None, sends: bool = True,
) -> None:
    """Everything that can be refused without sending, checked before Prefect (or its temporary
    server) starts: the budget, the key, the archive, the manifest or the pair and its frames.
    ``sends=False`` (a plan): no key is needed and nothing is written."""
    from prefect_wan.archive.destination import ArchiveDestination
    from prefect_wan.blocks import WanCredentials
    from prefect_wan.flows.manifest import load_manifest
    from prefect_wan.spend.budget import Budget

    Budget.coerce(max_cost)
    if sends:
        if isinstance(credentials, WanCredentials):
            credentials.resolved_api_key()
        await asyncio.to_thread(ArchiveDestination.coerce(dest).check_writable)
    if manifest is not None:
        await asyncio.to_thread(load_manifest, manifest)
    if pair is not None and isinstance(credentials, WanCredentials):
        async with credentials.get_client() as client:
            await client.prepare(pair.to_request(options))


async def _with_progress(flow_call: Awaitable[T]) -> T:
    """A flow call with its progress shown beside it (live on a terminal, plain lines otherwise);
    the display is gone by the time the caller prints the results."""
    from rich.console import Console

    from prefect_wan.display import follow, quiet_prefect_console
    from prefect_wan.flows.progress import watching

    console = Console(stderr=True)
    with watching() as source, quiet_prefect_console(console.is_terminal):
        display = asyncio.ensure_future(follow(source, console))
        try:
            return await flow_call
        finally:
            display.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await display


def _run(coroutine, precheck=None, *, watch: bool = False) -> int:
    """Run a flow (with a spinner, unless it shows its own progress); map what went wrong to an exit code."""
    from rich.console import Console

    from prefect_wan.client.errors import WanError
    from prefect_wan.spend.budget import SkippedForBudgetError

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    console = Console(stderr=True)
    try:
        if precheck is not None:
            asyncio.run(precheck)
        if watch:
            result = asyncio.run(coroutine)
        else:
            with console.status("Generating... (Prefect logs below; tasks take 1-5 minutes on the real service)"):
                result = asyncio.run(coroutine)
    except SkippedForBudgetError as error:
        console.print(f"[yellow]Not submitted:[/yellow] {error}", highlight=False, soft_wrap=True)
        return EXIT_OVER_BUDGET
    except _refusals() as error:
        console.print(f"[red]Refused before sending:[/red] {error}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except (WanError, OSError) as error:
        console.print(f"[red]Failed:[/red] {type(error).__name__}: {error}", highlight=False, soft_wrap=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        # By now the flow's crash hook has canceled its queued tasks and logged what it did.
        console.print(
            "[yellow]Interrupted:[/yellow] tasks still queued at the service were canceled; running ones finish "
            "and bill, and the next run adopts them instead of paying again", highlight=False, soft_wrap=True,
        )
        return EXIT_INTERRUPTED
    finally:
        coroutine.close()  # never started when a check refused the run
    return result


def _options(model, resolution, duration, seed, negative_prompt, prompt_extend, watermark):
    from prefect_wan.flows import GenerationOptions

    return GenerationOptions(
        model=model, resolution=resolution, duration=duration, seed=seed, negative_prompt=negative_prompt,
        prompt_extend=prompt_extend, watermark=watermark,
    )


MODEL = typer.Option("wan2.2-kf2v-flash", help="Model: wan2.2-kf2v-flash, wanx2.1-kf2v-plus (Beijing), wan2.1-kf2v-plus (Singapore), wan2.7-i2v, wan3.0-video(-prime).")
RESOLUTION = typer.Option(None, help="480P, 720P or 1080P (model default when omitted).")
DURATION = typer.Option(None, help="Seconds: 5 for kf2v, 2-15 for wan2.7, 2-30 or -1 (smart) for wan3.0.")
SEED = typer.Option(None, help="Seed in [0, 2147483647].")
NEGATIVE = typer.Option(None, "--negative-prompt", help="What to avoid.")
EXTEND = typer.Option(True, "--prompt-extend/--no-prompt-extend", help="Let the service rewrite the prompt.")
WATERMARK = typer.Option(False, "--watermark/--no-watermark", help="Add the 'AI generated' mark.")
DEST = typer.Option("./wan-archive", "--dest", help="Archive: local path or fsspec URL (s3://bucket/prefix).")
CREDENTIALS = typer.Option(None, "--credentials", help="Name of a saved WanCredentials block.")
REGION = typer.Option(Region.SINGAPORE, help="Region when no block is named (key from DASHSCOPE_API_KEY).")
BASE_URL = typer.Option(None, "--base-url", help="Host override (a proxy or an emulator).")
WORKSPACE = typer.Option(None, "--workspace", help="Workspace id; builds the workspace host in Tokyo, Frankfurt and Virginia.")
EMULATOR = typer.Option(False, "--emulator", help="Run against a local emulator started for this command.")
FORCE = typer.Option(False, "--force", help="Generate again even if archived.")
COORDINATION = typer.Option(None, "--coordination", help="Name of a saved WanCoordination block (shared records and Redis lock, for several machines).")
MAX_COST = typer.Option(None, "--max-cost", help="Most the run may commit, with its currency: '12.5 CNY', '3 USD'. Pairs past it are not submitted.")


@app.command()
def generate(
    first: str = typer.Argument(..., help="First frame: path or URL."),
    last: str = typer.Argument(..., help="Last frame: path or URL."),
    prompt: Optional[str] = typer.Option(None, help="What happens between the frames."),
    label: Optional[str] = typer.Option(None, help="A readable name for the run and the sidecar."),
    model: str = MODEL, resolution: Optional[str] = RESOLUTION, duration: Optional[int] = DURATION,
    seed: Optional[int] = SEED, negative_prompt: Optional[str] = NEGATIVE, prompt_extend: bool = EXTEND,
    watermark: bool = WATERMARK, dest: str = DEST, credentials: Optional[str] = CREDENTIALS, region: Region = REGION,
    base_url: Optional[str] = BASE_URL, emulator: bool = EMULATOR, force: bool = FORCE, workspace: Optional[str] = WORKSPACE,
    max_cost: Optional[str] = MAX_COST, coordination: Optional[str] = COORDINATION,
) -> None:
    """Generate the video between two keyframes and archive it."""
    from prefect_wan.flows import ArchivedVideo, KeyframePair, keyframes_to_video

    options = _options(model, resolution, duration, seed, negative_prompt, prompt_extend, watermark)

    async def run() -> int:
        video = await keyframes_to_video(first, last, prompt=prompt, options=options, label=label,
                                         credentials=creds, destination=dest, force=force, max_cost=max_cost,
                                         coordination=coordination)
        assert isinstance(video, ArchivedVideo)
        typer.echo(f"video: {video.video_url}")
        typer.echo(f"sidecar: {video.sidecar_url}")
        if video.reused:
            typer.echo("(already archived: nothing submitted or downloaded)")
        return EXIT_OK

    with _credentials(credentials, region, base_url, emulator, workspace) as creds:
        try:
            pair = KeyframePair.from_fields(first_frame=first, last_frame=last, prompt=prompt, label=label)
        except _refusals() as error:
            typer.echo(f"Refused before sending: {error}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        raise typer.Exit(_run(run(), _precheck(creds, dest, pair=pair, options=options, max_cost=max_cost)))


@app.command()
def batch(
    manifest: str = typer.Argument(..., help="CSV, JSON or YAML manifest (path or fsspec URL)."),
    model: str = MODEL, resolution: Optional[str] = RESOLUTION, duration: Optional[int] = DURATION,
    seed: Optional[int] = SEED, negative_prompt: Optional[str] = NEGATIVE, prompt_extend: bool = EXTEND,
    watermark: bool = WATERMARK, dest: str = DEST, credentials: Optional[str] = CREDENTIALS, region: Region = REGION,
    base_url: Optional[str] = BASE_URL, emulator: bool = EMULATOR, force: bool = FORCE, workspace: Optional[str] = WORKSPACE,
    max_in_flight: int = typer.Option(6, help="Pairs submitted and not yet finished, at most (the service queues the rest of its slots' work)."),
    max_cost: Optional[str] = MAX_COST, coordination: Optional[str] = COORDINATION,
    fan_out: Optional[str] = typer.Option(None, "--fan-out", help="Run each pair as a run of this pair-flow deployment (keyframes-to-video/NAME) on its work pool."),
) -> None:
    """Generate and archive every pair of a manifest; exit 1 if any pair failed, 3 if the budget left some unsubmitted."""
    from prefect_wan.flows import BatchFailedError, BatchResult, keyframes_batch

    options = _options(model, resolution, duration, seed, negative_prompt, prompt_extend, watermark)

    async def run() -> int:
        try:
            result = await _with_progress(keyframes_batch(manifest=manifest, options=options, credentials=creds, destination=dest,
                                                          max_in_flight=max_in_flight, force=force, max_cost=max_cost,
                                                          coordination=coordination, fan_out=fan_out))
            assert isinstance(result, BatchResult)
        except BatchFailedError as error:
            typer.echo(f"batch: {error}", err=True)
            return EXIT_FAILED
        for video in result.videos:
            typer.echo(f"{video.label}: {video.video_url}" + (" (already archived)" if video.reused else ""))
        for skipped in result.skipped:
            typer.echo(f"{skipped.label}: skipped for budget ({skipped.reason})")
        typer.echo(result.summary)
        return EXIT_OVER_BUDGET if result.skipped else EXIT_OK

    with _credentials(credentials, region, base_url, emulator, workspace) as creds:
        raise typer.Exit(_run(run(), _precheck(creds, dest, manifest=manifest, max_cost=max_cost), watch=True))


@app.command()
def storyboard(
    manifest: str = typer.Argument(..., help="YAML or JSON storyboard: keyframes (in order), prompts, label, overrides."),
    model: str = MODEL, resolution: Optional[str] = RESOLUTION, duration: Optional[int] = DURATION,
    seed: Optional[int] = SEED, negative_prompt: Optional[str] = NEGATIVE, prompt_extend: bool = EXTEND,
    watermark: bool = WATERMARK, dest: str = DEST, credentials: Optional[str] = CREDENTIALS, region: Region = REGION,
    base_url: Optional[str] = BASE_URL, emulator: bool = EMULATOR, force: bool = FORCE, workspace: Optional[str] = WORKSPACE,
    fit: Optional[str] = typer.Option(None, help="pad or crop keyframes of another shape (refused otherwise)."),
    keep_boundary: bool = typer.Option(False, "--keep-boundary", help="Show each inner keyframe twice (once per clip)."),
    max_cost: Optional[str] = MAX_COST, coordination: Optional[str] = COORDINATION,
) -> None:
    """Generate the transitions through every keyframe and stitch them into one video."""
    from prefect_wan.flows import ArchivedStoryboard, keyframes_storyboard
    from prefect_wan.flows.manifest import ManifestError, load_storyboard

    options = _options(model, resolution, duration, seed, negative_prompt, prompt_extend, watermark)
    if fit not in (None, "pad", "crop"):
        typer.echo(f"Refused before sending: --fit={fit!r}: use pad or crop", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        spec = load_storyboard(manifest)
    except ManifestError as error:
        typer.echo(f"Refused before sending: {error}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None

    async def run() -> int:
        board = await _with_progress(keyframes_storyboard(  # type: ignore[misc]
            spec.keyframes, prompts=spec.prompts, options=options, overrides=spec.overrides, label=spec.label,
            credentials=creds, destination=dest, drop_boundary=not keep_boundary, fit=fit, force=force, max_cost=max_cost,  # type: ignore[arg-type]
            coordination=coordination,
        ))
        assert isinstance(board, ArchivedStoryboard)
        typer.echo(f"storyboard: {board.video_url}")
        typer.echo(f"sidecar: {board.sidecar_url}")
        typer.echo(f"{len(board.record.segments)} transitions, joined by {board.record.stitch.method}" + (" (already archived)" if board.reused else ""))
        return EXIT_OK

    with _credentials(credentials, region, base_url, emulator, workspace) as creds:
        raise typer.Exit(_run(run(), _precheck(creds, dest, max_cost=max_cost), watch=True))


@app.command()
def plan(
    manifest: str = typer.Argument(..., help="CSV, JSON or YAML manifest (path or fsspec URL)."),
    model: str = MODEL, resolution: Optional[str] = RESOLUTION, duration: Optional[int] = DURATION,
    seed: Optional[int] = SEED, negative_prompt: Optional[str] = NEGATIVE, prompt_extend: bool = EXTEND,
    watermark: bool = WATERMARK, dest: str = DEST, credentials: Optional[str] = CREDENTIALS, region: Region = REGION,
    base_url: Optional[str] = BASE_URL, force: bool = FORCE, workspace: Optional[str] = WORKSPACE,
    max_cost: Optional[str] = MAX_COST, coordination: Optional[str] = COORDINATION,
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON instead of a table."),
) -> None:
    """Say what a batch would do and cost, pair by pair, without sending anything (a dry run)."""
    from prefect_wan.flows import keyframes_batch
    from prefect_wan.flows.plan import RunPlan

    options = _options(model, resolution, duration, seed, negative_prompt, prompt_extend, watermark)

    async def run() -> int:
        planned = await keyframes_batch(manifest=manifest, options=options, credentials=creds, destination=dest,
                                        force=force, max_cost=max_cost, dry_run=True, coordination=coordination)
        assert isinstance(planned, RunPlan)
        if as_json:
            typer.echo(planned.model_dump_json(indent=2))
        else:
            _print_table(planned.rows(), f"Plan (nothing sent): {planned.summary}")
        return EXIT_OK

    # No key is needed to plan: nothing is sent. The emulator is no use either, for the same reason.
    with _credentials(credentials, region, base_url, False, workspace) as creds:
        raise typer.Exit(_run(run(), _precheck(creds, dest, manifest=manifest, max_cost=max_cost, sends=False)))


def _print_table(rows: list[dict], caption: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console.width = 200  # a pipe or a file: no reason to wrap at 80 columns
    table = Table(caption=caption, caption_justify="left")
    for column in rows[0] if rows else ["(empty)"]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    console.print(table)


@app.command(name="ls")
def list_archive_command(
    dest: str = typer.Argument("./wan-archive", help="Archive: local path or fsspec URL (s3://bucket/prefix)."),
    as_json: bool = typer.Option(False, "--json", help="Print the entries as JSON."),
) -> None:
    """List the archived videos and storyboards, from their sidecars."""
    import json

    from prefect_wan.archive.destination import ArchiveDestination, ArchiveDestinationError
    from prefect_wan.archive.listing import list_archive
    from prefect_wan.flows.plan import cost_text

    try:
        entries, unreadable = list_archive(ArchiveDestination.coerce(dest))
    except ArchiveDestinationError as error:
        typer.echo(f"Cannot list: {error}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if as_json:
        typer.echo(json.dumps({
            "entries": [e.model_dump(mode="json") for e in entries],
            "unreadable": [u.model_dump(mode="json") for u in unreadable],
        }, indent=2))
    else:
        rows = [
            {
                "label": e.label or "", "kind": e.kind, "model": e.model or "", "size": f"{e.width}x{e.height}",
                "duration": f"{e.seconds:g} s", "cost": cost_text(e.cost), "archived": f"{e.archived_at:%Y-%m-%d %H:%M}",
                "prompt": e.prompt_excerpt,
            }
            for e in entries
        ]
        total = len(entries)
        _print_table(rows, f"{total} archived in {dest}" if rows else f"nothing archived in {dest}")
        for bad in unreadable:
            typer.echo(f"unreadable sidecar {bad.path}: {bad.reason}", err=True)
    raise typer.Exit(EXIT_FAILED if unreadable else EXIT_OK)


@app.command()
def limits(
    name: str = typer.Argument("wan-account", help="Name of the concurrency limit; the rate limit is NAME-submit."),
    running: int = typer.Option(2, help="Tasks the account runs at once (2 for kf2v, 5 for wan2.7 and wan3.0), plus what may queue ahead."),
    submits_per_second: float = typer.Option(1.0, help="Submissions per second the account may make (the service allows 1-2)."),
) -> None:
    """Create (or update) the Prefect global limits that every run, on every machine, shares for one account."""
    from prefect_wan.spend.limits import ensure_account_limits

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    concurrency, rate = asyncio.run(ensure_account_limits(name, running=running, submits_per_second=submits_per_second))
    typer.echo(f"concurrency limit {concurrency!r}: {running} at once; rate limit {rate!r}: {submits_per_second:g} submissions/s")
    typer.echo(f"Use: concurrency_limit={concurrency!r}, rate_limit={rate!r} (flow parameters or a WanCoordination block)")


@app.command()
def emulator(
    port: int = typer.Option(8765, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
    region: Region = typer.Option(Region.SINGAPORE, help="Region whose model names are accepted."),
    api_key: Optional[str] = typer.Option(None, help="API key to accept (default: the emulator's fixed key)."),
    pending_seconds: float = typer.Option(1.0, help="Least time a task waits PENDING."),
    running_seconds: float = typer.Option(3.0, help="Time a task spends RUNNING."),
    submit_rps: Optional[float] = typer.Option(None, help="Submissions per second (default: the model's)."),
) -> None:
    """Serve the DashScope emulator until interrupted."""
    from prefect_wan.emulator import EmulatorConfig, serve_forever

    config = EmulatorConfig(
        region=region, pending_seconds=pending_seconds, running_seconds=running_seconds, submit_rps=submit_rps,
    )
    if api_key:
        config = config.model_copy(update={"api_keys": [api_key]})
    typer.echo(f"DashScope emulator ({region.value}) at http://{host}:{port}")
    typer.echo(f"API key: {config.api_keys[0]}")
    typer.echo(f"Use: WanCredentials(base_url='http://{host}:{port}', api_key=..., region='{region.value}')")
    serve_forever(config, host=host, port=port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
