"""Running the emulator: in a background thread (``run_emulator``) or in the foreground (CLI)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Callable, Iterator, Optional

import httpx
import uvicorn
from pydantic import SecretStr

from prefect_wan.client.access import ServiceAccess
from prefect_wan.client.client import resolve_host
from prefect_wan.emulator.app import ADMIN, create_app
from prefect_wan.emulator.config import EmulatorConfig
from prefect_wan.emulator.faults import FaultRule
from prefect_wan.emulator.state import Counters, EmulatorState


class RunningEmulator:
    """A live emulator: where it is, which key it takes, and its admin API."""

    def __init__(self, base_url: str, config: EmulatorConfig, state: EmulatorState) -> None:
        self.base_url = base_url
        self.config = config
        self.state = state
        self._admin = httpx.Client(base_url=base_url + ADMIN, timeout=30.0)
        self._undo: list[Callable[[], None]] = []

    @property
    def api_key(self) -> str:
        return self.config.api_keys[0]

    def access(self) -> ServiceAccess:
        """How to reach this emulator, as a command knows it before Prefect loads."""
        interval = 1.0 / self.config.submit_rps if self.config.submit_rps is not None else None
        return ServiceAccess(api_key=SecretStr(self.api_key), region=self.config.region, base_url=self.base_url, min_submit_interval=interval)

    def credentials(self, **overrides: Any):
        """A ``WanCredentials`` block pointing at this emulator."""
        from prefect_wan.blocks import WanCredentials

        return WanCredentials.model_validate({**self.access().model_dump(), **overrides})

    def workspace_credentials(self, workspace: str = "ws-emulator", **overrides: Any):
        """A ``WanCredentials`` block that reaches this emulator through the workspace host of its
        region (``{workspace}.{region id}.maas.aliyuncs.com``), resolved here for this process."""
        from prefect_wan.blocks import WanCredentials
        from prefect_wan.client.regions import workspace_base_url

        host = httpx.URL(workspace_base_url(self.config.region, workspace)).host
        self._undo.append(resolve_host(host, self.base_url))
        if self.config.submit_rps is not None:
            overrides.setdefault("min_submit_interval", 1.0 / self.config.submit_rps)
        return WanCredentials(api_key=SecretStr(self.api_key), region=self.config.region.value, workspace=workspace, workspace_host=True, **overrides)

    def counters(self) -> Counters:
        return Counters.model_validate(self._admin.get("/counters").raise_for_status().json())

    def inject(self, **rule: Any) -> FaultRule:
        """Arm a fault, e.g. ``inject(op="submit", status=500, code="InternalError")``."""
        answer = self._admin.post("/faults", json=FaultRule(**rule).model_dump()).raise_for_status().json()
        return FaultRule.model_validate(answer["faults"][-1])

    def clear_faults(self) -> None:
        self._admin.delete("/faults").raise_for_status()

    def expire_task(self, task_id: str) -> None:
        self._admin.post(f"/tasks/{task_id}/expire").raise_for_status()

    def advance_clock(self, seconds: float) -> None:
        self._admin.post("/clock", json={"advance": seconds}).raise_for_status()

    def configure(self, **changes: Any) -> EmulatorConfig:
        self.config = EmulatorConfig.model_validate(self._admin.patch("/config", json=changes).raise_for_status().json())
        return self.config

    def reset(self) -> None:
        self._admin.post("/reset").raise_for_status()

    def close(self) -> None:
        for undo in self._undo:
            undo()
        self._admin.close()


def _bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on such sockets, and without it every
    # keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


@contextlib.contextmanager
def run_emulator(config: Optional[EmulatorConfig] = None, *, host: str = "127.0.0.1", port: int = 0, **overrides: Any) -> Iterator[RunningEmulator]:
    """Serve the emulator on loopback in a background thread; ``port=0`` picks a free port.

    Keyword overrides are ``EmulatorConfig`` fields: ``run_emulator(running_seconds=0.2)``.
    """
    config = EmulatorConfig.model_validate({**(config or EmulatorConfig()).model_dump(), **overrides})
    state = EmulatorState(config)
    app = create_app(state=state)
    sock = _bind(host, port)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_keep_alive=config.idle_timeout_seconds,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="wan-emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the emulator did not start")
        time.sleep(0.01)
    bound_host, bound_port = sock.getsockname()[:2]
    emulator = RunningEmulator(f"http://{bound_host}:{bound_port}", config, state)
    try:
        yield emulator
    finally:
        emulator.close()
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        state.close()


def serve_forever(config: EmulatorConfig, *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve in the foreground until interrupted (the ``prefect-wan emulator`` command)."""
    state = EmulatorState(config)
    try:
        uvicorn.run(create_app(state=state), host=host, port=port, log_level="info", access_log=False, timeout_keep_alive=state.config.idle_timeout_seconds)
    finally:
        state.close()
