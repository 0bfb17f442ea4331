"""A gateway answers 504 after the service accepted a create: what each client pays, side by side.

The official dashscope 2.x client with its default settings retries the POST (``max_retries=2``, no
idempotency key) and so creates a second task; prefect-wan reconciles the lost answer with the
task list and adopts the task it made. Counted at the emulator (``error_after_create``).

python bench/double_pay.py
"""

from __future__ import annotations

import asyncio
import base64
import os
import tempfile
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-wan-bench-")

EXAMPLES = Path(__file__).resolve().parent.parent / "prefect_wan" / "examples"
MODEL = "wan2.7-i2v"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def main() -> None:
    import dashscope

    from prefect_wan.client.polling import PollSchedule
    from prefect_wan.emulator import run_emulator
    from prefect_wan.flows import GenerationOptions, keyframes_to_video

    rows = []
    with run_emulator(pending_seconds=0.05, running_seconds=0.2, submit_rps=1000.0) as emu:
        emu.inject(op="submit", action="error_after_create", status=504, code="GatewayTimeout", message="upstream timed out")
        client = dashscope.Client(api_key=emu.api_key, base_url=emu.base_url + "/api/v1")  # its defaults: max_retries=2
        media = [{"type": "first_frame", "url": _data_uri(EXAMPLES / "first.png")}, {"type": "last_frame", "url": _data_uri(EXAMPLES / "last.png")}]
        try:
            client.videos.jobs.create(model=MODEL, prompt="sunrise to noon", media=media, resolution="720P", duration=5)
            outcome = "returned a task"
        except Exception as error:  # noqa: BLE001 - whatever it does, the counter says what it paid
            outcome = f"raised {type(error).__name__}"
        rows.append(("dashscope 2.x Client().videos.jobs.create (defaults)", outcome, emu.counters().submissions_accepted))

        emu.reset()
        emu.inject(op="submit", action="error_after_create", status=504, code="GatewayTimeout", message="upstream timed out")
        with tempfile.TemporaryDirectory() as archive:
            video = asyncio.run(
                keyframes_to_video(
                    str(EXAMPLES / "first.png"),
                    str(EXAMPLES / "last.png"),
                    prompt="sunrise to noon",
                    options=GenerationOptions(model=MODEL, resolution="720P", duration=5, seed=5),
                    credentials=emu.credentials(),
                    destination=archive,
                    poll=PollSchedule(initial_delay=0.05, interval=0.1, max_interval=0.3),
                )
            )
            rows.append(("prefect-wan keyframes_to_video", f"archived task {video.task_id[:8]}…", emu.counters().submissions_accepted))
    print("A gateway answers 504 after the create was accepted (emulator, error_after_create)")
    for name, outcome, paid in rows:
        print(f"  {name:<56} {outcome:<28} tasks paid for: {paid}")


if __name__ == "__main__":
    main()
