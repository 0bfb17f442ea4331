"""Helpers shared by the tests (kept out of conftest, which must be imported only once)."""

from __future__ import annotations

import io

from PIL import Image

FAKE_KEY = "sk-test-SECRET-0123456789abcdef"


def make_image(width: int, height: int, color=(200, 40, 40), fmt: str = "PNG", mode: str = "RGB") -> bytes:
    image = Image.new(mode, (width, height), color if mode == "RGB" else color + (128,))
    # A diagonal band so crossfades and codecs have something to work on.
    for x in range(0, min(width, height), 4):
        image.putpixel((x, x), (255, 255, 255) if mode == "RGB" else (255, 255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def stop_process(process, timeout: float = 20.0) -> None:
    """Ask a server or worker process to stop; kill it if it has not within ``timeout``."""
    import subprocess

    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """A real ``redis-server`` on a loopback port (installed by ``make test``), in its own process."""

    def __init__(self, workdir) -> None:
        import shutil
        import socket

        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed: `make test` installs it (Debian package redis-server)")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.workdir = workdir
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        import subprocess
        import time

        import redis

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process)


def record_stub(file):
    """A minimal sidecar record for publishing a file outside a flow (tests, benchmarks)."""
    from datetime import datetime, timezone

    from prefect_wan.archive.record import ArchiveRecord, FrameRecord, RequestRecord, VideoProbe

    return ArchiveRecord(
        fingerprint="f" * 64,
        task_id="bench",
        archived_at=datetime.now(timezone.utc),
        source_video_url="http://bench",
        request=RequestRecord(model="bench", region="beijing", family="kf2v", first_frame=FrameRecord(source="-", sha256="-", bytes=0)),
        video=file,
        probe=VideoProbe(codec="none", fps=0, duration_seconds=0, width=0, height=0, frames=0),
    )
