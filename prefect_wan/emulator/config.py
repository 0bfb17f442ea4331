"""How the emulator behaves: keys, region, timings, limits, lifetimes and faults."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel, Field

from prefect_wan.client.regions import Region
from prefect_wan.emulator.faults import FaultRule

DEFAULT_API_KEY = "sk-emulator-0000000000000000"


class EmulatorConfig(BaseModel):
    """Every knob of the emulator. Defaults mimic the real service on a faster clock."""

    region: Region = Field(default=Region.SINGAPORE, description="Region whose model names are accepted.")
    api_keys: list[str] = Field(default_factory=lambda: [DEFAULT_API_KEY], description="Keys that authenticate (one account).")
    pending_seconds: float = Field(default=1.0, ge=0, description="Least time a task spends PENDING.")
    running_seconds: float = Field(default=3.0, ge=0, description="Time a task spends RUNNING (rendering may add to it).")
    max_running: Optional[int] = Field(default=None, ge=1, description="Tasks RUNNING at once per model; default: the model's (2 kf2v, 5 wan2.7).")
    queue_limit: int = Field(default=500, ge=1, description="Tasks waiting PENDING per model before submissions are refused.")
    submit_rps: Optional[float] = Field(
        default=None, gt=0, description="Submissions per second per model; default: the model's (2, or 1 for wan2.1-kf2v-plus)."
    )
    task_ttl_seconds: float = Field(default=86_400, gt=0, description="After this a task id answers UNKNOWN.")
    video_ttl_seconds: float = Field(default=86_400, gt=0, description="After this a video URL answers 403.")
    upload_ttl_seconds: float = Field(default=48 * 3600, gt=0, description="Lifetime of oss:// uploads.")
    policy_ttl_seconds: int = Field(default=300, gt=0, description="Lifetime of an upload policy.")
    min_side: int = Field(default=240, description="Smallest accepted image side (2025 docs: 360).")
    max_side: int = Field(default=8000, description="Largest accepted image side (2025 docs: 2000).")
    fps: int = Field(default=30, ge=1, description="Frame rate of rendered videos.")
    faults: list[FaultRule] = Field(default_factory=list, description="Faults armed at start-up.")
    seed: int = Field(default=0, description="Seed of the fault dice, so fractions are reproducible.")
    tick_seconds: float = Field(default=0.05, gt=0, description="How often the scheduler advances tasks.")
    idle_timeout_seconds: int = Field(default=15, ge=1, description="Idle keep-alive connections are closed after this (load balancers: 15-60 s).")
    video_file: Optional[Path] = Field(
        default=None, description="Serve this video file for every task in place of the emulator's own render (benchmarks, tests)."
    )
    download_chunk_bytes: int = Field(default=64 * 1024, gt=0, description="Chunk size when serving videos.")
