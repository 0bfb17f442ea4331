"""Serve the flows from this process, no work pool needed: ``python deployments/serve.py``.

The batch runs nightly from a manifest; the pair flow runs whenever an upstream flow emits
``keyframes.pair.ready``. Both need a saved ``WanCredentials`` block named ``wan-singapore``.
"""

from __future__ import annotations

from prefect import serve
from prefect.events import DeploymentEventTrigger

from prefect_wan.flows import keyframes_batch, keyframes_to_video

MANIFEST = "s3://my-media/keyframes/tonight.yaml"
ARCHIVE = "s3://my-media/wan-archive"


def build_deployments():
    nightly = keyframes_batch.to_deployment(
        name="nightly-keyframes-served",
        cron="0 2 * * *",
        parameters={"manifest": MANIFEST, "destination": ARCHIVE, "credentials": "wan-singapore", "max_concurrent": 2},
        tags=["wan", "video"],
    )
    on_event = keyframes_to_video.to_deployment(
        name="keyframes-pair-served",
        parameters={"first_frame": "unset", "last_frame": "unset", "destination": ARCHIVE, "credentials": "wan-singapore"},
        triggers=[
            DeploymentEventTrigger(
                expect={"keyframes.pair.ready"},
                match={"prefect.resource.id": "keyframes.*"},
                parameters={
                    "first_frame": "{{ event.payload.first_frame }}",
                    "last_frame": "{{ event.payload.last_frame }}",
                    "prompt": "{{ event.payload.prompt }}",
                    "label": "{{ event.payload.label }}",
                },
            )
        ],
        tags=["wan", "video"],
    )
    return [nightly, on_event]


if __name__ == "__main__":
    serve(*build_deployments())
