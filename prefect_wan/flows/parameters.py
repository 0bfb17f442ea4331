"""The parameters every prefect-wan flow shares, declared once.

Each flow takes them as one typed group; ``expand_groups`` shows each field to Prefect as a
parameter of its own (the deployment's schema, the UI's run form, validation of deployment runs).
"""

from __future__ import annotations

from typing import Any, Optional, Union

from prefect.filesystems import LocalFileSystem, RemoteFileSystem
from pydantic import ConfigDict, Field

from prefect_wan.archive.destination import DEFAULT_DESTINATION
from prefect_wan.blocks.coordination import WanCoordination
from prefect_wan.blocks.credentials import WanCredentials
from prefect_wan.client.polling import PollSchedule
from prefect_wan.flows.models import GenerationOptions
from prefect_wan.flows.quality import QualityGate
from prefect_wan.signatures import ParameterGroup
from prefect_wan.spend.budget import Budget

Destination = Union[str, RemoteFileSystem, LocalFileSystem, None]

# Measured with bench/scheduler.py (2 running slots, equal generation times): makespan over ideal
# 1.040 at 2 in flight, 1.008 at 3 and 4, 1.009 at 6. Real generation times vary (1-5 min), and two
# tasks ending together drain a queue of one; 6 keeps four queued while committing little ahead.
DEFAULT_IN_FLIGHT = 6
SERVICE_QUEUE_LIMIT = 500


class RunParameters(ParameterGroup):
    """How a run generates, where it archives, what it may spend and where its shared state lives."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    options: GenerationOptions = Field(
        default_factory=GenerationOptions,
        description="Model, resolution, duration, seed and the other generation options (a pair's own fields win).",
    )
    credentials: Union[WanCredentials, str, None] = Field(
        default=None, description="A WanCredentials block, the name of a saved one, or None for DASHSCOPE_API_KEY."
    )
    destination: Destination = Field(
        default=DEFAULT_DESTINATION,
        description="fsspec URL of the archive (s3://bucket/prefix, file://..., memory://...) or a filesystem block.",
    )
    storage_options: Optional[dict[str, Any]] = Field(default=None, description="fsspec options for the destination.")
    force: bool = Field(default=False, description="Generate and archive again even what is archived.")
    poll: Optional[PollSchedule] = Field(default=None, description="When to ask the service for news (defaults suit the real service).")
    max_cost: Union[Budget, str, None] = Field(
        default=None,
        description="The most this run may commit, with its currency ('12.5 CNY'): work that would take it past "
        "is not submitted. Archived and reused work costs nothing.",
    )
    dry_run: bool = Field(
        default=False,
        description="Only plan: preflight, say what is archived, reusable or to submit and at what cost, and send nothing.",
    )
    quality: Optional[QualityGate] = Field(
        default=None,
        description="Retakes for shots that fail their checks (QualityGate(retakes=2)); every video is checked either way.",
    )
    coordination: Union[WanCoordination, str, None] = Field(
        default=None,
        description="Where submission records and submit locks live: a WanCoordination block, its saved name, or None "
        "(the block named by PREFECT_WAN_COORDINATION, else this machine).",
    )


class InFlightParameters(ParameterGroup):
    """How much of the account's capacity a run of many pairs takes."""

    max_in_flight: int = Field(
        default=DEFAULT_IN_FLIGHT,
        ge=1,
        le=SERVICE_QUEUE_LIMIT,
        description="Pairs submitted and not yet finished, at most (the service queues what its 2 or 5 running slots "
        "cannot take yet, so a slot never waits for us): the one bound on what a run has committed at once.",
    )
    concurrency_limit: Optional[str] = Field(default=None, description="Name of a Prefect global concurrency limit to hold while a pair is in flight.")
    rate_limit: Optional[str] = Field(default=None, description="Name of a Prefect rate limit (slot decay) to take before each submission.")
