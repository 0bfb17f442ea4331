"""``prefect-wan check``: the shot checks on any video file, or other thresholds applied again to
every archived shot from its stored motion profile (no video read)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from prefect_wan.cli.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:  # imported where used: a refusal must not wait for OpenCV and scikit-image to import
    from prefect_wan.media.shots import ShotThresholds


def load_thresholds(path: Optional[str]) -> ShotThresholds:
    """``ShotThresholds`` from a JSON or YAML file of its fields (defaults without one); exit 2 naming what is wrong."""
    from pydantic import ValidationError

    from prefect_wan.media.shots import ShotThresholds

    if path is None:
        return ShotThresholds()
    try:
        import yaml

        fields = yaml.safe_load(Path(path).read_text())
        return ShotThresholds.model_validate(fields or {})
    except FileNotFoundError:
        message = f"--thresholds {path}: no such file"
    except yaml.YAMLError as error:
        message = f"--thresholds {path}: not JSON or YAML ({str(error).splitlines()[0]})"
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in error.errors())
        message = f"--thresholds {path}: {problems}"
    typer.echo(f"Refused: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def check_file(video: str, first: Optional[str], last: Optional[str], duration: Optional[float], thresholds: ShotThresholds, as_json: bool) -> int:
    from prefect_wan.media.check import VideoCheckError, check_video

    try:
        checks = check_video(video, first_frame=first, last_frame=last, duration=duration, thresholds=thresholds)
    except VideoCheckError as error:
        typer.echo(f"Refused: {error}", err=True)
        return EXIT_BAD_INPUT
    if as_json:
        typer.echo(checks.model_dump_json(indent=2))
    else:
        from prefect_wan.cli.running import print_table

        rows = [{"check": i.name, "value": i.value, "threshold": i.threshold, "verdict": "passed" if i.passed else "FAILED"} for i in checks.items]
        print_table(rows, "")
        typer.echo(f"{video}: {checks.summary()}")
    return EXIT_OK if checks.passed else EXIT_FAILED


def check_archive(url: str, thresholds: ShotThresholds, as_json: bool) -> int:
    from prefect_wan.archive.destination import ArchiveDestination
    from prefect_wan.archive.errors import ArchiveDestinationError
    from prefect_wan.archive.listing import list_archive
    from prefect_wan.media.check import recheck

    try:
        entries, _unreadable = list_archive(ArchiveDestination.coerce(url))
    except ArchiveDestinationError as error:
        typer.echo(f"Refused: {error}", err=True)
        return EXIT_BAD_INPUT
    rows = []
    for entry in entries:
        record = entry.record
        if record is None:
            continue  # a storyboard: its transitions are checked as videos
        now = recheck(record, thresholds)
        before = entry.checks_text
        after = "no profile (archived by an older version)" if now is None else now.summary()
        flipped = now is not None and (entry.checks is None or now.passed != entry.checks.passed)
        rows.append(
            {"label": entry.label or record.fingerprint[:12], "archived": before, "now": after, "changed": "yes" if flipped else "", "video": entry.video_url}
        )
    if as_json:
        typer.echo(json.dumps({"shots": rows}, indent=2))
    else:
        from prefect_wan.cli.running import print_table

        failing = sum(1 for r in rows if r["now"].startswith("failed"))
        changed = sum(1 for r in rows if r["changed"])
        print_table(rows, "")
        typer.echo(f"{len(rows)} shots checked again from their profiles (no video read): {failing} fail, {changed} changed verdict")
    return EXIT_FAILED if any(r["now"].startswith("failed") for r in rows) else EXIT_OK
