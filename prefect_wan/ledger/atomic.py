"""Writing an object so that no reader ever sees it half-written, at a cost that does not grow with
what the folder already holds.

- On object stores (S3, GCS, Azure, memory) the store's own upload is atomic: an object appears
  whole when its (multipart) upload completes, or not at all. The final key is written directly.
- On filesystems the object is written under a unique name in the folder's ``.partials/`` and
  renamed into place (atomic within one filesystem).

Partials a killed writer left behind live in ``.partials/`` only, so they are found without listing
the folder's objects, at most once per folder and process, and a live writer's partial (this host,
a running process, or younger than an hour elsewhere) is never touched.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from prefect_wan.ledger.liveness import host_tag, process_alive

# A partial object older than this is abandoned wherever its writer ran.
PARTIAL_MAX_AGE = timedelta(hours=1)
PARTIALS = ".partials"
# Stores whose upload is atomic by itself: nothing shows until it completes.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})

_swept: set[tuple[str, str]] = set()
_swept_lock = threading.Lock()


def protocols(fs: Any) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def is_object_store(fs: Any) -> bool:
    return any(p in OBJECT_STORES for p in protocols(fs))


def _split(final: str) -> tuple[str, str]:
    folder, _, name = final.rpartition("/")
    return folder, name


def partials_folder(folder: str) -> str:
    return f"{folder}/{PARTIALS}"


def _partial_name(final: str) -> str:
    # Who wrote it, so a later run can tell an abandoned partial from one being written.
    folder, name = _split(final)
    return f"{partials_folder(folder)}/{name}.partial-{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _abandoned(fs: Any, path: str) -> bool:
    try:
        host, pid, _ = path.rsplit(".partial-", 1)[1].split("-", 2)
        if host == host_tag() and not process_alive(int(pid), None):
            return True
    except ValueError:
        pass  # a name without its writer: judged by age alone
    try:
        modified = fs.modified(path)
    except (NotImplementedError, FileNotFoundError, OSError):
        return False
    modified = modified if modified.tzinfo else modified.replace(tzinfo=timezone.utc)
    return datetime.now(timezone.utc) - modified > PARTIAL_MAX_AGE


def sweep_partials(fs: Any, folder: str) -> list[str]:
    """Remove the partials that killed writers left in ``folder``'s ``.partials/``; lists nothing else."""
    try:
        entries = fs.ls(partials_folder(folder), detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for path in entries:
        if ".partial-" in path and _abandoned(fs, path):
            with contextlib.suppress(FileNotFoundError):
                fs.rm(path)
            removed.append(path)
    return removed


def _sweep_once(fs: Any, folder: str) -> None:
    key = (protocols(fs)[0], folder)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    sweep_partials(fs, folder)


@dataclass
class AtomicWrite:
    """One object on its way to ``final``: written at ``target``, then committed (moved into place
    on a filesystem; already in place on an object store) or aborted."""

    fs: Any
    final: str
    target: str

    @property
    def in_place(self) -> bool:
        """Writing ``target`` writes ``final`` itself (an object store's atomic upload)."""
        return self.target == self.final

    def commit(self) -> None:
        if not self.in_place:
            self.fs.mv(self.target, self.final)

    def abort(self) -> None:
        """Remove what was written: the partial, or (on an object store) the object uploaded whole
        but not wanted after all."""
        with contextlib.suppress(OSError):
            self.fs.rm(self.target)


def begin_atomic_write(fs: Any, final: str) -> AtomicWrite:
    """Where to write an object that must appear at ``final`` whole or not at all."""
    if is_object_store(fs):
        return AtomicWrite(fs, final, final)
    folder, _ = _split(final)
    _sweep_once(fs, folder)
    fs.makedirs(partials_folder(folder), exist_ok=True)
    return AtomicWrite(fs, final, _partial_name(final))


def replace_atomically(fs: Any, final: str, write: Callable[[str], None]) -> None:
    """``write(path)`` fills the object that appears at ``final`` whole or not at all."""
    staged = begin_atomic_write(fs, final)
    try:
        write(staged.target)
        staged.commit()
    except BaseException:
        if not staged.in_place:  # a failed upload to an object store leaves no object to remove
            staged.abort()
        raise
