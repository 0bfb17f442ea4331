"""How well a batch keeps the account busy, and what watching tasks costs, side by side for:

- prefect-wan: the per-account task watcher, pairs submitted ahead into the service's queue;
- the official SDK's ``VideoSynthesis.wait`` loop (its schedule: a GET at once, then after 1, 1, 2,
  2, 2, 4, 4, 4, then every 5 s), one pair per slot as ``call()`` is used;
- a plain loop asking every 15 s, one pair per slot.

All against the emulator, with real generation times (120 s) scaled down by ``--scale``; figures are
printed back in real seconds. Figures: makespan / ideal for 50 pairs, queries per task, the median
and p95 detection lag (task end in the emulator to our noticing), and the total query rate with 100
and 500 tasks in flight. ``--flow`` also times the real ``keyframes_batch`` flow; ``--soak`` runs 10
batches of 50 pairs with 20 in flight and connections dropped on create, counting unknown outcomes
and double submissions.

    python bench/scheduler.py [--scale 0.025] [--flow] [--soak]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-wan-bench-")

from prefect_wan.client import KeyframeVideoRequest  # noqa: E402
from prefect_wan.client.client import DashScopeClient  # noqa: E402
from prefect_wan.client.polling import PollSchedule  # noqa: E402
from prefect_wan.client.watcher import TaskWatcher  # noqa: E402
from prefect_wan.client.wire import TaskStatus  # noqa: E402
from prefect_wan.emulator import run_emulator  # noqa: E402
from prefect_wan.flows.batch import DEFAULT_IN_FLIGHT  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "prefect_wan" / "examples"
GENERATION = 120.0  # seconds a real task runs
SLOTS = 2
MODEL = "wan2.2-kf2v-flash"
SDK_GAPS = [1, 1, 2, 2, 2, 4, 4, 4]  # then 5 s forever


def scaled(scale: float) -> PollSchedule:
    default = PollSchedule()
    fields = ("initial_delay", "interval", "max_interval", "due_interval", "sweep_interval", "expected_generation", "max_error_gap")
    return default.model_copy(update={name: getattr(default, name) * scale for name in fields})


Waiter = Callable[[DashScopeClient, str], Awaitable[None]]


def sdk_waiter(scale: float) -> Waiter:
    async def wait(client: DashScopeClient, task_id: str) -> None:
        step = 0
        while True:
            response = await client.get_task(task_id)
            if response.output.task_status not in (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUSPENDED):
                return
            await asyncio.sleep((SDK_GAPS[step] if step < len(SDK_GAPS) else 5) * scale)
            step += 1

    return wait


def plain_waiter(scale: float) -> Waiter:
    async def wait(client: DashScopeClient, task_id: str) -> None:
        while True:
            await asyncio.sleep(15 * scale)
            response = await client.get_task(task_id)
            if response.output.task_status not in (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUSPENDED):
                return

    return wait


def watcher_waiter(watcher: TaskWatcher) -> Waiter:
    async def wait(client: DashScopeClient, task_id: str) -> None:
        try:
            await watcher.wait(task_id, model=MODEL)
        except Exception:  # noqa: BLE001 - a failed task is noticed all the same
            pass

    return wait


def request() -> KeyframeVideoRequest:
    return KeyframeVideoRequest(first_frame=EXAMPLES / "first.png", last_frame=EXAMPLES / "last.png", prompt="bench", resolution="480P")


async def _batch(emu, waiter_for: Callable[[DashScopeClient], Waiter], pairs: int, in_flight: int):
    """Submit, wait, download, with at most ``in_flight`` submitted and unfinished."""
    lags: list[float] = []
    gate = asyncio.Semaphore(in_flight)
    async with emu.credentials().get_client() as client:
        call = await client.build_create_call(await client.prepare(request()))
        waiter = waiter_for(client)

        async def one() -> None:
            async with gate:
                submitted = await client.send_create(call)
                await waiter(client, submitted.task_id)
                task = emu.state.tasks[submitted.task_id]
                # The task's end by the emulator's rule, not the moment a query happened to observe it.
                lags.append(time.monotonic() - (task.scheduled + emu.config.running_seconds))
                response = await client.get_task(submitted.task_id)
            if response.output.video_url:
                await client.http.get(response.output.video_url)  # the archive's download, after the slot is free

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(pairs)))
        return time.monotonic() - started, lags


# The emulator's scheduler ticks this often, so task ends are not quantised to its default 50 ms.
TICK = 0.002


def scenario_batch(name: str, scale: float, waiter_for, in_flight: int, pairs: int = 50) -> dict:
    with run_emulator(pending_seconds=0.05, running_seconds=GENERATION * scale, submit_rps=2.0, tick_seconds=TICK) as emu:
        makespan, lags = asyncio.run(_batch(emu, waiter_for, pairs, in_flight))
        counters = emu.counters()
    ideal = pairs / SLOTS * GENERATION * scale
    queries = counters.queries + counters.lists
    lags_real = sorted(lag / scale for lag in lags)
    return {
        "name": name,
        "in_flight": in_flight,
        "ratio": makespan / ideal,
        "per_task": queries / pairs,
        "lag_median": statistics.median(lags_real),
        "lag_p95": lags_real[int(0.95 * (len(lags_real) - 1))],
    }


async def _rate(emu, waiter_for, tasks: int, window: float) -> float:
    async with emu.credentials(min_submit_interval=0).get_client() as client:
        call = await client.build_create_call(await client.prepare(request()))
        ids = [(await client.send_create(call)).task_id for _ in range(tasks)]
        waiter = waiter_for(client)
        before = emu.counters()
        waiting = [asyncio.create_task(waiter(client, task_id)) for task_id in ids]
        await asyncio.sleep(window)
        after = emu.counters()
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
    return (after.queries + after.lists - before.queries - before.lists) / window


def scenario_rate(scale: float, waiter_for, tasks: int) -> float:
    """Queries per real second while ``tasks`` are in flight (2 running, the rest queued)."""
    with run_emulator(pending_seconds=0.05, running_seconds=GENERATION * scale, submit_rps=10_000.0, queue_limit=1000) as emu:
        per_scaled_second = asyncio.run(_rate(emu, waiter_for, tasks, window=90 * scale))
    return per_scaled_second * scale


def strategies(scale: float):
    def ours(client: DashScopeClient) -> Waiter:
        return watcher_waiter(TaskWatcher(lambda: DashScopeClient(client._api_key, base_url=client.base_url, region=client.region), scaled(scale)))

    return [
        ("prefect-wan watcher", ours, DEFAULT_IN_FLIGHT),
        ("SDK VideoSynthesis.wait", lambda client: sdk_waiter(scale), SLOTS),
        ("plain 15 s loop", lambda client: plain_waiter(scale), SLOTS),
    ]


def flow_makespan(scale: float, pairs: int = 50) -> float:
    from prefect_wan.flows import GenerationOptions, KeyframePair, keyframes_batch

    todo = [
        KeyframePair(first_frame=str(EXAMPLES / "first.png"), last_frame=str(EXAMPLES / "last.png"), prompt="bench", seed=i, label=f"p{i}")
        for i in range(pairs)
    ]
    with run_emulator(pending_seconds=0.05, running_seconds=GENERATION * scale, submit_rps=2.0) as emu, tempfile.TemporaryDirectory() as out:
        warm = [KeyframePair(first_frame=str(EXAMPLES / "first.png"), last_frame=str(EXAMPLES / "last.png"), seed=10_000, label="warm")]
        asyncio.run(
            keyframes_batch(pairs=warm, options=GenerationOptions(resolution="480P"), credentials=emu.credentials(), destination=out, poll=scaled(scale))
        )
        emu.reset()
        started = time.monotonic()
        asyncio.run(
            keyframes_batch(pairs=todo, options=GenerationOptions(resolution="480P"), credentials=emu.credentials(), destination=out, poll=scaled(scale))
        )
        makespan = time.monotonic() - started
        assert emu.counters().submissions_accepted == pairs
    return makespan / (pairs / SLOTS * GENERATION * scale)


def soak(scale: float, batches: int = 10, pairs: int = 50, in_flight: int = 20) -> None:
    from prefect_wan.emulator import FaultRule
    from prefect_wan.flows import BatchFailedError, GenerationOptions, KeyframePair, keyframes_batch

    unknown = doubles = failed = 0
    for number in range(batches):
        todo = [
            KeyframePair(
                first_frame=str(EXAMPLES / "first.png"), last_frame=str(EXAMPLES / "last.png"), prompt="soak", seed=number * 1000 + i, label=f"s{number}-{i}"
            )
            for i in range(pairs)
        ]
        faults = [FaultRule(op="submit", action="drop", fraction=0.05, count=None)]
        with (
            run_emulator(pending_seconds=0.05, running_seconds=GENERATION * scale, submit_rps=2.0, idle_timeout_seconds=5, faults=faults, seed=number) as emu,
            tempfile.TemporaryDirectory() as out,
        ):
            try:
                asyncio.run(
                    keyframes_batch(
                        pairs=todo,
                        options=GenerationOptions(resolution="480P"),
                        credentials=emu.credentials(),
                        destination=out,
                        poll=scaled(scale),
                        max_in_flight=in_flight,
                    )
                )
            except BatchFailedError as error:
                failed += str(error).count(";") + 1
                unknown += str(error).count("SubmissionOutcomeUnknown")
            counters = emu.counters()
            doubles += counters.submissions_accepted - pairs
            print(
                f"  soak batch {number + 1}: {counters.submissions_accepted} accepted for {pairs} pairs, "
                f"{counters.faults_injected.get('submit:drop', 0)} answers dropped"
            )
    print(f"soak: {batches} x {pairs} pairs, {in_flight} in flight: {failed} failed, {unknown} unknown outcomes, {doubles} extra submissions")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=0.025, help="emulated seconds per real second of generation")
    parser.add_argument("--flow", action="store_true", help="also time the keyframes_batch flow")
    parser.add_argument("--soak", action="store_true", help="10 batches of 50 pairs, 20 in flight, dropped answers")
    args = parser.parse_args()
    rate_scale = 0.2  # slower clock for the rate scenario, so per-task loops do not saturate the emulator
    print(f"generation {GENERATION:g} s (scaled x{args.scale:g}), {SLOTS} running slots, 50 pairs; figures in real seconds")
    header = f"{'strategy':26} {'in flight':>9} {'makespan/ideal':>15} {'queries/task':>13} {'lag p50':>8} {'lag p95':>8} {'q/s @100':>9} {'q/s @500':>9}"
    print(header)
    for name, waiter_for, in_flight in strategies(args.scale):
        row = scenario_batch(name, args.scale, waiter_for, in_flight)
        rates = [scenario_rate(rate_scale, dict((n, w) for n, w, _ in strategies(rate_scale))[name], n) for n in (100, 500)]
        print(
            f"{name:26} {in_flight:>9} {row['ratio']:>14.3f}x {row['per_task']:>13.1f} {row['lag_median']:>7.2f}s {row['lag_p95']:>7.2f}s "
            f"{rates[0]:>9.2f} {rates[1]:>9.2f}"
        )
    if args.flow:
        print(f"keyframes_batch flow, default settings ({DEFAULT_IN_FLIGHT} in flight): makespan/ideal {flow_makespan(args.scale):.3f}x")
    if args.soak:
        soak(args.scale)


if __name__ == "__main__":
    main()
