"""Shared fixtures: keyframe images, a fake key, and (lazily) the Prefect harness, the emulator and S3."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_TEST_MODE", "1")

FAKE_KEY = "sk-test-SECRET-0123456789abcdef"


def make_image(width: int, height: int, color=(200, 40, 40), fmt: str = "PNG", mode: str = "RGB") -> bytes:
    image = Image.new(mode, (width, height), color if mode == "RGB" else color + (128,))
    # A diagonal band so crossfades and codecs have something to work on.
    for x in range(0, min(width, height), 4):
        image.putpixel((x, x), (255, 255, 255) if mode == "RGB" else (255, 255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def fake_key() -> str:
    return FAKE_KEY


@pytest.fixture
def frames(tmp_path):
    """A first and last frame on disk (3:4, like the reference's 750x1000 example)."""
    first = tmp_path / "first.png"
    last = tmp_path / "last.jpg"
    first.write_bytes(make_image(480, 640, (220, 60, 30)))
    last.write_bytes(make_image(480, 640, (30, 60, 220), fmt="JPEG"))
    return first, last


@pytest.fixture(scope="session")
def prefect_harness():
    """One real temporary Prefect server (SQLite) for the whole session, started on first use."""
    from prefect.settings import PREFECT_API_SERVICES_TRIGGERS_ENABLED, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_API_SERVICES_TRIGGERS_ENABLED: False}):
        with prefect_test_harness(server_startup_timeout=120):
            yield


FAST = {"pending_seconds": 0.05, "running_seconds": 0.2, "submit_rps": 1000.0, "tick_seconds": 0.02}


@pytest.fixture(scope="session")
def emulator_server():
    from prefect_wan.emulator import run_emulator

    with run_emulator(**FAST) as emu:
        yield emu


@pytest.fixture
def emulator(emulator_server):
    """The session's emulator, reset to fast defaults with no faults armed."""
    emulator_server.reset()
    emulator_server.configure(**FAST, max_running=None, queue_limit=500, task_ttl_seconds=86400, video_ttl_seconds=86400)
    yield emulator_server
    emulator_server.clear_faults()
