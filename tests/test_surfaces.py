"""What users touch besides the flows: manifests, deployments, the CLI."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL

from prefect_wan.flows import ManifestError, load_manifest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "prefect_wan" / "examples"


@pytest.mark.parametrize("suffix", ["csv", "json", "yaml"])
def test_manifest_formats_resolve_relative_paths(tmp_path, suffix):
    rows = [
        {"first_frame": "frames/a.png", "last_frame": "/abs/b.png", "prompt": "p", "label": "one", "seed": "7"},
        {"first_frame": "s3://bucket/c.png", "last_frame": "d.png", "prompt": "q", "label": "", "seed": ""},
    ]
    path = tmp_path / f"m.{suffix}"
    if suffix == "csv":
        path.write_text("first_frame,last_frame,prompt,label,seed\n" + "\n".join(",".join(r.values()) for r in rows) + "\n")
    elif suffix == "json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text(yaml.safe_dump({"pairs": rows}))
    pairs = load_manifest(str(path))
    assert pairs[0].first_frame == str(tmp_path / "frames/a.png") and pairs[0].last_frame == "/abs/b.png"
    assert pairs[0].seed == 7 and pairs[1].label is None and pairs[1].seed is None
    assert pairs[1].first_frame == "s3://bucket/c.png" and pairs[1].last_frame == str(tmp_path / "d.png")


def test_manifest_on_fsspec_resolves_against_its_own_url():
    fsspec.filesystem("memory").pipe("/jobs/m.yaml", b"- {first_frame: a.png, last_frame: sub/b.png}\n")
    pairs = load_manifest("memory://jobs/m.yaml")
    assert (pairs[0].first_frame, pairs[0].last_frame) == ("memory://jobs/a.png", "memory://jobs/sub/b.png")


@pytest.mark.parametrize(
    "name,content,words",
    [
        ("m.txt", "x", "must end in .csv"),
        ("m.yaml", "pairs: 3", "expected a list"),
        ("m.json", "{not json", "not valid JSON"),
        ("m.yaml", "- {last_frame: b.png}", "pair 1: first_frame: Field required"),
        ("m.yaml", "- {first_frame: a.png, seed: many}", "pair 1: seed"),
        ("m.yaml", "[]", "no pairs"),
    ],
)
def test_manifest_errors_name_the_problem(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ManifestError, match=words):
        load_manifest(str(path))
    with pytest.raises(ManifestError, match="no such manifest"):
        load_manifest(str(tmp_path / "absent.yaml"))


def test_prefect_yaml_deployments_match_their_flows():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    from prefect.client.schemas.schedules import CronSchedule

    names = []
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        flow.validate_parameters(deployment["parameters"])  # raises on a parameter the flow would refuse
        for schedule in deployment.get("schedules", []):
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
        names.append((deployment["name"], flow.name))
    assert names == [
        ("nightly-keyframes", "keyframes-batch"),
        ("keyframes-pair", "keyframes-to-video"),
        ("storyboard-published", "storyboard-published"),
    ]


async def test_serve_example_registers_against_a_server(prefect_harness):
    from prefect.client.orchestration import get_client

    spec = importlib.util.spec_from_file_location("serve_example", ROOT / "deployments" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The example is sync code run from __main__; build it the way a user does (no running loop).
    deployments = await asyncio.to_thread(module.build_deployments)
    ids = [await deployment.apply() for deployment in deployments]
    async with get_client() as client:
        stored = [await client.read_deployment(i) for i in ids]
    assert [d.name for d in stored] == ["nightly-keyframes", "keyframes-pair", "storyboard-published"]
    assert stored[0].schedules[0].schedule.cron == "0 2 * * *"


def _cli(*args: str, emulator=None, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("DASHSCOPE_API_KEY", None)
    if emulator is not None:
        env["DASHSCOPE_API_KEY"] = emulator.api_key
        args = (*args, "--base-url", emulator.base_url)
    return subprocess.run([sys.executable, "-m", "prefect_wan.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_generate_and_its_exit_codes(prefect_harness, emulator, tmp_path):
    first, last = str(EXAMPLES / "first.png"), str(EXAMPLES / "last.png")
    done = _cli("generate", first, last, "--prompt", "cli", "--resolution", "480P", "--seed", "401", "--dest", str(tmp_path), emulator=emulator)
    assert done.returncode == 0, done.stderr
    assert "video: file://" in done.stdout and emulator.counters().submissions_accepted == 1
    again = _cli("generate", first, last, "--prompt", "cli", "--resolution", "480P", "--seed", "401", "--dest", str(tmp_path), emulator=emulator)
    assert again.returncode == 0 and "already archived" in again.stdout
    refused = _cli("generate", first, last, "--seed", "-3", "--dest", str(tmp_path), emulator=emulator)
    assert refused.returncode == 2 and "seed=-3" in refused.stderr
    no_key = _cli("generate", first, last, "--dest", str(tmp_path))
    assert no_key.returncode == 2 and "DASHSCOPE_API_KEY" in no_key.stderr
    emulator.inject(op="task", action="fail", code="DataInspectionFailed", message="Input data may contain inappropriate content.")
    failed = _cli("generate", first, last, "--seed", "402", "--resolution", "480P", "--dest", str(tmp_path), emulator=emulator)
    assert failed.returncode == 1 and "DataInspectionFailed" in failed.stderr
    assert emulator.counters().submissions_accepted == 2


def test_cli_batch_with_the_example_manifest(prefect_harness, emulator, tmp_path):
    manifest = str(ROOT / "deployments" / "manifests" / "example.yaml")
    done = _cli("batch", manifest, "--resolution", "480P", "--seed", "403", "--dest", str(tmp_path), emulator=emulator)
    assert done.returncode == 0, done.stderr
    assert "2 archived" in done.stdout and len(list(tmp_path.glob("*.mp4"))) == 2


def test_cli_storyboard_with_the_example_manifest(prefect_harness, emulator, tmp_path):
    manifest = str(ROOT / "deployments" / "manifests" / "storyboard.yaml")
    done = _cli("storyboard", manifest, "--resolution", "480P", "--dest", str(tmp_path), emulator=emulator)
    assert done.returncode == 0, done.stderr
    assert "2 transitions, joined by remux" in done.stdout and emulator.counters().submissions_accepted == 2
    assert len(list(tmp_path.glob("*.mp4"))) == 3 and len(list(tmp_path.glob("*.png"))) == 3
    typo = tmp_path / "typo.yaml"
    typo.write_text("keyframs: [a.png, b.png]\n")
    refused = _cli("storyboard", str(typo), "--dest", str(tmp_path), emulator=emulator)
    assert refused.returncode == 2 and "did you mean 'keyframes'" in refused.stderr
