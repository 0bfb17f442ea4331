"""Peak memory while archiving a large file (batch makespans are in bench/scheduler.py).

python bench/batch.py [megabytes]
"""

from __future__ import annotations

import asyncio
import http.server
import os
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
from functools import partial
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-wan-bench-")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.helpers

import httpx  # noqa: E402

from prefect_wan.archive.destination import ArchiveDestination  # noqa: E402
from prefect_wan.archive.store import Download, download_video, publish  # noqa: E402
from tests.helpers import record_stub  # noqa: E402


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def archive_memory(megabytes: int = 256) -> None:
    """Stream a large file through download_video + publish, as the archive task does."""
    with tempfile.TemporaryDirectory() as served, tempfile.TemporaryDirectory() as spool, tempfile.TemporaryDirectory() as out:
        big = Path(served) / "big.mp4"
        with big.open("wb") as handle:
            for _ in range(megabytes):
                handle.write(os.urandom(1 << 20))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=served))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/big.mp4"
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        async def run() -> Download:
            async with httpx.AsyncClient(timeout=60) as http:
                video = await download_video(url, Path(spool) / "v.mp4", http=http)
            await publish(ArchiveDestination(url=out), video, lambda file: record_stub(file), stem="f" * 32)
            return video

        tracemalloc.start()
        started = time.perf_counter()
        video = asyncio.run(run())
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        server.shutdown()
    print(f"archive: {video.bytes / 2**20:.0f} MiB downloaded, hashed, published in {elapsed:.1f} s")
    print(f"  peak Python allocations {peak / 2**20:.1f} MiB; peak RSS grew {(rss_after - rss_before) / 1024:.1f} MiB")


if __name__ == "__main__":
    archive_memory(int(sys.argv[1]) if len(sys.argv) > 1 else 256)
