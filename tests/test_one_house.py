"""The house's promises: a pair is prepared once per run (its frames read once), every error is a
WanError listed on the README's errors page, and the layers import one way only."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import prefect_wan
import prefect_wan.client.preflight as preflight
from prefect_wan.client.errors import WanError
from prefect_wan.flows import GenerationOptions, KeyframePair, keyframes_batch, keyframes_storyboard, keyframes_to_video
from tests.helpers import make_image
from tests.test_spend import POLL, PRICED

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def reads(monkeypatch) -> Counter:
    """Every frame read by preflight, by source."""
    counted: Counter = Counter()
    real = preflight.read_source

    async def counting(source, **kwargs):
        counted[str(source)] += 1
        return await real(source, **kwargs)

    monkeypatch.setattr(preflight, "read_source", counting)
    return counted


def frames(folder: Path, count: int) -> list[str]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"f{i}.png"
        path.write_bytes(make_image(480, 640, (30 * i % 255, 200, 90)))
        paths.append(str(path))
    return paths


async def test_generate_reads_each_frame_once_with_the_cli_check(prefect_harness, emulator, tmp_path, reads):
    from prefect_wan.cli.running import precheck

    first, last = frames(tmp_path / "frames", 2)
    options = GenerationOptions(resolution="480P", seed=9101)
    credentials = emulator.credentials()
    pair = KeyframePair(first_frame=first, last_frame=last, prompt="p")
    await precheck(credentials, str(tmp_path / "archive"), pair=pair, options=options)  # what `prefect-wan generate` checks first
    video = await keyframes_to_video(first, last, prompt="p", options=options, credentials=credentials, destination=str(tmp_path / "archive"), poll=POLL)
    assert emulator.counters().submissions_accepted == 1 and not video.reused
    assert reads == {first: 1, last: 1}


async def test_a_batch_reads_each_pairs_frames_once(prefect_harness, emulator, tmp_path, reads):
    paths = frames(tmp_path / "frames", 6)
    todo = [KeyframePair(first_frame=paths[2 * i], last_frame=paths[2 * i + 1], prompt="p", label=f"p{i}") for i in range(3)]
    result = await keyframes_batch(
        pairs=todo, options=GenerationOptions(resolution="480P", seed=9201), credentials=emulator.credentials(), destination=str(tmp_path / "a"), poll=POLL
    )
    assert len(result.videos) == 3 and emulator.counters().submissions_accepted == 3
    assert reads == dict.fromkeys(paths, 1)


async def test_a_storyboard_with_a_budget_reads_each_transition_once(prefect_harness, emulator, tmp_path, reads):
    keys = frames(tmp_path / "frames", 3)
    board = await keyframes_storyboard(
        keys,
        prompts="x",
        options=GenerationOptions(**PRICED, seed=9301),
        label="once",
        credentials=emulator.credentials(),
        destination=str(tmp_path / "a"),
        poll=POLL,
        max_cost="5 USD",
    )
    assert len(board.record.segments) == 2 and emulator.counters().submissions_accepted == 2
    # Each transition reads its two keyframes once: the inner keyframe belongs to two transitions.
    assert reads == {keys[0]: 1, keys[1]: 2, keys[2]: 1}


def _every_error() -> set[type[WanError]]:
    for module in pkgutil.walk_packages(prefect_wan.__path__, "prefect_wan."):
        if ".emulator" not in module.name and module.name != "prefect_wan.cli.__main__":
            importlib.import_module(module.name)
    found: set[type[WanError]] = set()
    todo = [WanError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("prefect_wan.") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found | {WanError}


def test_every_error_is_a_wan_error_on_the_errors_page():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Errors", 1)[1].split("\n## ", 1)[0]
    listed = {match: row for match, row in re.findall(r"^\| `(\w+)` \|(.*)$", section, re.MULTILINE)}
    errors = _every_error()
    assert {e.__name__ for e in errors} == set(listed), "README's errors page and the code disagree"
    for error in errors:
        retryable = "yes" if error.retryable else "no"
        assert f"| {retryable} |" in listed[error.__name__], f"{error.__name__}: retryable={error.retryable}"
        assert f"`{error.__module__}`" in listed[error.__name__], f"{error.__name__} is defined in {error.__module__}"
    # Errors that also stand for a builtin kind keep it, so callers catching ValueError/OSError still do.
    for error in errors:
        assert issubclass(error, WanError) and inspect.isclass(error)


def test_the_layers_import_one_way():
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "0 broken" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
