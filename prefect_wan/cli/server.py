"""The temporary Prefect server of a command run with no server configured.

Prefect would start it on the flow's first API call, after importing its whole server into the
command's process (2 s here) and then waiting for it (2-3 s more, longer on a new database). The
command starts it itself instead, as soon as every refusal has passed: the same server process
Prefect would run (uvicorn over ``prefect.server.api.server:create_app``, the UI off, marked
ephemeral), so its start runs on the other core while the command imports its flows and reads
its frames. It serves this command's in-process runs only, so the services that schedule, expire
or repossess other runs are left off, and it ends with the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator, Optional

import httpx

from prefect_wan.client.errors import WanError

# Services of a Prefect server that act on runs other than the in-process ones of this command.
IDLE_SERVICES = ("SCHEDULER", "LATE_RUNS", "FOREMAN", "CANCELLATION_CLEANUP", "PAUSE_EXPIRATIONS", "TRIGGERS", "REPOSSESSOR")
STARTUP_TIMEOUT_SECONDS = 90.0


class TemporaryServerError(WanError):
    """The command's temporary Prefect server did not come up (its last lines are in the message)."""


# Prefect before 3.8 serves nothing on fastapi 0.137 and later (every route answers 500: "'PrefectRouter'
# object has no attribute 'routes'"), tried with 3.6.17 and 3.7.4; its own requirements allow it.
_OLD_PREFECT, _BREAKING_FASTAPI = "3.8", "0.137"


def server_conflict() -> Optional[str]:
    """Why this environment's Prefect server cannot serve (its fastapi), in one line, or None."""
    from importlib.metadata import version

    from packaging.version import Version

    prefect_version, fastapi_version = version("prefect"), version("fastapi")
    if Version(prefect_version) < Version(_OLD_PREFECT) and Version(fastapi_version) >= Version(_BREAKING_FASTAPI):
        return (
            f"Prefect {prefect_version}'s server does not run on fastapi {fastapi_version}: "
            f"pip install 'fastapi<{_BREAKING_FASTAPI}' beside it, or set PREFECT_API_URL to a running server"
        )
    return None


class TemporaryServer:
    """A Prefect server process for one command."""

    def __init__(self) -> None:
        import prefect
        from prefect.settings import get_current_settings

        if (conflict := server_conflict()) is not None:
            raise TemporaryServerError(conflict)

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        env = {
            **os.environ,
            **get_current_settings().to_environment_variables(exclude_unset=True),
            # What Prefect sets for its own temporary server.
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **{f"PREFECT_SERVER_SERVICES_{service}_ENABLED": "false" for service in IDLE_SERVICES},
        }
        self._log: IO[bytes] = tempfile.TemporaryFile()
        uvicorn = ["--app-dir", str(Path(prefect.__file__).parent.parent), "--factory", "prefect.server.api.server:create_app"]
        uvicorn += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"]
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("server_process.py")), str(os.getpid()), *uvicorn],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # out of the terminal's process group: see server_process.py
        )

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                time.sleep(0.05)
        self._log.seek(0)
        # Its last lines that say something (a traceback's "^^^^" markers and blank lines do not).
        said = [line.strip() for line in self._log.read().decode(errors="replace").splitlines() if line.strip().strip("^~ ")][-3:]
        raise TemporaryServerError(
            f"the temporary Prefect server did not start (exit {self.process.poll()}): {' | '.join(said) or 'no output'}; "
            "set PREFECT_API_URL to a running server to use that one"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()


_SERVER: Optional[TemporaryServer] = None


@contextlib.contextmanager
def temporary_server() -> Iterator[Optional[TemporaryServer]]:
    """The command's temporary server, started now, or None when a server is configured
    (PREFECT_API_URL). Prefect's settings point at it inside the block; it stops at the end."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    global _SERVER
    if PREFECT_API_URL.value():
        yield None
        return
    server = _SERVER = TemporaryServer()
    try:
        # Its UI is off: no link to it is shown ("" rather than unset, which Prefect derives from the API URL).
        with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_UI_URL: ""}):
            yield server
    finally:
        _SERVER = None
        _drain_to(server)
        server.stop()


def _drain_to(server: TemporaryServer) -> None:
    # Logs and events still queued go to the server before it stops (else: "Error logging to API").
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    if server.process.poll() is None:
        APILogWorker.drain_all(timeout=5)
        EventsWorker.drain_all(timeout=5)


def started_here() -> bool:
    """Whether this command runs on a temporary server of its own (no one looks at its UI)."""
    return _SERVER is not None


async def temporary_server_ready() -> None:
    """Wait until the command's temporary server answers, if it has one: call it right before the flow."""
    if _SERVER is not None:
        await asyncio.to_thread(_SERVER.wait_until_healthy)
