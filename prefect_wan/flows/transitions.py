"""A storyboard's transitions: the pairs between its keyframes, the rule that they make videos of
one size, and the storyboard's fingerprint. No Prefect: the command checks them before it starts."""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath
from typing import Any, Optional, Union

from prefect_wan.client.errors import PreflightError, PreflightViolation
from prefect_wan.client.images import redact_url
from prefect_wan.client.sizing import output_size
from prefect_wan.flows.models import KeyframePair
from prefect_wan.flows.prepared import PreparedPair

STORYBOARD_VERSION = 1


def transitions(keyframes: list[str], prompts: Union[str, list[Optional[str]], None], overrides: dict[int, dict[str, Any]], label: str) -> list[KeyframePair]:
    if len(keyframes) < 2:
        raise PreflightError([PreflightViolation("keyframes", keyframes, "a storyboard needs at least 2 keyframes")])
    count = len(keyframes) - 1
    if isinstance(prompts, list) and len(prompts) != count:
        raise PreflightError([PreflightViolation("prompts", f"{len(prompts)} prompts", f"give one prompt for all, or one per transition ({count})")])
    each = prompts if isinstance(prompts, list) else [prompts] * count
    unknown = sorted(set(overrides) - set(range(1, count + 1)))
    if unknown:
        raise PreflightError([PreflightViolation("overrides", unknown, f"transitions are numbered 1 to {count}")])
    return [
        KeyframePair.from_fields(
            first_frame=keyframes[i], last_frame=keyframes[i + 1], prompt=each[i], label=f"{label}-{i + 1:02d}", **overrides.get(i + 1, {})
        )
        for i in range(count)
    ]


def check_shapes(pairs: list[PreparedPair], fit: Optional[str]) -> bool:
    """Whether the transitions differ in size; refused (nothing sent) when they do and ``fit`` is not given."""
    prepared = [p.prepared for p in pairs]
    # The size each keyframe would give as a first frame: a keyframe of another shape would have
    # its transitions cropped or padded differently on either side of it.
    last = prepared[-1]
    tier = last.parameters.resolution or last.spec.default_resolution
    ends = output_size(last.parameters.ratio, last.last_frame.width, last.last_frame.height, tier) if last.last_frame else None
    sizes = [p.output_size for p in prepared] + [ends]
    differ = len(set(sizes)) > 1
    if differ and fit is None:
        first = sizes[0]
        keyframes = [p.pair.first_frame for p in pairs] + [pairs[-1].pair.last_frame]
        raise PreflightError(
            [
                PreflightViolation(
                    f"keyframes[{index}]",
                    keyframe,
                    f"{PurePosixPath(redact_url(keyframe or '')).name} would make {size[0]}x{size[1]} transitions but keyframe 0 makes {first[0]}x{first[1]}: use keyframes of one "
                    "aspect ratio, or fit='pad' or 'crop'"
                    if size and first
                    else "its size cannot be known before sending",
                )
                for index, (keyframe, size) in enumerate(zip(keyframes, sizes))
                if size != first
            ]
        )
    return differ


def storyboard_fingerprint(segments: list[str], *, drop_boundary: bool, fit: Optional[str]) -> str:
    document = {"v": STORYBOARD_VERSION, "segments": segments, "drop_boundary": drop_boundary, "fit": fit}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
