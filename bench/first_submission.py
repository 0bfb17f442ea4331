"""Time from a command's start to its first (and second) submission, side by side: the official
dashscope 2.x client in a plain script against ``prefect-wan batch``, for a manifest of 10 pairs,
against the emulator. The command sends its first pair before Prefect loads; the second is the
first its run sends. Each client runs in a
fresh process, as a user would start it; the first submission is the emulator's first task
created after it started. prefect-wan's first run with a new Prefect home (its database created), a later run, and a run
with a Prefect server already running (``PREFECT_API_URL``) are timed apart.

python bench/first_submission.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "prefect_wan" / "examples"
PAIRS = 10
MODEL, RESOLUTION = "wan2.7-i2v", "720P"

SDK_SCRIPT = textwrap.dedent(
    """
    import base64, sys, yaml
    import dashscope

    manifest = yaml.safe_load(open(sys.argv[1]))
    client = dashscope.Client(api_key=sys.argv[2], base_url=sys.argv[3] + "/api/v1")
    def uri(path):
        return "data:image/png;base64," + base64.b64encode(open(path, "rb").read()).decode()
    for pair in manifest["pairs"]:
        media = [{"type": "first_frame", "url": uri(pair["first_frame"])}, {"type": "last_frame", "url": uri(pair["last_frame"])}]
        client.videos.jobs.create(model=sys.argv[4], prompt=pair["prompt"], media=media, resolution=sys.argv[5], duration=5)
    """
)


class Emulator:
    """The emulator in a process of its own, as the service is to its clients."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.base_url, self.api_key = f"http://127.0.0.1:{port}", "sk-emulator-bench"
        command = [str(Path(sys.executable).with_name("prefect-wan")), "emulator", "--port", str(port), "--api-key", self.api_key]
        command += ["--pending-seconds", "0.05", "--running-seconds", "0.2", "--submit-rps", "1000"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.base_url}/api/v1/tasks", headers=self.headers)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the emulator did not start") from None
                time.sleep(0.1)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def created_after(self, moment: float) -> list[float]:
        """Wall-clock seconds of the tasks created after ``moment``, in order (the list API's gmt_create)."""
        # The list API's window: from the command's start (the service's time zone, UTC+8).
        since = time.strftime("%Y%m%d%H%M%S", time.gmtime(moment - 1 + 8 * 3600))
        rows = httpx.get(f"{self.base_url}/api/v1/tasks", params={"page_size": 100, "start_time": since}, headers=self.headers).json()["data"]
        return sorted(at for at in (row["gmt_create"] / 1000 for row in rows) if at >= moment - 0.01)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def _timed(command: list[str], env: dict[str, str], emu: Emulator) -> tuple[float, float]:
    """Seconds from starting ``command`` to the emulator's first and second tasks created after it started."""
    log = tempfile.TemporaryFile("w+")
    started = time.time()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True, timeout=600)
    if done.returncode != 0:
        log.seek(0)
        raise RuntimeError(f"{command[:3]} exited {done.returncode}: {log.read()[-2000:]}")
    first, second = emu.created_after(started)[:2]
    return first - started, second - started


def main() -> None:
    from prefect_wan.cli.server import TemporaryServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs

    work = Path(tempfile.mkdtemp(prefix="prefect-wan-first-"))

    def manifest(name: str) -> str:
        """10 pairs no run has made: a later run that found them recorded would adopt them, not submit."""
        path = work / f"{name}.yaml"
        frames = {"first_frame": str(EXAMPLES / "first.png"), "last_frame": str(EXAMPLES / "last.png")}
        path.write_text(yaml.safe_dump({"pairs": [frames | {"prompt": f"{name} {i}", "label": f"p{i}"} for i in range(PAIRS)]}))
        return str(path)

    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    served = "prefect-wan batch, a server configured"
    rows: dict[str, list[tuple[float, float]]] = {
        "dashscope 2.x script": [],
        "prefect-wan batch, new Prefect home": [],
        "prefect-wan batch, later runs": [],
        served: [],
    }
    emu = Emulator()
    os.environ["PREFECT_HOME"] = str(work / "home-server")
    server = TemporaryServer()  # a Prefect server already running, as PREFECT_API_URL names one
    try:
        server.wait_until_healthy()
        options = ["--model", MODEL, "--resolution", RESOLUTION, "--base-url", emu.base_url, "--dest", str(work / "archive")]
        cli = [str(Path(sys.executable).with_name("prefect-wan")), "batch"]
        for run in range(runs):
            sdk = [sys.executable, "-c", SDK_SCRIPT, manifest(f"sdk-{run}"), emu.api_key, emu.base_url, MODEL, RESOLUTION]
            rows["dashscope 2.x script"].append(_timed(sdk, base, emu))
            env = base | {"PREFECT_HOME": str(work / f"home-{run}"), "DASHSCOPE_API_KEY": emu.api_key}
            rows["prefect-wan batch, new Prefect home"].append(_timed(cli + [manifest(f"new-{run}")] + options, env, emu))
            rows["prefect-wan batch, later runs"].append(_timed(cli + [manifest(f"later-{run}")] + options, env, emu))
            rows[served].append(_timed(cli + [manifest(f"served-{run}")] + options, env | {"PREFECT_API_URL": server.api_url}, emu))
    finally:
        emu.stop()
        server.stop()
    script = statistics.median(first for first, _ in rows["dashscope 2.x script"])
    print(f"Time to the first and second submissions, {PAIRS} pairs ({MODEL} {RESOLUTION}), median of {runs} runs, each a fresh process")
    for name, times in rows.items():
        first, second = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
        runs_text = ", ".join(f"{a:.2f}" for a, _ in times)
        print(f"  {name:<38} first {first:6.2f} s ({first / script:4.2f}x the script), second {second:6.2f} s   first of each run: {runs_text}")


if __name__ == "__main__":
    main()
