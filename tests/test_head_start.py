"""The command's first pair, sent before Prefect loads: paid once, taken by the run as its own,
cancelled when no run takes it, and only where nothing but the account governs the create."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest
import yaml
from prefect.settings import PREFECT_API_URL
from prefect.utilities.hashing import hash_objects

from prefect_wan.cli.ahead import head_start
from prefect_wan.cli.options import TargetFlags
from prefect_wan.client.access import ServiceAccess
from prefect_wan.client.regions import Region
from prefect_wan.emulator import run_emulator
from prefect_wan.flows import GenerationOptions
from prefect_wan.ledger.keys import submission_key
from tests.helpers import make_image
from tests.test_flows import FIRST, LAST

# The command, with the moment Prefect is first imported written down.
TRACED_CLI = textwrap.dedent(
    """
    import sys, time
    IMPORTED = sys.argv[1]
    class Watch:
        def find_spec(self, name, path=None, target=None):
            if name == "prefect":
                open(IMPORTED, "w").write(repr(time.time()))
                sys.meta_path.remove(self)
            return None
    sys.meta_path.insert(0, Watch())
    from prefect_wan.cli import main
    sys.argv = ["prefect-wan", *sys.argv[2:]]
    main()
    """
)


def _manifest(folder: Path, prompts: list[str]) -> Path:
    path = folder / "pairs.yaml"
    path.write_text(yaml.safe_dump({"pairs": [{"first_frame": FIRST, "last_frame": LAST, "prompt": p, "label": f"p{i}"} for i, p in enumerate(prompts)]}))
    return path


def _batch(tmp_path: Path, emulator, manifest: Path, *, command: str = "batch", **env: str) -> tuple[subprocess.CompletedProcess, Optional[float]]:
    """``prefect-wan batch`` (or ``command``) against ``emulator``; its output and when it imported Prefect."""
    imported = tmp_path / "prefect-imported"
    imported.unlink(missing_ok=True)
    args = [sys.executable, "-c", TRACED_CLI, str(imported), command, str(manifest), "--base-url", emulator.base_url, "--dest", str(tmp_path / "archive")]
    args += ["--model", "wan2.7-i2v", "--resolution", "720P"]  # 0.5 USD a pair in Singapore
    environment = {**os.environ, "DASHSCOPE_API_KEY": emulator.api_key, "PREFECT_HOME": str(tmp_path / "home"), **env}
    done = subprocess.run(args, env=environment, capture_output=True, text=True, timeout=240)
    return done, float(imported.read_text()) if imported.exists() else None


def _records(home: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in (home / "prefect-wan" / "submissions").glob("*.json")]


def test_the_first_pair_is_sent_before_prefect_loads_and_the_run_takes_it_as_its_own(prefect_harness, emulator, tmp_path):
    manifest = _manifest(tmp_path, ["ahead one", "ahead two", "ahead three"])
    done, imported = _batch(tmp_path, emulator, manifest, PREFECT_API_URL=PREFECT_API_URL.value())
    assert done.returncode == 0, done.stderr[-3000:]
    assert imported is not None
    created = sorted(emulator.state.wall(task.created).timestamp() for task in emulator.state.tasks.values())
    assert len(created) == 3 and emulator.counters().submissions_accepted == 3  # paid once per pair
    assert created[0] < imported, "the first create waited for Prefect"
    # Charged to the run like the pairs it sent itself.
    assert "3 archived (0 already there), 0 failed; spent 1.5 USD" in done.stdout and "Not taken" not in done.stderr
    # Every attempt belongs to the run (which cancels it if stopped), none to the command.
    senders = {attempt["flow_run_id"] for record in _records(tmp_path / "home") for attempt in record["attempts"]}
    assert len(senders) == 1 and not next(iter(senders)).startswith("prefect-wan-command")

    again, _ = _batch(tmp_path, emulator, manifest, PREFECT_API_URL=PREFECT_API_URL.value())
    assert again.returncode == 0 and "3 archived (3 already there)" in again.stdout, again.stderr[-3000:]
    assert emulator.counters().submissions_accepted == 3, "an archived pair was sent ahead again"


def test_a_storyboard_sends_its_first_transition_ahead_and_refuses_mixed_shapes_before_prefect(prefect_harness, emulator, tmp_path):
    board = tmp_path / "board.yaml"
    board.write_text(yaml.safe_dump({"keyframes": [FIRST, LAST, FIRST], "label": "ahead-board", "prompts": "a storyboard sent ahead"}))
    done, imported = _batch(tmp_path, emulator, board, command="storyboard", PREFECT_API_URL=PREFECT_API_URL.value())
    assert done.returncode == 0, done.stderr[-3000:]
    created = sorted(emulator.state.wall(task.created).timestamp() for task in emulator.state.tasks.values())
    assert len(created) == 2 and emulator.counters().submissions_accepted == 2 and imported is not None and created[0] < imported

    # A keyframe of another shape: refused with every keyframe read, before Prefect and before any request.
    wide = tmp_path / "wide.png"
    wide.write_bytes(make_image(960, 400))
    board.write_text(yaml.safe_dump({"keyframes": [FIRST, LAST, str(wide)], "label": "mixed-board"}))
    requests = emulator.counters().api_requests
    refused, imported = _batch(tmp_path, emulator, board, command="storyboard")
    assert refused.returncode == 2 and imported is None and emulator.counters().api_requests == requests, refused.stderr[-3000:]
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) <= 2 and lines[0].startswith("Refused before sending") and "wide.png" in lines[0], lines


@pytest.mark.parametrize(
    "fault",
    [
        {"op": "submit", "status": 429, "code": "Throttling.RateQuota", "message": "Requests rate limit exceeded"},  # nothing created
        {"op": "submit", "action": "drop"},  # created, its answer lost
    ],
)
def test_a_first_send_refused_or_unanswered_is_settled_once(prefect_harness, emulator, tmp_path, fault):
    emulator.inject(**fault, count=1)
    done, _ = _batch(
        tmp_path, emulator, _manifest(tmp_path, [f"settled {fault['op']} {fault.get('action', 'error')}"]), PREFECT_API_URL=PREFECT_API_URL.value()
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert emulator.counters().submissions_accepted == 1 and "1 archived (0 already there), 0 failed; spent 0.5 USD" in done.stdout, done.stdout


def test_a_first_pair_whose_frames_cannot_be_read_fails_alone(prefect_harness, emulator, tmp_path):
    manifest = tmp_path / "pairs.yaml"
    (tmp_path / "broken.png").write_bytes(b"not a picture")  # there (a missing file is refused before anything starts), but unreadable
    pairs = [
        {"first_frame": str(tmp_path / "broken.png"), "last_frame": LAST, "label": "gone"},
        {"first_frame": FIRST, "last_frame": LAST, "label": "fine", "prompt": "alone"},
    ]
    manifest.write_text(yaml.safe_dump({"pairs": pairs}))
    done, _ = _batch(tmp_path, emulator, manifest, PREFECT_API_URL=PREFECT_API_URL.value())
    assert done.returncode == 1, done.stderr[-3000:]
    assert "1 archived (0 already there), 1 failed" in done.stdout and emulator.counters().submissions_accepted == 1, done.stdout
    assert [line for line in done.stderr.splitlines() if line.startswith("gone: failed")], done.stderr[-3000:]


def test_a_task_sent_ahead_that_no_run_takes_is_cancelled_while_queued(tmp_path):
    manifest = _manifest(tmp_path, ["never run"])
    with run_emulator(pending_seconds=600, running_seconds=0.2, submit_rps=1000.0) as emulator:
        # A configured server that is not there: the run cannot start.
        done, _ = _batch(tmp_path, emulator, manifest, PREFECT_API_URL="http://127.0.0.1:9/api", PREFECT_CLIENT_MAX_RETRIES="0")
        counters = emulator.counters()
        statuses = [task.status.value for task in emulator.state.tasks.values()]
    assert done.returncode != 0
    assert counters.submissions_accepted == 1 and counters.cancels == 1 and statuses == ["CANCELED"], (statuses, done.stderr[-3000:])
    said = [line for line in done.stderr.splitlines() if line.startswith("Not taken by the run")]
    assert len(said) == 1 and "was canceled while queued (not billed)" in said[0], done.stderr[-3000:]
    (record,) = _records(tmp_path / "home")
    assert record["attempts"][0]["state"] == "canceled" and record["current"] is None


def _target(**changes: object) -> TargetFlags:
    flags = dict(
        dest="a", credentials=None, region=Region.SINGAPORE, base_url=None, workspace=None, force=False, max_cost=None, coordination=None, verbose=False
    )
    return TargetFlags(**{**flags, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes, review, fan_out",
    [
        ({"max_cost": "1 USD"}, False, False),
        ({"force": True}, False, False),
        ({"coordination": "shared"}, False, False),
        ({}, True, False),
        ({}, False, True),
    ],
)
def test_only_the_account_may_govern_a_create_sent_ahead(changes, review, fan_out):
    access = ServiceAccess(api_key="sk-1")
    assert head_start(access, _target(), GenerationOptions()) is not None
    assert head_start(access, _target(**changes), GenerationOptions(), review=review, fan_out=fan_out) is None
    assert head_start("saved-block", _target(), GenerationOptions()) is None


def test_the_submission_key_is_prefects_hash_of_the_work():
    for fingerprint, region, host, workspace in [("f" * 64, "beijing", "http://localhost", None), ("é", "singapore", "https://x", "ws-1")]:
        assert (
            submission_key(fingerprint, region=region, base_url=host, workspace=workspace)
            == f"prefect-wan-submit-{hash_objects(fingerprint, region, host, workspace)}"
        )


PLACES = "from prefect_wan.ledger.places import PrefectPlaces as P; print(P.read() == P.of_prefect(), P.read() is None)"


@pytest.mark.parametrize(
    "case",
    ["home", "profile api", "profile home", "environment database", "dotenv", "prefect.toml"],
)
def test_prefects_places_are_read_without_it_as_prefect_reads_them(tmp_path, case):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"PREFECT_HOME": str(home)}
    if case == "profile api":
        (home / "profiles.toml").write_text('active = "mine"\n[profiles.mine]\nPREFECT_API_URL = "http://127.0.0.1:4200/api"\n')
    elif case == "profile home":
        (home / "profiles.toml").write_text(f'active = "mine"\n[profiles.mine]\nPREFECT_HOME = "{tmp_path / "elsewhere"}"\n')
    elif case == "environment database":
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp_path}/other.db"
    elif case == "dotenv":
        (work / ".env").write_text(f"PREFECT_HOME={tmp_path / 'dotenv-home'}\n")
    elif case == "prefect.toml":
        (work / "prefect.toml").write_text(f'home = "{tmp_path / "toml-home"}"\n')
    done = subprocess.run([sys.executable, "-c", PLACES], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    agrees, unknown = done.stdout.split()
    if case in ("dotenv", "prefect.toml"):
        assert unknown == "True", "a settings file in the working folder is Prefect's to read"
    else:
        assert agrees == "True", done.stderr[-2000:]
