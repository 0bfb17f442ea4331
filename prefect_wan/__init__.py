"""prefect-wan: keyframe pairs to videos with Alibaba Cloud Wan, orchestrated by Prefect.

Names are imported on first use: the command line reads its options, refuses bad input and sends
its first pair before Prefect (which the blocks need) has loaded.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect_wan.blocks import WanCredentials
    from prefect_wan.client import (
        DashScopeClient,
        KeyframeVideoRequest,
        PollSchedule,
        Region,
        SubmittedTask,
        VideoResult,
        predict_output_size,
    )

_WHERE = {
    "WanCredentials": "prefect_wan.blocks",
    "DashScopeClient": "prefect_wan.client",
    "KeyframeVideoRequest": "prefect_wan.client",
    "PollSchedule": "prefect_wan.client",
    "Region": "prefect_wan.client",
    "SubmittedTask": "prefect_wan.client",
    "VideoResult": "prefect_wan.client",
    "predict_output_size": "prefect_wan.client",
}

__all__ = [
    "DashScopeClient",
    "KeyframeVideoRequest",
    "PollSchedule",
    "Region",
    "SubmittedTask",
    "VideoResult",
    "WanCredentials",
    "predict_output_size",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'prefect_wan' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # inspect.getmembers (``prefect block register -m prefect_wan``) reaches every name through here.
    return sorted(set(globals()) | set(__all__))


if "prefect" in sys.modules:
    # Loaded by Prefect (its ``prefect.collections`` entry point): the blocks register at once.
    from prefect_wan.blocks import WanCredentials  # noqa: E402,F401
