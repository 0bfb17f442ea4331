"""The archive at scale, side by side in one run:

1. a 1 GiB H.264 video to a moto S3 server: through the archive (``keyframes_to_video``, the emulator
   serving the file) against a plain s3fs ``put_file``: throughput and peak RSS growth of each;
2. one publish into a local archive holding 0, 15,000 and 45,000 files: time, as a ratio to the empty one;
3. a batch of 200 and of 1000 pairs against the emulator: the flow process's CPU and RSS per pair.

Every server (moto, Prefect, the emulator) runs in a process of its own, and every measurement in a
fresh child process, so one figure never carries another's memory.

python bench/archive.py [--gib 1] [--files 0,15000,45000] [--pairs 200,1000] [--only s3,publish,batch]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
S3 = {"key": "bench", "secret": "bench"}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, what: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.3)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Servers:
    """moto, a Prefect server and the emulator, each in its own process, on loopback."""

    def __init__(self, work: Path) -> None:
        self.work, self.processes = work, []
        self.s3 = f"http://127.0.0.1:{_port()}"
        self.prefect = f"http://127.0.0.1:{_port()}/api"
        self.emulator = f"http://127.0.0.1:{_port()}"

    def __enter__(self) -> Servers:
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", self.s3.rsplit(":", 1)[1]], **quiet)
        # The server's scheduling services loop even when idle; a benchmark needs none of them.
        idle = ("SCHEDULER", "LATE_RUNS", "FOREMAN", "CANCELLATION_CLEANUP", "PAUSE_EXPIRATIONS", "TRIGGERS", "REPOSSESSOR")
        env = {**self.env(), "PREFECT_UI_ENABLED": "false", **{f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in idle}}
        port = self.prefect.rsplit(":", 1)[1].split("/")[0]
        prefect = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1", "--port", port], env=env, **quiet)
        emulator_port = self.emulator.rsplit(":", 1)[1]
        emulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect_wan.cli",
                "emulator",
                "--port",
                emulator_port,
                "--pending-seconds",
                "0.05",
                "--running-seconds",
                "0.2",
                "--submit-rps",
                "1000",
            ],
            env=env,
            **quiet,
        )
        self.processes = [moto, prefect, emulator]
        _wait(self.s3, "moto", moto)
        _wait(f"{self.prefect}/health", "the Prefect server", prefect)
        _wait(self.emulator + "/__emulator__/counters", "the emulator", emulator)
        self.configure(max_running=50, queue_limit=2000, download_chunk_bytes=MIB)
        import boto3

        boto3.client("s3", endpoint_url=self.s3, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(
            Bucket="bench"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PREFECT_HOME": str(self.work / "prefect-home"),
            "PREFECT_API_URL": self.prefect,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }

    def configure(self, **changes: object) -> None:
        httpx.patch(self.emulator + "/__emulator__/config", json=changes, timeout=30).raise_for_status()

    def storage(self) -> dict:
        return {**S3, "client_kwargs": {"endpoint_url": self.s3, "region_name": "us-east-1"}}

    def child(self, *args: str) -> dict:
        """Run one measurement in a fresh process; its last line is a JSON report."""
        done = subprocess.run([sys.executable, __file__, "--child", *args], env=self.env(), capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise SystemExit(f"child {args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


# --- the video ---------------------------------------------------------------------------------


def make_video(path: Path, megabytes: int, width: int = 1280, height: int = 720) -> Path:
    """Lossless H.264 of drifting noise: about 1 MiB a frame at 720P, so 1 GiB is about a thousand frames."""
    import av
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 256, (height + 16, width + 16, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "qp": "0"}
        index = 0
        while index % 30 or (path.stat().st_size if path.exists() else 0) < megabytes * MIB:
            dy, dx = index % 16, (index * 7) % 16
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(noise[dy : dy + height, dx : dx + width]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            index += 1
        for packet in stream.encode():
            container.mux(packet)
    return path


# --- children: each measures one thing in a process of its own ----------------------------------


def _credentials(emulator: str):
    from prefect_wan.blocks import WanCredentials
    from prefect_wan.emulator import DEFAULT_API_KEY

    return WanCredentials(base_url=emulator, api_key=DEFAULT_API_KEY, region="singapore", min_submit_interval=0)


def child_archive(emulator: str, s3: str, video: str) -> dict:
    """keyframes_to_video of one pair whose video is the given file, to S3."""
    from prefect_wan.client.polling import PollSchedule
    from prefect_wan.flows import GenerationOptions, keyframes_to_video

    frames = ROOT / "prefect_wan" / "examples"
    storage = {**S3, "client_kwargs": {"endpoint_url": s3, "region_name": "us-east-1"}}
    poll = PollSchedule(initial_delay=0.05, interval=0.1, max_interval=0.3)

    def run(seed: int):
        return asyncio.run(
            keyframes_to_video(
                str(frames / "first.png"),
                str(frames / "last.png"),
                prompt="bench",
                options=GenerationOptions(resolution="480P", seed=seed),
                credentials=_credentials(emulator),
                destination="s3://bench/archive",
                storage_options=storage,
                poll=poll,
            )
        )

    httpx.patch(emulator + "/__emulator__/config", json={"video_file": None}).raise_for_status()
    run(int(time.time()) % 1_000_000)  # warm-up: every import and Prefect's own start-up, on a small video
    httpx.patch(emulator + "/__emulator__/config", json={"video_file": video}).raise_for_status()
    rss, started = _rss_mib(), time.perf_counter()
    archived = run(int(time.time()) % 1_000_000 + 1_000_000)
    elapsed = time.perf_counter() - started
    httpx.patch(emulator + "/__emulator__/config", json={"video_file": None}).raise_for_status()
    return {"seconds": elapsed, "bytes": archived.record.video.bytes, "rss_growth_mib": _rss_mib() - rss}


def child_put_file(s3: str, video: str) -> dict:
    """A plain s3fs put_file of the same file, s3fs's defaults."""
    import s3fs

    fs = s3fs.S3FileSystem(**S3, client_kwargs={"endpoint_url": s3, "region_name": "us-east-1"})
    fs.ls("bench")  # warm-up: the session and its connection
    rss, started = _rss_mib(), time.perf_counter()
    fs.put_file(video, "bench/plain/video.mp4")
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "bytes": os.path.getsize(video), "rss_growth_mib": _rss_mib() - rss}


def child_publish(folder: str, files: int, repeats: int) -> dict:
    """Publishes (video, poster, sidecar) into a local archive that already holds ``files`` files."""
    from prefect_wan.archive.destination import ArchiveDestination
    from prefect_wan.archive.store import Download, publish, sha256_of
    from tests.helpers import record_stub

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files // 2):
        (root / f"{i:032x}.mp4").write_bytes(b"v")
        (root / f"{i:032x}.json").write_bytes(b"{}")
    video = root.parent / f"video-{files}.bin"
    video.write_bytes(os.urandom(MIB))
    with video.open("rb") as handle:
        download = Download(video, MIB, sha256_of(handle))
    destination = ArchiveDestination(url=str(root))
    times = []
    for n in range(repeats):
        started = time.perf_counter()
        asyncio.run(publish(destination, download, record_stub, stem=f"bench{n:027d}", poster=b"png"))
        times.append(time.perf_counter() - started)
    return {"median_ms": statistics.median(times) * 1000, "first_ms": times[0] * 1000}


def child_batch(emulator: str, pairs: int, archive: str) -> dict:
    """A batch of ``pairs`` pairs: the flow process's CPU and peak RSS growth, per pair."""
    from prefect_wan.client.polling import PollSchedule
    from prefect_wan.flows import GenerationOptions, KeyframePair, keyframes_batch

    frames = ROOT / "prefect_wan" / "examples"
    poll = PollSchedule(initial_delay=0.05, interval=0.1, max_interval=0.3, jitter=0)
    base = int(time.time() * 1000) % 10**9

    def run(count: int, offset: int) -> None:
        todo = [
            KeyframePair(first_frame=str(frames / "first.png"), last_frame=str(frames / "last.png"), prompt="bench", seed=base + offset + i, label=f"p{i}")
            for i in range(count)
        ]
        result = asyncio.run(
            keyframes_batch(
                pairs=todo, options=GenerationOptions(resolution="480P"), credentials=_credentials(emulator), destination=archive, poll=poll, max_in_flight=20
            )
        )
        assert len(result.videos) == count, result.summary

    run(10, 10_000_000)  # warm-up
    rss, cpu, started = _rss_mib(), _cpu(), time.perf_counter()
    run(pairs, 0)
    return {
        "pairs": pairs,
        "seconds": time.perf_counter() - started,
        "cpu_ms_per_pair": (_cpu() - cpu) * 1000 / pairs,
        "rss_kib_per_pair": (_rss_mib() - rss) * 1024 / pairs,
    }


# --- the report ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--files", default="0,15000,45000")
    parser.add_argument("--pairs", default="200,1000")
    parser.add_argument("--only", default="s3,publish,batch")
    args = parser.parse_args()
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="prefect-wan-bench-archive-") as tmp:
        work = Path(tmp)
        with Servers(work) as servers:
            if "s3" in only:
                print(f"1. {args.gib:g} GiB H.264 to S3 (moto on loopback)")
                started = time.perf_counter()
                video = make_video(work / "big.mp4", int(args.gib * 1024))
                print(f"   made {video.stat().st_size / MIB:.0f} MiB in {time.perf_counter() - started:.0f} s (not in the figures)")
                archive = servers.child("archive", servers.emulator, servers.s3, str(video))
                plain = servers.child("put_file", servers.s3, str(video))
                rows = [("through the archive (download, one decode, upload)", archive), ("plain s3fs put_file", plain)]
                for name, row in rows:
                    print(
                        f"   {name:<52} {row['bytes'] / MIB / row['seconds']:7.1f} MiB/s  {row['seconds']:6.1f} s  peak RSS +{row['rss_growth_mib']:6.0f} MiB"
                    )
                ratio = (archive["bytes"] / archive["seconds"]) / (plain["bytes"] / plain["seconds"])
                print(
                    f"   throughput ratio archive / put_file: {ratio:.2f} (goal >= 0.8); archive peak RSS growth {archive['rss_growth_mib']:.0f} MiB (goal <= 64)"
                )
                video.unlink()
            if "publish" in only:
                counts = [int(n) for n in args.files.split(",")]
                print("2. One publish (1 MiB video, poster, sidecar) into a local archive already holding N files")
                results = {n: servers.child("publish", str(work / f"archive-{n}" / "videos"), str(n), "20") for n in counts}
                empty = results[counts[0]]["median_ms"]
                for n, row in results.items():
                    print(
                        f"   {n:>6} files: median {row['median_ms']:6.2f} ms (first, with its sweep: {row['first_ms']:6.2f} ms)  ratio {row['median_ms'] / empty:.2f}"
                    )
                print(f"   goal: {counts[-1]} files within 1.2x of {counts[0]}")
            if "batch" in only:
                sizes = [int(n) for n in args.pairs.split(",")]
                small = work / "small.mp4"
                make_video(small, 1, 320, 240)
                servers.configure(video_file=str(small))
                print("3. A batch against the emulator: the flow process, per pair (after a warm-up batch)")
                rows = {n: servers.child("batch", servers.emulator, str(n), str(work / f"batch-{n}")) for n in sizes}
                for n, row in rows.items():
                    print(
                        f"   {n:>5} pairs in {row['seconds']:6.1f} s: CPU {row['cpu_ms_per_pair']:6.1f} ms/pair, peak RSS +{row['rss_kib_per_pair']:6.1f} KiB/pair"
                    )
                first, last = rows[sizes[0]], rows[sizes[-1]]
                print(
                    f"   {sizes[-1]} vs {sizes[0]}: CPU per pair {last['cpu_ms_per_pair'] / first['cpu_ms_per_pair']:.2f}x, "
                    f"RSS per pair {last['rss_kib_per_pair'] / max(first['rss_kib_per_pair'], 1e-9):.2f}x (goal: within 1.1x)"
                )


def child(args: list[str]) -> None:
    kind, rest = args[0], args[1:]
    handlers = {
        "archive": lambda: child_archive(rest[0], rest[1], rest[2]),
        "put_file": lambda: child_put_file(rest[0], rest[1]),
        "publish": lambda: child_publish(rest[0], int(rest[1]), int(rest[2])),
        "batch": lambda: child_batch(rest[0], int(rest[1]), rest[2]),
    }
    print(json.dumps(handlers[kind]()))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        child(sys.argv[2:])
    else:
        main()
