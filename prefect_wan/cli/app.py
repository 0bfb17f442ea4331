"""The ``prefect-wan`` command: generate one video, run a batch manifest or a storyboard, plan,
list the archive, set the account's limits, or run the emulator. Exit codes: ``prefect_wan.cli.exits``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer

from prefect_wan.cli.ahead import head_start
from prefect_wan.cli.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_OVER_BUDGET
from prefect_wan.cli.options import EMULATOR, GenerationFlags, ReviewFlags, TargetFlags, block_of
from prefect_wan.cli.running import precheck, prepare_transitions, print_table, refusal_text, refusals, run, with_progress
from prefect_wan.client.regions import Region
from prefect_wan.signatures import expand_groups

app = typer.Typer(help="Wan first-and-last-frame videos with Prefect.", no_args_is_help=True, add_completion=False)
MANIFEST = typer.Argument(..., help="CSV, JSON or YAML manifest (path or fsspec URL).")


@app.callback()
def _group() -> None:
    """Wan first-and-last-frame videos with Prefect."""


@app.command()
@expand_groups
def generate(
    first: str = typer.Argument(..., help="First frame: path or URL."),
    last: str = typer.Argument(..., help="Last frame: path or URL."),
    prompt: Optional[str] = typer.Option(None, help="What happens between the frames."),
    label: Optional[str] = typer.Option(None, help="A readable name for the run and the sidecar."),
    emulator: bool = EMULATOR,
    how: GenerationFlags = GenerationFlags(),
    where: TargetFlags = TargetFlags(),
) -> None:
    """Generate the video between two keyframes and archive it."""
    from prefect_wan.flows.models import KeyframePair

    options = how.options()
    with where.service(emulator) as credentials:
        try:
            pair = KeyframePair.from_fields(first_frame=first, last_frame=last, prompt=prompt, label=label)
        except refusals() as error:
            typer.echo(f"Refused before sending: {refusal_text(error)}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None

        async def generate_pair() -> int:
            from prefect_wan.cli.server import temporary_server_ready
            from prefect_wan.flows import ArchivedVideo, keyframes_to_video

            await temporary_server_ready()
            video = await keyframes_to_video(
                first,
                last,
                prompt=prompt,
                options=options,
                label=label,
                credentials=block_of(credentials),
                destination=where.dest,
                force=where.force,
                max_cost=where.max_cost,
                coordination=where.coordination,
            )
            assert isinstance(video, ArchivedVideo)
            typer.echo(f"video: {video.video_url}")
            typer.echo(f"sidecar: {video.sidecar_url}")
            if video.reused:
                typer.echo("(already archived: nothing submitted or downloaded)")
            return EXIT_OK

        check = precheck(credentials, where.dest, pair=pair, options=options, max_cost=where.max_cost)
        ahead = head_start(credentials, where, options, pair=pair)
        raise typer.Exit(run(generate_pair(), check, verbose=where.verbose, ahead=ahead))


@app.command()
@expand_groups
def batch(
    manifest: str = MANIFEST,
    max_in_flight: int = typer.Option(6, help="Pairs submitted and not yet finished, at most (the service queues the rest of its slots' work)."),
    fan_out: Optional[str] = typer.Option(
        None, "--fan-out", help="Run each pair as a run of this pair-flow deployment (keyframes-to-video/NAME) on its work pool."
    ),
    emulator: bool = EMULATOR,
    how: GenerationFlags = GenerationFlags(),
    where: TargetFlags = TargetFlags(),
    drafts: ReviewFlags = ReviewFlags(),
) -> None:
    """Generate and archive every pair of a manifest; exit 1 if any pair failed, 3 if the budget left some unsubmitted."""
    with where.service(emulator) as credentials:

        async def run_batch() -> int:
            from prefect_wan.flows import BatchFailedError, BatchResult, keyframes_batch

            try:
                result = await with_progress(
                    keyframes_batch(
                        manifest=manifest,
                        options=how.options(),
                        credentials=block_of(credentials),
                        destination=where.dest,
                        max_in_flight=max_in_flight,
                        force=where.force,
                        max_cost=where.max_cost,
                        coordination=where.coordination,
                        fan_out=fan_out,
                        review=drafts.settings(),
                    ),
                    review=drafts.settings() is not None,
                )
                assert isinstance(result, BatchResult)
            except BatchFailedError as error:
                if error.result is None:
                    typer.echo(f"batch: {error}", err=True)
                    return EXIT_FAILED
                result = error.result
                for failure in result.failures:  # one line each, the whole reason; the tracebacks are in Prefect's logs
                    reason = "; ".join(line.strip(" -") for line in failure.message.splitlines() if line.strip(" -")) if failure.message else ""
                    typer.echo(f"{failure.label}: failed: {failure.code or failure.error}: {reason}", err=True)
            for video in result.videos:
                typer.echo(f"{video.label}: {video.video_url}" + (" (already archived)" if video.reused else ""))
            for skipped in result.skipped:
                typer.echo(f"{skipped.label}: skipped for budget ({skipped.reason})")
            for label in result.dropped:
                typer.echo(f"{label}: dropped in review (its drafts are archived)")
            if result.unsubmitted:
                typer.echo(f"Left unsubmitted, nothing paid ({len(result.unsubmitted)}): {', '.join(result.unsubmitted)}", err=True)
                typer.echo(f"Because {result.outage}. Run the batch again once the service answers.", err=True)
            typer.echo(result.headline)
            return EXIT_FAILED if result.failures or result.unsubmitted else EXIT_OVER_BUDGET if result.skipped else EXIT_OK

        ahead = head_start(credentials, where, how.options(), review=drafts.settings() is not None, fan_out=fan_out is not None)

        async def check() -> None:
            pairs = await precheck(
                credentials, where.dest, manifest=manifest, options=how.options(), max_cost=where.max_cost, region=where.region.value, review=drafts.settings()
            )
            if ahead is not None and pairs:
                ahead.pair = pairs[0]

        raise typer.Exit(run(run_batch(), check(), watch=True, verbose=where.verbose, ahead=ahead))


@app.command()
@expand_groups
def storyboard(
    manifest: str = typer.Argument(..., help="YAML or JSON storyboard: keyframes (in order), prompts, label, overrides."),
    fit: Optional[str] = typer.Option(None, help="pad or crop keyframes of another shape (refused otherwise)."),
    keep_boundary: bool = typer.Option(False, "--keep-boundary", help="Show each inner keyframe twice (once per clip)."),
    emulator: bool = EMULATOR,
    how: GenerationFlags = GenerationFlags(),
    where: TargetFlags = TargetFlags(),
    drafts: ReviewFlags = ReviewFlags(),
) -> None:
    """Generate the transitions through every keyframe and stitch them into one video."""
    from prefect_wan.flows.manifest import ManifestError, load_storyboard

    if fit not in (None, "pad", "crop"):
        typer.echo(f"Refused before sending: --fit={fit!r}: use pad or crop", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        spec = load_storyboard(manifest)
    except ManifestError as error:
        typer.echo(f"Refused before sending: {refusal_text(error)}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    with where.service(emulator) as credentials:

        async def run_storyboard() -> int:
            from prefect_wan.flows import ArchivedStoryboard, keyframes_storyboard

            board = await with_progress(
                keyframes_storyboard(
                    spec.keyframes,
                    prompts=spec.prompts,
                    options=how.options(),
                    overrides=spec.overrides,
                    label=spec.label,
                    credentials=block_of(credentials),
                    destination=where.dest,
                    drop_boundary=not keep_boundary,
                    fit=fit,
                    force=where.force,
                    max_cost=where.max_cost,
                    coordination=where.coordination,
                    review=drafts.settings(),
                ),
                review=drafts.settings() is not None,
            )
            assert isinstance(board, ArchivedStoryboard)
            typer.echo(f"storyboard: {board.video_url}")
            typer.echo(f"sidecar: {board.sidecar_url}")
            typer.echo(f"{len(board.record.segments)} transitions, joined by {board.record.stitch.method}" + (" (already archived)" if board.reused else ""))
            return EXIT_OK

        from prefect_wan.flows.transitions import storyboard_fingerprint, transitions

        try:
            pairs = transitions(spec.keyframes, spec.prompts, spec.overrides, spec.label)
        except refusals() as error:
            typer.echo(f"Refused before sending: {refusal_text(error)}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        ahead = head_start(credentials, where, how.options(), review=drafts.settings() is not None)

        async def check() -> None:
            await precheck(
                credentials, where.dest, pairs=pairs, options=how.options(), max_cost=where.max_cost, region=where.region.value, review=drafts.settings()
            )
            if isinstance(credentials, str):
                return  # a saved block: the run reads the keyframes, once Prefect has loaded it
            prepared = await prepare_transitions(credentials, pairs, how.options(), fit)
            if ahead is not None:
                ahead.pair = pairs[0]
                ahead.whole = storyboard_fingerprint([p.fingerprint for p in prepared], drop_boundary=not keep_boundary, fit=fit)

        raise typer.Exit(run(run_storyboard(), check(), watch=True, verbose=where.verbose, ahead=ahead))


@app.command()
@expand_groups
def plan(
    manifest: str = MANIFEST,
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON instead of a table."),
    emulator: bool = typer.Option(False, "--emulator", help="Plan against a local emulator: what --emulator runs archived is found (nothing is sent)."),
    how: GenerationFlags = GenerationFlags(),
    where: TargetFlags = TargetFlags(),
    drafts: ReviewFlags = ReviewFlags(),
) -> None:
    """Say what a batch would do and cost, pair by pair, without sending anything (a dry run).

    Starts no Prefect server: the plan's table artifact is written only when one is configured
    (PREFECT_API_URL). Exit 2 when a pair is refused."""

    # No key is needed to plan: nothing is sent. With --emulator, the archive is looked up under the
    # emulator's endpoint, where --emulator runs archive their videos.
    with where.service(emulator) as credentials:

        async def plan_batch() -> int:
            from prefect.settings import PREFECT_API_URL

            from prefect_wan.archive.destination import ArchiveDestination
            from prefect_wan.blocks import WanCoordination
            from prefect_wan.blocks.coordination import resolve_coordination
            from prefect_wan.flows.batch import unique_labels
            from prefect_wan.flows.manifest import load_manifest
            from prefect_wan.flows.plan import PlannedAction, plan_pairs
            from prefect_wan.flows.reporting import artifact_key, report_plan
            from prefect_wan.flows.setup import resolve_credentials
            from prefect_wan.spend.budget import Budget

            pairs = unique_labels(await asyncio.to_thread(load_manifest, manifest))
            coordination = await resolve_coordination(where.coordination) if where.coordination else WanCoordination()
            planned = await plan_pairs(
                pairs,
                how.options(),
                await resolve_credentials(block_of(credentials)),
                ArchiveDestination.coerce(where.dest),
                budget=Budget.coerce(where.max_cost),
                force=where.force,
                coordination=coordination,
                review=drafts.settings(),
            )
            if PREFECT_API_URL.value():
                await report_plan(planned, key=artifact_key("wan-plan"))
            if as_json:
                typer.echo(planned.model_dump_json(indent=2))
            else:
                print_table(planned.rows(), f"Plan (nothing sent): {planned.summary}")
            return EXIT_BAD_INPUT if any(p.action is PlannedAction.REFUSED for p in planned.pairs) else EXIT_OK

        raise typer.Exit(
            run(plan_batch(), precheck(credentials, where.dest, manifest=manifest, max_cost=where.max_cost, sends=False), quiet=True, needs_prefect=False)
        )


@app.command()
def review(
    flow_run: str = typer.Argument(..., help="The waiting flow run: its name (the newest of that name) or its id."),
    approve: list[str] = typer.Option([], "--approve", help="LABEL of a draft to approve (render its final). Repeatable."),
    retake: list[str] = typer.Option([], "--retake", help="LABEL of a draft to take again with another seed. Repeatable."),
    drop: list[str] = typer.Option([], "--drop", help="LABEL of a draft to drop (no final). Repeatable."),
    prompt: list[str] = typer.Option([], "--prompt", help="LABEL=TEXT: a new prompt for a retaken draft. Repeatable."),
    approve_passing: bool = typer.Option(False, "--approve-passing", help="Approve every draft whose checks pass and that is not named."),
) -> None:
    """List the drafts a run waits on for review, and answer them (as the Prefect UI's form does).

    Without answers, a terminal is asked draft by draft; a pipe gets the list only. Needs the
    Prefect server the run is on (PREFECT_API_URL)."""
    from prefect.settings import PREFECT_API_URL
    from rich.console import Console

    from prefect_wan.cli.review import ask, show
    from prefect_wan.flows.review import ReviewAnswerError, ReviewClosedError, answer_review, find_review

    if not PREFECT_API_URL.value():
        typer.echo(
            "No Prefect server configured (PREFECT_API_URL): a run waits for review on its server; a CLI run without one asks in its own terminal",
            err=True,
        )
        raise typer.Exit(EXIT_BAD_INPUT)
    prompts = dict(item.partition("=")[::2] for item in prompt)
    if bad := [item for item in prompt if "=" not in item]:
        typer.echo(f"--prompt {bad[0]!r}: give LABEL=TEXT", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    console = Console(stderr=True)

    async def answer() -> int:
        request = await find_review(flow_run)
        show(request, Console())
        if not (approve or retake or drop or approve_passing):
            if not console.is_terminal:
                return EXIT_OK
            answers = await asyncio.to_thread(ask, request, console)
        else:
            answers = request.answer(approve=approve, retake=retake, drop=drop, approve_passing=approve_passing, prompts=prompts)
        how = await answer_review(request, answers)
        decided = ", ".join(f"{label} {decision}" for label, (decision, _) in request.decisions(answers).items())
        if how == "kept":
            typer.echo(
                f"{request.run_name} is no longer waiting: its process is gone (the run is marked Crashed). Kept for its re-run, "
                f"which takes it without asking: round {request.round}: {decided}"
            )
        else:
            typer.echo(f"answered round {request.round} of {request.run_name}: {decided}")
        return EXIT_OK

    try:
        raise typer.Exit(asyncio.run(answer()))
    except ReviewClosedError as error:
        typer.echo(f"Not answered: {error}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except ReviewAnswerError as error:
        typer.echo(f"Not answered: {error}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


@app.command()
def check(
    target: str = typer.Argument(..., help="A video (path or fsspec URL), or an archive to check again from its stored profiles."),
    first: Optional[str] = typer.Option(None, "--first", help="The first keyframe the video should start on."),
    last: Optional[str] = typer.Option(None, "--last", help="The last keyframe the video should reach."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Seconds the video should last."),
    thresholds: Optional[str] = typer.Option(None, "--thresholds", help="A JSON or YAML file of ShotThresholds fields (the rest keep their defaults)."),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
) -> None:
    """Check a video for what Wan gets wrong (exit 0 passed, 1 flagged, 2 refused), or apply other
    thresholds to every archived shot from its stored motion profile, reading no video."""
    from prefect_wan.cli.check import check_archive, check_file, load_thresholds

    limits = load_thresholds(thresholds)
    video_like = Path(target).is_file() or Path(target).suffix.lower() in (".mp4", ".mov", ".mkv", ".webm", ".avi")
    if video_like or first or last or duration is not None:
        raise typer.Exit(check_file(target, first, last, duration, limits, as_json))
    raise typer.Exit(check_archive(target, limits, as_json))


@app.command(name="ls")
def list_archive_command(
    dest: str = typer.Argument("./wan-archive", help="Archive: local path or fsspec URL (s3://bucket/prefix)."),
    as_json: bool = typer.Option(False, "--json", help="Print the entries as JSON."),
) -> None:
    """List the archived videos and storyboards, from their sidecars."""
    import json

    from prefect_wan.archive.destination import ArchiveDestination
    from prefect_wan.archive.errors import ArchiveDestinationError
    from prefect_wan.archive.listing import list_archive
    from prefect_wan.flows.plan import cost_text

    try:
        entries, unreadable = list_archive(ArchiveDestination.coerce(dest))
    except ArchiveDestinationError as error:
        typer.echo(f"Cannot list: {error}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "entries": [e.model_dump(mode="json") for e in entries],
                    "unreadable": [u.model_dump(mode="json") for u in unreadable],
                },
                indent=2,
            )
        )
    else:
        rows = [
            {
                "label": e.label or "",
                "kind": e.kind,
                "model": (e.model or "") + (" (emulator)" if e.rendered_by else ""),
                "size": f"{e.width}x{e.height}",
                "duration": f"{e.seconds:g} s",
                "cost": cost_text(e.cost),
                "checks": e.checks_text,
                "archived": f"{e.archived_at:%Y-%m-%d %H:%M}",
                "prompt": e.prompt_excerpt,
            }
            for e in entries
        ]
        total = len(entries)
        print_table(rows, f"{total} archived in {dest}" if rows else f"nothing archived in {dest}")
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
    from prefect_wan.cli.limits import ensure_account_limits

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
    save_block: Optional[str] = typer.Option(
        None, "--save-block", help="Save its credentials as a WanCredentials block of this name on the Prefect server (PREFECT_API_URL) first."
    ),
) -> None:
    """Serve the DashScope emulator until interrupted."""
    from prefect_wan.emulator import EmulatorConfig, serve_forever

    config = EmulatorConfig(
        region=region,
        pending_seconds=pending_seconds,
        running_seconds=running_seconds,
        submit_rps=submit_rps,
    )
    if api_key:
        config = config.model_copy(update={"api_keys": [api_key]})
    if save_block:
        from prefect.settings import PREFECT_API_URL
        from pydantic import SecretStr

        from prefect_wan.blocks import WanCredentials

        if not PREFECT_API_URL.value():
            typer.echo("--save-block: no Prefect server configured (PREFECT_API_URL): the deployments' server is where the block goes", err=True)
            raise typer.Exit(EXIT_BAD_INPUT)
        block = WanCredentials(api_key=SecretStr(config.api_keys[0]), region=region.value, base_url=f"http://{host}:{port}")
        block.save(save_block, overwrite=True)
        typer.echo(f"Saved the emulator's credentials as the WanCredentials block {save_block!r} on {PREFECT_API_URL.value()}")
    typer.echo(f"DashScope emulator ({region.value}) at http://{host}:{port}")
    typer.echo(f"API key: {config.api_keys[0]}")
    typer.echo(f"Use: WanCredentials(base_url='http://{host}:{port}', api_key='{config.api_keys[0]}', region='{region.value}')")
    serve_forever(config, host=host, port=port)


def main() -> None:
    app()
