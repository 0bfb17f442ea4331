"""What a run shows in the Prefect UI and tells automations: artifacts and events."""

from __future__ import annotations

import base64
import io
import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Optional, Sequence

import fsspec
from PIL import Image
from prefect.artifacts import acreate_link_artifact, acreate_markdown_artifact, acreate_table_artifact
from prefect.events import emit_event

from prefect_wan.archive.record import CostEstimate, ShotChecks, StoryboardRecord
from prefect_wan.flows.models import ArchivedVideo, BatchResult

if TYPE_CHECKING:
    from prefect_wan.flows.plan import RunPlan

ARCHIVED_EVENT = "prefect_wan.video.archived"
FAILED_EVENT = "prefect_wan.video.failed"
FLAGGED_EVENT = "prefect_wan.video.flagged"


def artifact_key(text: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:100] or "wan"


def _resource(fingerprint: str, label: str) -> dict[str, str]:
    return {"prefect.resource.id": f"prefect_wan.video.{fingerprint}", "prefect.resource.name": label}


def _local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def link(text: str, url: str, view_url: Optional[str] = None) -> str:
    """A link the UI can open (the view URL when there is one), else, for a file on the machine that
    archived it, the path as text: a browser opens no local file from a web page."""
    if view_url:
        return f"[{text}]({view_url})"
    return f"`{url}` (on the machine that archived it)" if _local(url) else f"[{text}]({url})"


async def report_archived(video: ArchivedVideo) -> None:
    record = video.record
    key = artifact_key(f"wan-{video.label}")
    text = f"{video.label} ({record.probe.width}x{record.probe.height}, {record.probe.duration_seconds:g} s)"
    description = f"Archived video; sidecar at {video.sidecar_url}"
    if _local(video.video_url):  # no link the UI could open: the path, as text
        await acreate_markdown_artifact(markdown=f"{text}: {link(text, video.video_url)}", key=key, description=description)
    else:
        await acreate_link_artifact(link=video.video_url, link_text=text, key=key, description=description)
    price = price_text(record.cost)
    await acreate_markdown_artifact(
        markdown="\n".join(
            [
                f"# {video.label}",
                "",
                f"- video: {link(video.video_url, video.video_url, video.video_view_url)}",
                f"- model: `{record.request.model}` in {record.request.region}, {record.request.resolution}, {record.request.duration} s",
                *([f"- **rendered by {record.probe.rendered_by}**, not by the Wan model"] if record.probe.rendered_by else []),
                f"- task: `{record.task_id}`, fingerprint `{record.fingerprint[:16]}`",
                f"- estimated cost: {price}" + (" (reused, nothing paid this run)" if video.reused else ""),
                "",
                *poster_lines(record.poster.url if record.poster else None, video.poster_view_url),
                *check_lines(record.checks),
                "## Prompt",
                record.request.prompt or "_(none)_",
                "",
                "## Prompt as rewritten by the service",
                record.actual_prompt or "_(not rewritten)_",
            ]
        ),
        key=f"{key}-prompts",
        description="Prompts and metadata of the archived video",
    )
    if record.checks is not None and not record.checks.passed:
        emit_event(
            FLAGGED_EVENT,
            resource=_resource(video.fingerprint, video.label),
            payload={
                "label": video.label,
                "fingerprint": video.fingerprint,
                "video_url": video.video_url,
                "task_id": video.task_id,
                "failed": record.checks.failed,
                "checks": record.checks.model_dump(mode="json"),
            },
        )
    emit_event(
        ARCHIVED_EVENT,
        resource=_resource(video.fingerprint, video.label),
        payload={
            "label": video.label,
            "fingerprint": video.fingerprint,
            "video_url": video.video_url,
            "sidecar_url": video.sidecar_url,
            "task_id": video.task_id,
            "reused": video.reused,
        },
    )


def check_lines(checks: Optional[ShotChecks]) -> list[str]:
    """The shot checks as a markdown table."""
    if checks is None:
        return []
    rows = [f"| {i.name} | {i.value} | {i.threshold} | {'passed' if i.passed else '**failed**'} |" for i in checks.items]
    verdict = "every check passed" if checks.passed else f"**flagged**: {', '.join(checks.failed)} failed"
    return ["## Shot checks", "", verdict, "", "| check | value | threshold | verdict |", "|---|---|---|---|", *rows, ""]


def checks_text(checks: Optional[ShotChecks]) -> str:
    """``passed``, ``failed: frozen, black`` or ``not checked``, for tables."""
    if checks is None:
        return "not checked"
    return "passed" if checks.passed else "failed: " + ", ".join(checks.failed)


def price_text(cost: CostEstimate) -> str:
    if cost.amount is None:
        return "unknown"
    return f"{cost.amount:g} {cost.currency}" + ("" if cost.confirmed else " (unconfirmed price)")


# The inline poster: small enough for an artifact (about 15 KB), large enough to judge a shot by.
INLINE_POSTER_HEIGHT = 120


def inline_image(url: str) -> Optional[str]:
    """A ``data:`` URL of a small JPEG of the image at ``url`` (a browser opens no ``file://`` link
    from the UI), or None when it cannot be read without credentials."""
    try:
        with fsspec.open(url, "rb") as handle, Image.open(handle) as image:
            image.thumbnail((10 * INLINE_POSTER_HEIGHT, INLINE_POSTER_HEIGHT))
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=75)
    except Exception:  # no picture is no reason to fail a run
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def poster_lines(stored: Optional[str], viewable: Optional[str]) -> list[str]:
    """The poster shown in the UI for every destination: presigned on object stores, inline
    otherwise; linked only when neither can be had."""
    if viewable:
        return ["## Poster", f"![first, middle and last frames]({viewable})", ""]
    if stored and (inline := inline_image(stored)):
        return ["## Poster", f"![first, middle and last frames]({inline})", "", f"full size: {link(stored, stored)}", ""]
    if stored:
        return ["## Poster", f"first, middle and last frames: {link(stored, stored)}", ""]
    return []


def report_failed(label: str, fingerprint: Optional[str], error: BaseException, *, task_id: Optional[str] = None) -> None:
    emit_event(
        FAILED_EVENT,
        resource=_resource(fingerprint or "unknown", label),
        payload={
            "label": label,
            "fingerprint": fingerprint,
            "task_id": task_id,
            "error": type(error).__name__,
            "code": getattr(error, "code", None),
            "message": str(error)[:2000],
        },
    )


async def report_batch(result: BatchResult, key: str, order: Sequence[str] = ()) -> None:
    """The run summary: every pair, in the manifest's ``order``, what became of it, and what it cost
    (billed, from ``usage``)."""
    # Label, status, cost and checks first: what a person scans for at 1600 px. Archive paths are
    # relative to the destination (every video sits at its root).
    blank = {"cost": "", "checks": "", "task_id": "", "video": "", "detail": ""}
    rows = (
        [
            {
                "label": v.label,
                "status": "reused" if v.reused else "archived",
                "cost": "0 (reused)" if v.reused else price_text(v.record.cost),
                "checks": checks_text(v.record.checks),
                "task_id": v.task_id,
                "video": PurePosixPath(v.video_url).name,
                "detail": "",
            }
            for v in result.videos
        ]
        # The whole reason on one line (the UI's table cell wraps it).
        + [
            {**blank, "label": f.label, "status": "failed", "task_id": f.task_id or "", "detail": " ".join(f"{f.error}: {f.message}".split())}
            for f in result.failures
        ]
        + [{**blank, "label": s.label, "status": "skipped for budget", "cost": "0", "detail": s.reason} for s in result.skipped]
        + [{**blank, "label": label, "status": "dropped in review", "cost": "0", "detail": "its drafts are archived"} for label in result.dropped]
        + [
            {**blank, "label": label, "status": "not sent", "cost": "0", "detail": result.outage or "the service was in an outage"}
            for label in result.unsubmitted
        ]
    )
    place = {label: index for index, label in enumerate(order)}
    rows.sort(key=lambda row: place.get(row["label"], len(place)))
    await acreate_table_artifact(table=rows, key=key, description=result.summary)


async def report_plan(plan: RunPlan, key: str) -> None:
    """The dry run's table: what each pair would cost, and the total. Unconfirmed prices say so."""
    await acreate_table_artifact(table=plan.rows(), key=key, description=f"Plan (nothing sent): {plan.summary}")


async def report_storyboard(label: str, record: StoryboardRecord, poster_view_url: Optional[str], *, reused: bool) -> None:
    """The storyboard in the UI: its poster, how it was joined, and its segments in order."""
    rows = [f"| {s.index} | {s.label} | `{s.task_id}` | {s.seconds:g} s | {link('video', s.video_url)} |" for s in record.segments]
    total = price_text(record.total_cost)
    await acreate_markdown_artifact(
        markdown="\n".join(
            [
                f"# {label}",
                "",
                f"- video: {link(record.video.url, record.video.url)}, {record.probe.width}x{record.probe.height}, {record.probe.duration_seconds:g} s",
                f"- joined by {record.stitch.method} ({record.stitch.reason})" + (", reused: nothing was paid this run" if reused else ""),
                f"- estimated cost of the segments: {total}",
                "",
                *poster_lines(record.poster.url if record.poster else None, poster_view_url),
                "| # | transition | task | length | archive |",
                "|---|---|---|---|---|",
                *rows,
            ]
        ),
        key=artifact_key(f"wan-storyboard-{label}"),
        description="Stitched storyboard",
    )
