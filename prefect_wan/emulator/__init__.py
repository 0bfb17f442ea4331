"""A local DashScope emulator: the kf2v and wan2.7 wire protocol on loopback, real MP4 output,
faults on demand. Videos are the emulator's own camera-move rendering, not the model's."""

from prefect_wan.emulator.app import create_app
from prefect_wan.emulator.config import DEFAULT_API_KEY, EmulatorConfig
from prefect_wan.emulator.faults import FaultRule
from prefect_wan.emulator.server import RunningEmulator, run_emulator, serve_forever
from prefect_wan.emulator.state import Counters

__all__ = [
    "DEFAULT_API_KEY",
    "Counters",
    "EmulatorConfig",
    "FaultRule",
    "RunningEmulator",
    "create_app",
    "run_emulator",
    "serve_forever",
]
