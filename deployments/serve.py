"""Serve the deployments of ``prefect.yaml`` from this process, no work pool needed:
``python deployments/serve.py``.

Built from ``prefect.yaml`` itself, so the two never drift apart: the nightly batch (cron and time
zone, the run concurrency limit) and the pair flow started by ``keyframes.pair.ready`` events.
Both need a saved ``WanCredentials`` block named ``wan-singapore`` and real archive and manifest
locations in place of the ``s3://my-media`` placeholders.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from prefect import serve
from prefect.client.schemas.schedules import CronSchedule
from prefect.events import DeploymentEventTrigger

PREFECT_YAML = Path(__file__).with_name("prefect.yaml")


def _flow(entrypoint: str) -> Any:
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def _trigger(spec: dict[str, Any]) -> DeploymentEventTrigger:
    fields = {key: value for key, value in spec.items() if key != "type"}
    return DeploymentEventTrigger(**fields)


def build_deployments() -> list:
    """One ``RunnerDeployment`` per entry of ``prefect.yaml``."""
    deployments = []
    for spec in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]:
        schedules = [CronSchedule(cron=s["cron"], timezone=s.get("timezone")) for s in spec.get("schedules", [])]
        deployments.append(
            _flow(spec["entrypoint"]).to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=spec.get("parameters", {}),
                schedules=schedules or None,
                concurrency_limit=spec.get("concurrency_limit"),
                triggers=[_trigger(t) for t in spec.get("triggers", [])] or None,
            )
        )
    return deployments


if __name__ == "__main__":
    serve(*build_deployments())
