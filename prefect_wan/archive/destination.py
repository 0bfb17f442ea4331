"""Where videos are archived: any fsspec URL with its storage options, or a Prefect
``RemoteFileSystem`` / ``LocalFileSystem`` block."""

from __future__ import annotations

from typing import Any, Union

import fsspec
from fsspec import AbstractFileSystem
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_DESTINATION = "./wan-archive"


class ArchiveDestination(BaseModel):
    """An fsspec location: ``s3://bucket/prefix``, ``file:///data/videos``, ``memory://x``, ``./dir``."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(default=DEFAULT_DESTINATION, description="fsspec URL or local path of the archive root.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options (e.g. s3fs key/secret/client_kwargs)."
    )

    @classmethod
    def coerce(cls, value: Union["ArchiveDestination", str, Any, None], storage_options: dict[str, Any] | None = None) -> "ArchiveDestination":
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

    def public_url(self, path: str) -> str:
        fs, _ = self.filesystem()
        return fs.unstrip_protocol(path)
