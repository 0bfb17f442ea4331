"""Where videos are archived: any fsspec URL with its storage options, or a Prefect
``RemoteFileSystem`` / ``LocalFileSystem`` block."""

from __future__ import annotations

import os
import uuid
from typing import Any, Optional, Union

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict, Field

from prefect_wan.archive.errors import ArchiveDestinationError

DEFAULT_DESTINATION = "./wan-archive"
UPLOAD_PART_ENV = "PREFECT_WAN_UPLOAD_PART_MIB"
# Parts of this size stream to object stores, a few at once: memory stays flat whatever the video's
# size (S3 takes parts of 5 MiB and more). Measured in bench/archive.py.
DEFAULT_UPLOAD_PART_MIB = 8


def _upload_part_mib() -> int:
    return int(os.environ.get(UPLOAD_PART_ENV) or DEFAULT_UPLOAD_PART_MIB)


class ArchiveDestination(BaseModel):
    """An fsspec location: ``s3://bucket/prefix``, ``file:///data/videos``, ``memory://x``, ``./dir``."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(default=DEFAULT_DESTINATION, description="fsspec URL or local path of the archive root.")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options (e.g. s3fs key/secret/client_kwargs).")
    upload_part_mib: int = Field(
        default_factory=_upload_part_mib,
        ge=5,
        le=1024,
        description=f"Size of the parts a video is uploaded in, on object stores (MiB; {UPLOAD_PART_ENV} sets the default).",
    )

    @classmethod
    def coerce(cls, value: Union[ArchiveDestination, str, Any, None], storage_options: dict[str, Any] | None = None) -> ArchiveDestination:
        """Accept a destination, a URL string, or a Prefect filesystem block."""
        if value is None:
            return cls(storage_options=storage_options or {})
        if isinstance(value, ArchiveDestination):
            return value
        if isinstance(value, str):
            return cls(url=value, storage_options=storage_options or {})
        basepath = getattr(value, "basepath", None)
        if basepath:
            # RemoteFileSystem keeps fsspec options in `settings`; LocalFileSystem has none.
            return cls(url=str(basepath), storage_options={**(getattr(value, "settings", None) or {}), **(storage_options or {})})
        raise TypeError(f"cannot archive to {type(value).__name__}: give an fsspec URL or a RemoteFileSystem block")

    def filesystem(self) -> tuple[AbstractFileSystem, str]:
        fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return fs, root.rstrip("/")

    def path(self, name: str) -> str:
        return f"{self.filesystem()[1]}/{name}"

    def ensure_root(self) -> tuple[AbstractFileSystem, str]:
        """The filesystem and root, with the root directory made where directories exist.

        Object stores get no ``makedirs``: s3fs would create a missing bucket in the user's account.
        """
        fs, root = self.filesystem()
        if isinstance(fs, LocalFileSystem):
            fs.makedirs(root, exist_ok=True)
        return fs, root

    def check_writable(self, what: str = "the archive") -> None:
        """Write and delete a tiny object, so a wrong bucket or missing permission fails before a
        video is paid for rather than after (its URL lives only 24 h)."""
        try:
            fs, root = self.ensure_root()
            probe = f"{root}/.prefect-wan-write-check-{uuid.uuid4().hex[:12]}"
            fs.pipe_file(probe, b"ok")
            fs.rm(probe)
        except Exception as exc:  # botocore's credential errors are not OSErrors
            raise ArchiveDestinationError(self.explain(exc, "write to", what)) from None

    def explain(self, error: BaseException, doing: str, what: str = "the archive") -> str:
        """One line saying why the archive (or another store) cannot be used, and what to do about it."""
        return f"cannot {doing} {what} {self.url}: {explain_storage_error(error)}"

    def viewable_url(self, path: str, expires_seconds: int = 7 * 24 * 3600) -> Optional[str]:
        """An http(s) URL a browser can open (a presigned one on object stores), or None."""
        fs, _ = self.filesystem()
        try:
            url = fs.sign(path, expiration=expires_seconds)
        except (NotImplementedError, AttributeError, ValueError, OSError):
            return None
        except Exception:  # botocore and friends: no URL is no reason to fail a run
            return None
        return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None

    def public_url(self, path: str) -> str:
        fs, _ = self.filesystem()
        return fs.unstrip_protocol(path)


def explain_storage_error(error: BaseException) -> str:
    """Why a storage call failed, in one line a user can act on."""
    name = type(error).__name__
    text = str(error).splitlines()[0] if str(error) else name
    if name in ("NoCredentialsError", "PartialCredentialsError") or "Unable to locate credentials" in text:
        return (
            "no storage credentials were found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, name a profile "
            "(storage_options={'profile': ...}), use an instance role, or pass a saved RemoteFileSystem block "
            "(never keys in storage_options: Prefect shows flow parameters in its UI)"
        )
    if isinstance(error, ImportError) and "install" in text:
        # fsspec names the package a protocol needs: gcsfs for gs://, adlfs for az://.
        package = next((word for word in text.split() if word.endswith(("fs", "fs.")) and word not in ("fsspec",)), None)
        return f"{text.rstrip('.')} ({'pip install ' + package.rstrip('.') if package else 'its fsspec package'}, beside prefect-wan)"
    if isinstance(error, FileNotFoundError):
        return f"no such folder, and it cannot be made there ({getattr(error, 'strerror', None) or text})"
    if isinstance(error, NotADirectoryError) or "Not a directory" in text:
        return "part of that path is a regular file, not a directory"
    if isinstance(error, PermissionError):
        return f"permission denied ({text})"
    return f"{name}: {text}"
