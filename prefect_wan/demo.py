"""``make demo``: the real flow, end to end, with no key and no network.

Starts the DashScope emulator on loopback, runs ``keyframes_to_video`` on the two keyframes shipped
in ``prefect_wan/examples``, archives to ``./wan-archive`` and says where everything went. The
video is the emulator's camera-move rendering, not the model's.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect_wan.blocks import WanCredentials

EXAMPLES = Path(__file__).resolve().parent / "examples"


# The demo's own Prefect home, in the folder it runs from (ignored by git): its runs stay out of the
# user's history, and a ~/.prefect database of another Prefect version cannot stop it.
DEMO_HOME = ".prefect-demo"


def main() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_HOME"] = str(Path.cwd() / DEMO_HOME)
    from prefect_wan.cli.server import temporary_server, temporary_server_ready
    from prefect_wan.client.polling import PollSchedule
    from prefect_wan.emulator import run_emulator
    from prefect_wan.flows import ArchivedVideo, GenerationOptions, keyframes_to_video

    async def sunrise(credentials: WanCredentials) -> ArchivedVideo:
        await temporary_server_ready()
        video = await keyframes_to_video(
            str(EXAMPLES / "first.png"),
            str(EXAMPLES / "last.png"),
            prompt="Time-lapse: the sun climbs from behind the mountains into a clear noon sky, the lake brightening.",
            options=GenerationOptions(model="wan2.2-kf2v-flash", resolution="720P"),
            label="demo-sunrise",
            credentials=credentials,
            destination="./wan-archive",
            poll=PollSchedule(initial_delay=1.0, interval=1.0, max_interval=2.0),
        )
        assert isinstance(video, ArchivedVideo)  # not a dry run
        return video

    # The CLI's temporary server (none when PREFECT_API_URL names one): it starts while the emulator does.
    with temporary_server(), run_emulator(region="beijing") as emulator:
        print(f"DashScope emulator at {emulator.base_url} (region beijing, key {emulator.api_key})")
        video = asyncio.run(sunrise(emulator.credentials()))
    record = video.record
    cost = f"{record.cost.amount:g} {record.cost.currency}" if record.cost.amount is not None else "unknown"
    print()
    print("Archived" + (" (already there from an earlier run: nothing paid, nothing downloaded)" if video.reused else ""))
    print(f"  video:   {video.video_url}")
    print(f"  sidecar: {video.sidecar_url}")
    print(
        f"  {record.probe.width}x{record.probe.height}, {record.probe.duration_seconds:g} s, {record.probe.frames} frames "
        f"of {record.probe.codec} at {record.probe.fps:g} fps; estimated cost {cost}"
    )
    print("  Rendered by the local emulator (a camera move between the keyframes), not by the Wan model.")
    print("  Against the real service: see README, 'Real DashScope'.")


if __name__ == "__main__":
    main()
