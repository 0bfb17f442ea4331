"""The emulator's account: tasks and their lifecycle, rate limits, uploads, videos and counters."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, Field

from prefect_wan.client.catalog import ModelSpec
from prefect_wan.client.sizing import output_size, predict_output_size
from prefect_wan.client.wire import TaskStatus, format_service_time
from prefect_wan.emulator.config import EmulatorConfig
from prefect_wan.emulator.faults import FaultBook
from prefect_wan.emulator.render import render_transition


class Counters(BaseModel):
    """What the emulator saw; tests assert on these ("exactly one task was created")."""

    api_requests: int = Field(default=0, description="Every call of the service's API (downloads and admin excluded).")
    submissions_accepted: int = 0
    submissions_rejected: int = 0
    submissions_by_model: dict[str, int] = Field(default_factory=dict)
    throttled: int = 0
    queries: int = 0
    queries_by_task: dict[str, int] = Field(default_factory=dict)
    lists: int = 0
    cancels: int = 0
    policies: int = 0
    uploads: int = 0
    downloads: int = 0
    downloads_completed: int = 0
    download_bytes: int = 0
    renders: int = 0
    faults_injected: dict[str, int] = Field(default_factory=dict)
    tasks_by_status: dict[str, int] = Field(default_factory=dict)


@dataclass
class EmulatedTask:
    task_id: str
    request_id: str
    spec: ModelSpec
    account: str
    created: float
    params: dict[str, Any]
    prompt: Optional[str]
    first: bytes
    last: Optional[bytes]
    status: TaskStatus = TaskStatus.PENDING
    scheduled: Optional[float] = None
    ended: Optional[float] = None
    failure: Optional[tuple[str, str]] = None
    expired: bool = False
    render: Optional[Future] = None
    video_token: Optional[str] = None
    size: tuple[int, int] = (0, 0)


@dataclass
class Upload:
    data: bytes
    model: str
    expires: float


@dataclass
class Video:
    path: Path
    expires: float
    size: int


class EmulatorState:
    """All mutable state. Touched only from the server's event loop, so it needs no locks."""

    def __init__(self, config: EmulatorConfig, workdir: Optional[Path] = None) -> None:
        self.config = config
        self.faults = FaultBook(config.faults, seed=config.seed)
        self.tasks: dict[str, EmulatedTask] = {}
        self.uploads: dict[str, Upload] = {}
        self.videos: dict[str, Video] = {}
        self.counters = Counters()
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._offset = 0.0
        self._start_wall = datetime.now(timezone.utc)
        self._start_mono = time.monotonic()
        self._tmp = tempfile.TemporaryDirectory(prefix="wan-emulator-") if workdir is None else None
        self.workdir: Path = Path(self._tmp.name) if self._tmp is not None else Path(workdir or ".")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.secret = uuid.uuid4().hex
        # Rendering is CPU work: keep it off the event loop.
        self._renderer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="wan-render")
        self._renders: dict[str, Future] = {}

    # --- clock ----------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() + self._offset

    def wall(self, moment: float) -> datetime:
        return self._start_wall + timedelta(seconds=moment - self._start_mono)

    def service_time(self, moment: Optional[float]) -> Optional[str]:
        return None if moment is None else format_service_time(self.wall(moment))

    def advance_clock(self, seconds: float) -> None:
        self._offset += seconds
        self.tick()

    # --- limits ---------------------------------------------------------------------------

    def max_running(self, spec: ModelSpec) -> int:
        return self.config.max_running or spec.max_running

    def take_submit_token(self, account: str, spec: ModelSpec) -> bool:
        """Token bucket per account and model; False means throttle."""
        rate = self.config.submit_rps or spec.submit_rps.get(self.config.region, 2.0)
        capacity = max(rate, 1.0)
        key = (account, spec.name)
        now = self.now()
        tokens, last = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True

    def queued(self, account: str, spec: ModelSpec) -> int:
        return sum(1 for t in self.tasks.values() if t.account == account and t.spec.name == spec.name and t.status is TaskStatus.PENDING)

    # --- tasks ----------------------------------------------------------------------------

    def create_task(
        self,
        *,
        spec: ModelSpec,
        account: str,
        params: dict[str, Any],
        prompt: Optional[str],
        first: bytes,
        last: Optional[bytes],
        first_size: tuple[int, int],
        failure: Optional[tuple[str, str]] = None,
    ) -> EmulatedTask:
        task = EmulatedTask(
            task_id=str(uuid.uuid4()),
            request_id=str(uuid.uuid4()),
            spec=spec,
            account=account,
            created=self.now(),
            params=params,
            prompt=prompt,
            first=first,
            last=last,
            failure=failure,
            size=output_size(params.get("ratio"), *first_size, params["resolution"]) or predict_output_size(*first_size, params["resolution"]),
        )
        fault = self.faults.take("task")
        if fault is not None and fault.action == "fail":
            task.failure = (fault.code, fault.message)
        elif fault is not None and fault.action == "expire":
            task.expired = True
        self.tasks[task.task_id] = task
        self.counters.submissions_accepted += 1
        by_model = self.counters.submissions_by_model
        by_model[spec.name] = by_model.get(spec.name, 0) + 1
        self.tick()
        return task

    def find(self, task_id: str) -> Optional[EmulatedTask]:
        task = self.tasks.get(task_id)
        if task is None or task.expired or self.now() - task.created > self.config.task_ttl_seconds:
            return None
        return task

    def cancel(self, task: EmulatedTask) -> bool:
        if task.status is not TaskStatus.PENDING:
            return False
        task.status = TaskStatus.CANCELED
        task.ended = self.now()
        return True

    def tick(self) -> None:
        """Move tasks along: PENDING -> RUNNING within the concurrency limit, RUNNING -> final."""
        now = self.now()
        running: Counter[tuple[str, str]] = Counter((t.account, t.spec.name) for t in self.tasks.values() if t.status is TaskStatus.RUNNING)
        for task in self.tasks.values():  # dicts keep insertion order: FIFO
            key = (task.account, task.spec.name)
            if task.status is TaskStatus.PENDING and now - task.created >= self.config.pending_seconds:
                if running[key] < self.max_running(task.spec):
                    running[key] += 1
                    task.status, task.scheduled = TaskStatus.RUNNING, now
                    if task.failure is None:
                        task.render = self._render(task)
            if task.status is TaskStatus.RUNNING and now - (task.scheduled or now) >= self.config.running_seconds:
                if task.failure is not None:
                    task.status, task.ended = TaskStatus.FAILED, now
                elif task.render is not None and task.render.done():
                    error = task.render.exception()
                    if error is not None:
                        task.failure = ("InternalError.Algo", f"An internal error has occured during algorithm execution. ({type(error).__name__})")
                        task.status, task.ended = TaskStatus.FAILED, now
                    else:
                        path: Path = task.render.result()
                        task.video_token = uuid.uuid4().hex
                        self.videos[task.video_token] = Video(path, now + self.config.video_ttl_seconds, path.stat().st_size)
                        task.status, task.ended = TaskStatus.SUCCEEDED, now
                if task.status is not TaskStatus.RUNNING:
                    running[key] -= 1
                    task.first, task.last = b"", None  # rendered or failed: the frames are not needed again

    def _render(self, task: EmulatedTask) -> Future:
        if self.config.video_file is not None:
            given: Future = Future()
            given.set_result(Path(self.config.video_file))
            return given
        audio = bool(task.params.get("audio"))
        width, height = task.size
        seconds = task.params["duration"]
        fault = self.faults.take("render", task.task_id)
        defect = fault.action if fault is not None else None
        severity = fault.severity if fault is not None else 1.0
        shape = f"{width}x{height}x{seconds}x{self.config.fps}x{audio}x{defect or ''}x{severity}"
        digest = hashlib.sha256(b"|".join([task.first, task.last or b"", shape.encode()])).hexdigest()[:32]
        cached = self._renders.get(digest)
        if cached is not None and not (cached.done() and cached.exception()):
            return cached
        self.counters.renders += 1
        future = self._renderer.submit(
            render_transition,
            task.first,
            task.last,
            width,
            height,
            self.workdir / f"{digest}.mp4",
            seconds=seconds,
            fps=self.config.fps,
            audio=audio,
            defect=defect,
            severity=severity,
        )
        self._renders[digest] = future
        return future

    # --- views ----------------------------------------------------------------------------

    def record_query(self, task_id: str) -> None:
        self.counters.queries += 1
        by_task = self.counters.queries_by_task
        by_task[task_id] = by_task.get(task_id, 0) + 1

    def snapshot(self) -> Counters:
        counters = self.counters.model_copy(deep=True)
        counters.faults_injected = dict(self.faults.injected)
        statuses: Counter[str] = Counter(("UNKNOWN" if self.find(t.task_id) is None else t.status.value) for t in self.tasks.values())
        counters.tasks_by_status = dict(statuses)
        return counters

    def reset(self) -> None:
        self._offset = 0.0
        self.tasks.clear()
        self.uploads.clear()
        self.counters = Counters()
        self._buckets.clear()
        self.faults = FaultBook([], seed=self.config.seed)

    async def run_scheduler(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.config.tick_seconds)

    def close(self) -> None:
        self._renderer.shutdown(wait=True, cancel_futures=True)
        if self._tmp is not None:
            self._tmp.cleanup()
