"""Faults on demand: deterministic, countable, armed at start-up or through the admin API."""

from __future__ import annotations

import math
import random
from collections import Counter
from itertools import count
from typing import Any, Literal, Optional

from pydantic import BaseModel, Field

Operation = Literal["submit", "query", "list", "cancel", "policy", "upload", "download", "task", "answer", "render"]
Action = Literal[
    "error",
    "drop",
    "error_after_create",
    "truncate",
    "slow",
    "fail",
    "expire",
    "reshape",
    "dissolve",
    "wipe",
    "iris",
    "cut",
    "late_morph",
    "flicker",
    "colour_drift",
    "revert",
    "miss_last_frame",
    "freeze",
    "black",
]
# The render actions: what the model is reported to get wrong (prefect_wan.emulator.render.DEFECTS).
Defect = Literal["dissolve", "wipe", "iris", "cut", "late_morph", "flicker", "colour_drift", "revert", "miss_last_frame", "freeze", "black"]

_ids = count(1)


class FaultRule(BaseModel):
    """One armed fault.

    - ``error``: the next ``count`` matching calls answer ``status``/``code``/``message``.
    - ``drop`` (submit): the task is created, then the connection is cut before any answer.
    - ``error_after_create`` (submit): the task is created, then ``status``/``code`` is answered, as a
      gateway's 502/504 can be after the service accepted the call.
    - ``truncate`` / ``slow`` (download): cut after ``after_bytes`` / trickle at ``bytes_per_second``.
    - ``fail`` / ``expire`` (task): the next ``count`` created tasks end FAILED with ``code`` or
      turn UNKNOWN.
    - ``reshape`` (answer): the next ``count`` answers about a SUCCEEDED task lose the output fields
      in ``drop_fields`` and, when ``usage`` is set, report that usage instead (any JSON, odd types too).
    - a ``Defect`` (render): the next ``count`` renders are taken with that defect, at ``severity``
      (0-1]: a cross-fade mixed in (``dissolve``), a jump mid-shot (``cut``), a morph into the last
      keyframe in the last frames (``late_morph``), brightness pumping (``flicker``), a colour cast
      growing toward the end (``colour_drift``), a move out and back (``revert``), an end short of
      the last keyframe (``miss_last_frame``), a camera stopped for most of the video (``freeze``),
      or black from 40 % on (``black``). A later render (a retake) is clean unless asked.
    With ``fraction`` set, each matching call is hit with that probability (seeded dice) and
    ``count`` bounds the hits (``None`` = no bound); with ``even`` too, exactly that share of the
    matching calls is hit, evenly spaced (a 20 % rate over 20 calls is 4 hits, not what dice give).
    """

    op: Operation
    action: Action = "error"
    count: Optional[int] = Field(default=1, ge=0)
    fraction: Optional[float] = Field(default=None, gt=0, le=1)
    even: bool = False
    calls: int = Field(default=0, ge=0, description="Matching calls seen (an even fraction's position).")
    status: int = 500
    code: str = "InternalError"
    message: str = "An internal error has occured, please try again later or contact service support."
    after_bytes: int = Field(default=0, ge=0)
    bytes_per_second: float = Field(default=0, ge=0)
    retry_after: Optional[float] = Field(default=None, ge=0, description="Seconds sent as Retry-After with an error.")
    drop_fields: list[str] = Field(default_factory=list)
    usage: Optional[Any] = None
    severity: float = Field(default=1.0, gt=0, le=1, description="How badly a render defect is rendered: 0.3 subtle, 0.6 visible, 1 gross.")
    task_id: Optional[str] = None
    id: int = Field(default_factory=lambda: next(_ids))


class FaultBook:
    """The armed faults and what they did."""

    def __init__(self, rules: list[FaultRule], seed: int = 0) -> None:
        self.rules: list[FaultRule] = [rule.model_copy() for rule in rules]
        self.dice = random.Random(seed)
        self.injected: Counter[str] = Counter()

    def arm(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def take(self, op: str, task_id: Optional[str] = None) -> Optional[FaultRule]:
        """The fault that hits this call, if any (consuming one of its uses)."""
        for rule in self.rules:
            if rule.op != op or (rule.task_id and rule.task_id != task_id):
                continue
            if rule.count is not None and rule.count <= 0:
                continue
            if rule.fraction is not None:
                if rule.even:
                    rule.calls += 1
                    if math.floor(rule.calls * rule.fraction) == math.floor((rule.calls - 1) * rule.fraction):
                        continue
                elif self.dice.random() >= rule.fraction:
                    continue
            if rule.count is not None:
                rule.count -= 1
            self.injected[f"{op}:{rule.action}:{rule.code if rule.action in ('error', 'fail') else ''}".rstrip(":")] += 1
            return rule
        return None
