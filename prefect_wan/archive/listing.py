"""What an archive holds, read from its sidecars (the videos themselves are never opened)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Optional

from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.errors import ArchiveDestinationError
from prefect_wan.archive.record import ArchiveRecord, CostEstimate, ShotChecks, StoryboardRecord

PROMPT_EXCERPT = 60


class ArchiveEntry(BaseModel):
    """One archived video or storyboard, as ``prefect-wan ls`` shows it."""

    kind: str = Field(description="video or storyboard")
    label: Optional[str] = None
    model: Optional[str] = None
    width: int
    height: int
    seconds: float
    bytes: int
    cost: CostEstimate
    archived_at: datetime
    prompt: Optional[str] = None
    video_url: str
    sidecar_url: str
    task_id: Optional[str] = None
    checks: Optional[ShotChecks] = Field(default=None, description="The shot checks (videos archived by this version).")
    rendered_by: Optional[str] = Field(default=None, description="'the prefect-wan emulator' for its renderings (not the model's).")
    _record: Optional[ArchiveRecord] = PrivateAttr(default=None)

    @property
    def record(self) -> Optional[ArchiveRecord]:
        """The video's whole sidecar (None for a storyboard)."""
        return self._record

    @property
    def checks_text(self) -> str:
        if self.checks is None:
            return "not checked" if self.kind == "video" else ""
        return "passed" if self.checks.passed else "failed: " + ", ".join(self.checks.failed)

    @property
    def prompt_excerpt(self) -> str:
        text = " ".join((self.prompt or "").split())
        return text if len(text) <= PROMPT_EXCERPT else text[: PROMPT_EXCERPT - 1] + "…"


class UnreadableSidecar(BaseModel):
    path: str
    reason: str


def list_archive(destination: ArchiveDestination) -> tuple[list[ArchiveEntry], list[UnreadableSidecar]]:
    """Every archived video and storyboard under the destination's root, oldest first, and the
    sidecars that could not be read (listed, never skipped in silence)."""
    fs, root = destination.filesystem()
    try:
        names = [name for name in fs.ls(root, detail=False) if str(name).endswith(".json")]
    except FileNotFoundError:
        raise ArchiveDestinationError(f"no archive at {destination.url}: nothing there yet, or a wrong path") from None
    except Exception as error:  # botocore's errors are not OSErrors
        raise ArchiveDestinationError(destination.explain(error, "list")) from None
    entries, unreadable = [], []
    for name in names:
        if "/." in name or ".partial-" in name:
            continue  # write checks and unfinished writes
        try:
            document = json.loads(fs.cat_file(name))
        except (OSError, ValueError) as error:
            unreadable.append(UnreadableSidecar(path=fs.unstrip_protocol(name), reason=f"{type(error).__name__}: {error}"))
            continue
        if not isinstance(document, dict) or document.get("producer") != "prefect-wan":
            continue  # someone else's JSON
        try:
            entries.append(_entry(document, fs.unstrip_protocol(name)))
        except ValidationError as error:
            unreadable.append(
                UnreadableSidecar(path=fs.unstrip_protocol(name), reason=f"not a prefect-wan sidecar this version reads: {error.error_count()} problem(s)")
            )
    return sorted(entries, key=lambda e: e.archived_at), unreadable


def _entry(document: dict, sidecar_url: str) -> ArchiveEntry:
    if document.get("kind") == "storyboard":
        board = StoryboardRecord.model_validate(document)
        return ArchiveEntry(
            kind="storyboard",
            label=board.label,
            model=", ".join(sorted({s.model for s in board.segments if s.model})) or None,
            width=board.probe.width,
            height=board.probe.height,
            seconds=board.probe.duration_seconds,
            bytes=board.video.bytes,
            cost=board.total_cost,
            archived_at=board.archived_at,
            prompt=f"{len(board.segments)} transitions",
            video_url=board.video.url,
            sidecar_url=sidecar_url,
        )
    record = ArchiveRecord.model_validate(document)
    entry = ArchiveEntry(
        kind="video",
        label=record.label,
        model=record.request.model,
        width=record.probe.width,
        height=record.probe.height,
        seconds=record.probe.duration_seconds,
        bytes=record.video.bytes,
        cost=record.cost,
        archived_at=record.archived_at,
        prompt=record.request.prompt,
        video_url=record.video.url,
        sidecar_url=sidecar_url,
        task_id=record.task_id,
        checks=record.checks,
        rendered_by=record.probe.rendered_by,
    )
    entry._record = record
    return entry
