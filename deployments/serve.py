"""Serve the deployments of ``prefect.yaml`` from this process, no work pool needed:
``python deployments/serve.py`` (from the repository root or from ``deployments/``;
``--list`` prints what it would serve and exits).

Built from ``prefect.yaml`` itself, so the two never drift apart: the nightly batch (cron and time
zone, the run concurrency limit) and the pair flow started by ``keyframes.pair.ready`` events.
Both need a saved ``WanCredentials`` block named ``wan-singapore`` and real archive and manifest
locations in place of the ``s3://my-media`` placeholders.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from prefect import serve
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

PREFECT_YAML = Path(__file__).with_name("prefect.yaml")
# Entrypoints are paths from the repository root (as `prefect deploy` reads them): importable
# however this script was started.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# And from the root as the working folder: Prefect before 3.8 records a served flow's entrypoint
# relative to it, and refuses a flow file outside it (started from deployments/).
os.chdir(ROOT)


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
        # The slug `prefect deploy` gave each schedule: without it, serving after a deploy is refused (HTTP 422).
        schedules = [Cron(s["cron"], timezone=s.get("timezone"), slug=s.get("slug")) for s in spec.get("schedules", [])]
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
    built = build_deployments()
    if "--list" in sys.argv[1:]:
        print("\n".join(f"{d.flow_name}/{d.name}" for d in built))
    else:
        serve(*built)
