"""Prefect where its users are: a run's link printed when a server is configured, and a failing
pair's whole reason on its one line."""

from __future__ import annotations

import os
import subprocess

import yaml
from prefect.settings import PREFECT_API_URL

from tests.test_first_ten_minutes import CLI
from tests.test_flows import FIRST, LAST


def test_a_run_on_a_configured_server_says_its_name_and_a_failing_pair_its_whole_reason(prefect_harness, emulator, tmp_path):
    manifest = tmp_path / "linked.yaml"
    pairs = [
        {"first_frame": FIRST, "last_frame": LAST, "prompt": "fine", "label": "fine", "seed": 5300},
        {"first_frame": str(tmp_path / "gone.png"), "last_frame": LAST, "prompt": "gone", "label": "gone", "seed": 5301},
    ]
    manifest.write_text(yaml.safe_dump({"pairs": pairs}))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "DASHSCOPE_API_KEY": emulator.api_key}
    region = emulator.credentials().region
    args = ["batch", str(manifest), "--base-url", emulator.base_url, "--region", region, "--resolution", "480P", "--dest", str(tmp_path / "a")]
    done = subprocess.run(CLI + args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert "Run wan-batch-linked" in done.stderr, done.stderr[-3000:]
    gone = next(line for line in done.stderr.splitlines() if line.startswith("gone: failed"))
    assert "gone.png" in gone and "no such file" in gone, gone  # the reason, not only "1 problem(s):"


async def test_the_emulator_saves_its_block_and_a_deployment_runs_the_example_manifest_against_it(prefect_harness, runner, tmp_path):
    """One command sets up the deployments against the emulator; a served deployment (a real runner
    process) runs the shipped example manifest, unedited, through it."""
    import asyncio
    import socket
    import time
    from pathlib import Path

    from prefect.client.orchestration import get_client
    from prefect.deployments import arun_deployment

    from prefect_wan.blocks import WanCredentials
    from tests.helpers import stop_process

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    args = ["emulator", "--port", str(port), "--save-block", "wan-emulated", "--pending-seconds", "0.05", "--running-seconds", "0.3"]
    server = subprocess.Popen(CLI + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                block = await WanCredentials.aload("wan-emulated")
                break
            except ValueError:
                assert server.poll() is None and time.monotonic() < deadline
                await asyncio.sleep(0.3)
        assert block.base_url is not None and str(port) in str(block.base_url)
        manifest = Path(__file__).resolve().parent.parent / "deployments" / "manifests" / "example.yaml"
        run = await arun_deployment(
            "keyframes-batch/cancel-test",
            timeout=0,
            parameters={"manifest": str(manifest), "credentials": "wan-emulated", "destination": str(tmp_path / "archive"), "options": {"resolution": "480P"}},
        )
        async with get_client() as client:
            deadline = time.monotonic() + 180
            while not (state := (await client.read_flow_run(run.id)).state) or not state.is_final():
                assert time.monotonic() < deadline, state
                await asyncio.sleep(0.5)
        assert state.is_completed(), state
        assert len(list((tmp_path / "archive").glob("*.mp4"))) == 2  # sunrise and sunset
    finally:
        stop_process(server)


def test_every_name_the_readme_imports_is_importable_where_it_says():
    import importlib
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    imports = [
        (m, n) for block in blocks for m, names in re.findall(r"^\s*from (prefect_wan[\w.]*) import ([^\n(]+)$", block, re.MULTILINE) for n in names.split(",")
    ]
    assert len(imports) >= 5
    missing = [f"{module}.{name.strip()}" for module, name in imports if not hasattr(importlib.import_module(module), name.strip().split(" as ")[0])]
    assert missing == [], missing
