"""Running a flow from the CLI: checks before Prefect starts, progress beside it, exit codes after."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Coroutine, Iterator, Optional, TypeVar, Union

from rich.console import Console

from prefect_wan.cli.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OVER_BUDGET
from prefect_wan.cli.options import announce
from prefect_wan.cli.prefect_home import unopenable_database

if TYPE_CHECKING:  # imported where used: a refusal must not wait for Prefect's flows to import
    from prefect_wan.cli.ahead import HeadStart
    from prefect_wan.client.access import ServiceAccess
    from prefect_wan.flows.drafts import Review
    from prefect_wan.flows.models import GenerationOptions, KeyframePair
    from prefect_wan.flows.prepared import PreparedPair
    from prefect_wan.ledger.places import PrefectPlaces

T = TypeVar("T")


def refusals() -> tuple[type[BaseException], ...]:
    """What is refused before anything is sent."""
    from prefect_wan.archive.errors import ArchiveDestinationError
    from prefect_wan.client.errors import MissingApiKeyError, PreflightError
    from prefect_wan.flows.manifest import ManifestError
    from prefect_wan.spend.budget import SkippedForBudgetError

    return (PreflightError, ManifestError, MissingApiKeyError, ArchiveDestinationError, SkippedForBudgetError)


def check_all(pairs: list[KeyframePair], options: GenerationOptions, region: str, review: Optional[Review] = None) -> None:
    """Every pair's rules that need no I/O (a wrong option refuses them all) and its local frames'
    existence, and its draft's rules with ``review``: one refusal, each broken rule named once, with
    how many pairs break it."""
    from prefect_wan.client.errors import PreflightError, PreflightViolation
    from prefect_wan.client.images import missing_local_file
    from prefect_wan.client.preflight import check_request

    if review is not None:
        from prefect_wan.flows.drafts import check_draftable, draft_changes
    broken: dict[str, tuple[PreflightViolation, list[str]]] = {}
    for pair in pairs:
        for field in ("first_frame", "last_frame"):  # a frame that is not there: found now, not when its pair is sent
            if (why := missing_local_file(getattr(pair, field))) is not None:
                violation = PreflightViolation(field, getattr(pair, field), why)
                broken.setdefault(str(violation), (violation, []))[1].append(pair.display_label())
        try:
            checked = check_request(pair.to_request(options), region)
            if review is not None:
                check_draftable(review, checked.spec, checked.parameters.resolution)
                check_request(pair.model_copy(update=draft_changes(review)).to_request(options), region)
        except PreflightError as refused:
            for violation in refused.violations:
                broken.setdefault(str(violation), (violation, []))[1].append(pair.display_label())
    if broken:
        raise PreflightError(
            [
                PreflightViolation(
                    v.field, v.value, v.rule + (f" ({len(labels)} pairs: {', '.join(labels[:3])}{'...' if len(labels) > 3 else ''})" if len(pairs) > 1 else "")
                )
                for v, labels in broken.values()
            ]
        )


def refusal_text(error: BaseException) -> str:
    """What was refused, without saying "refused before sending" twice; one rule on one line."""
    from prefect_wan.client.errors import PreflightError

    if isinstance(error, PreflightError) and len(error.violations) == 1:
        return str(error.violations[0])
    return str(error).removeprefix("request refused before sending ").strip()


async def precheck(
    credentials: Union[ServiceAccess, str],
    dest: str,
    *,
    manifest: Optional[str] = None,
    pair: Optional[KeyframePair] = None,
    options: Optional[GenerationOptions] = None,
    max_cost: Optional[str] = None,
    sends: bool = True,
    pairs: Optional[list[KeyframePair]] = None,
    region: str = "singapore",
    review: Optional[Review] = None,
) -> Optional[list[KeyframePair]]:
    """Everything that can be refused without sending, checked before Prefect (or its temporary
    server) starts: the budget, the key, the archive, the manifest or the pairs' rules (each pair's
    rules that need no I/O, with ``options``), or the pair and its frames (the pair prepared here is
    handed over to the run, which does not read its frames again).
    ``sends=False`` (a plan): no key is needed and nothing is written. Returns the pairs checked."""
    from prefect_wan.archive.destination import ArchiveDestination
    from prefect_wan.client.access import ServiceAccess
    from prefect_wan.flows.manifest import load_manifest
    from prefect_wan.flows.prepared import hand_over
    from prefect_wan.spend.budget import Budget

    budget = Budget.coerce(max_cost)
    where = credentials.region.value if isinstance(credentials, ServiceAccess) else region
    # A saved block's region is known only once Prefect loads it: the run says its prices then.
    if options is not None and isinstance(credentials, ServiceAccess):
        from prefect_wan.cli.options import NOTICES
        from prefect_wan.client.errors import PreflightError, PreflightViolation
        from prefect_wan.spend.pricing import price_currency, unpriced_notice

        currency = price_currency(options.model, where)
        if currency is None:  # said once here, not on every line of the run
            NOTICES.append(unpriced_notice(options.model, where))
        elif budget is not None and currency != budget.currency:
            raise PreflightError(
                [PreflightViolation("max_cost", max_cost, f"{options.model} in {where} is priced in {currency}: give the budget in {currency}")]
            )
    if sends:
        if isinstance(credentials, ServiceAccess):
            credentials.resolved_api_key()
        await asyncio.to_thread(ArchiveDestination.coerce(dest).check_writable)
    if manifest is not None:
        pairs = await asyncio.to_thread(load_manifest, manifest)
    if pairs and options is not None:
        check_all(pairs, options, where, review)
    if pair is not None and options is not None and isinstance(credentials, ServiceAccess):
        async with credentials.client() as client:
            hand_over(await client.prepare(pair.to_request(options)))
    return pairs


async def prepare_transitions(access: ServiceAccess, pairs: list[KeyframePair], options: GenerationOptions, fit: Optional[str]) -> list[PreparedPair]:
    """A storyboard's transitions, every keyframe read once and handed to the run; refused
    (``PreflightError``) when they would make videos of different sizes and ``fit`` is not given."""
    from prefect_wan.flows.prepared import PreparedPair, hand_over
    from prefect_wan.flows.transitions import check_shapes

    async with access.client() as client:
        prepared = [PreparedPair.of(pair, await client.prepare(pair.to_request(options))) for pair in pairs]
    check_shapes(prepared, fit)
    for pair in prepared:
        hand_over(pair.prepared)
    return prepared


async def with_progress(flow_call: Awaitable[T], *, review: bool = False) -> T:
    """A flow call with its progress shown beside it (live on a terminal, plain lines otherwise);
    the display is gone by the time the caller prints the results. With ``review``, a run waiting
    for review is asked in this terminal when no Prefect server is configured (the temporary one
    has no one looking at its UI), and pointed to the UI when one is."""
    from prefect.settings import PREFECT_API_URL

    from prefect_wan.cli.display import LIVE_REFRESH_SECONDS, follow, quiet_prefect_console
    from prefect_wan.cli.review import ask_here, point_to_ui
    from prefect_wan.cli.server import started_here, temporary_server_ready
    from prefect_wan.flows.progress import watching
    from prefect_wan.flows.review import ReviewRequest, reviewing

    console = Console(stderr=True)
    on_server = bool(PREFECT_API_URL.value()) and not started_here()  # a temporary server of this command is none
    asking = asyncio.Event()

    async def reviewer(request: ReviewRequest) -> None:
        if on_server:
            await point_to_ui(request, console)
            return
        asking.set()
        await asyncio.sleep(2 * LIVE_REFRESH_SECONDS)  # the live display steps aside first
        try:
            await ask_here(request, console)
        finally:
            asking.clear()

    with contextlib.ExitStack() as stack:
        source = stack.enter_context(watching())
        stack.enter_context(quiet_prefect_console(logging.WARNING if console.is_terminal else logging.NOTSET))
        if review:
            stack.enter_context(reviewing(reviewer))
        display = asyncio.ensure_future(follow(source, console, asking.is_set))
        try:
            try:
                await temporary_server_ready()
            except BaseException:
                if inspect.iscoroutine(flow_call):
                    flow_call.close()  # never started: no "was never awaited" on Ctrl-C
                raise
            return await flow_call
        finally:
            display.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await display


@contextlib.contextmanager
def _where_to_watch(console: Console) -> Iterator[None]:
    """With a Prefect server of the user's configured, the first run's name and UI link, in one line."""
    from prefect.settings import PREFECT_API_URL

    from prefect_wan.cli.server import started_here
    from prefect_wan.flows.started import telling_starts

    told: list[str] = []

    def tell(name: str, url: Optional[str]) -> None:
        if told or not PREFECT_API_URL.value() or started_here():
            return  # once; a temporary server of this command has nobody looking at its UI
        told.append(name)
        console.print(f"Run {name}" + (f": {url}" if url else f" on {PREFECT_API_URL.value()}"), highlight=False, soft_wrap=True)

    with telling_starts(tell):
        yield


def run(
    coroutine: Coroutine[Any, Any, int],
    check: Optional[Coroutine[Any, Any, object]] = None,
    *,
    watch: bool = False,
    quiet: bool = False,
    needs_prefect: bool = True,
    verbose: bool = False,
    ahead: Optional[HeadStart] = None,
) -> int:
    """Run a flow (with a spinner, unless it shows its own progress or is ``quiet``); map what went
    wrong to an exit code. ``ahead``: the first pair, sent once every check has passed and before
    Prefect is imported (see ``cli.ahead``)."""
    from prefect_wan.client.errors import WanError
    from prefect_wan.ledger.places import PrefectPlaces
    from prefect_wan.spend.budget import SkippedForBudgetError

    console = Console(stderr=True)
    places = PrefectPlaces.read() if needs_prefect else None
    try:
        if check is not None:
            asyncio.run(check)
        announce()
        if needs_prefect and (why := unopenable_database(places)) is not None:
            console.print(f"[red]Cannot start Prefect:[/red] {why}", highlight=False, soft_wrap=True)
            return EXIT_BAD_INPUT
        if ahead is not None and places is not None:
            asyncio.run(ahead.send(places))
        from prefect_wan.cli.display import quiet_prefect_console

        # Prefect's own logs (a temporary server starting, tracebacks) stay in Prefect unless asked for.
        with quiet_prefect_console(logging.NOTSET if verbose else logging.CRITICAL):
            with contextlib.ExitStack() as stack:
                if needs_prefect:
                    from prefect_wan.cli.server import temporary_server

                    stack.enter_context(temporary_server())  # every refusal has passed: it starts while the run imports and prepares
                    stack.enter_context(_where_to_watch(console))
                if not (watch or quiet):
                    stack.enter_context(console.status("Generating... (tasks take 1-5 minutes on the real service; --verbose shows Prefect's logs)"))
                result = asyncio.run(coroutine)
    except SkippedForBudgetError as error:
        console.print(f"[yellow]Not submitted:[/yellow] {error}", highlight=False, soft_wrap=True)
        return EXIT_OVER_BUDGET
    except refusals() as error:
        console.print(f"[red]Refused before sending:[/red] {refusal_text(error)}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except (WanError, OSError) as error:
        console.print(f"[red]Failed:[/red] {type(error).__name__}: {error}", highlight=False, soft_wrap=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        # By now the flow's crash hook has canceled its queued tasks: say what it did.
        from prefect_wan.flows.cancellation import stopped_in_this_process

        # The report says what became of each task; without one, what the crash hook does in general.
        done = "; ".join(report.describe() for report in stopped_in_this_process()) or (
            "tasks still queued at the service were canceled; running ones finish and bill, and the next run adopts them instead of paying again"
        )
        console.print(f"[yellow]Interrupted:[/yellow] {done}", highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    finally:
        coroutine.close()  # never started when a check refused the run
        if ahead is not None and places is not None:
            _cancel_untaken(ahead, places, console)
    return result


def _cancel_untaken(ahead: HeadStart, places: PrefectPlaces, console: Console) -> None:
    from prefect_wan.cli.ahead import cancel_untaken

    try:
        said = asyncio.run(cancel_untaken(ahead.access, places))
    except Exception as error:  # the journal keeps the task: the next run adopts it
        said = f"the first pair's task, sent before the run started, could not be cancelled ({error}); the next run adopts it"
    if said:
        console.print(f"[yellow]Not taken by the run:[/yellow] {said}", highlight=False, soft_wrap=True)


def print_table(rows: list[dict[str, Any]], caption: str) -> None:
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
