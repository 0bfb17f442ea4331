"""Batch manifests: CSV, JSON or YAML on any fsspec path; relative frame paths resolve against
the manifest's own location."""

from __future__ import annotations

import csv
import io
import json
import posixpath
from typing import Any, Optional

import fsspec
import yaml
from pydantic import ValidationError

from prefect_wan.archive.destination import explain_storage_error
from prefect_wan.client.errors import WanError
from prefect_wan.flows.models import KeyframePair, unknown_field


class ManifestError(WanError, ValueError):
    """The manifest cannot be read or one of its rows is invalid; the message says where."""


def _rows(text: str, url: str) -> list[Any]:
    suffix = url.lower().rsplit(".", 1)[-1]
    if suffix == "csv":
        return list(csv.DictReader(io.StringIO(text)))
    try:
        data = json.loads(text) if suffix == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ManifestError(f"{url}: not valid {suffix.upper()} ({exc})") from None
    if isinstance(data, dict):
        data = data.get("pairs")
    if not isinstance(data, list):
        raise ManifestError(f"{url}: expected a list of pairs (or a 'pairs' list)")
    return data


def _resolve(path: Optional[str], base: str) -> Optional[str]:
    if not path or "://" in path or path.startswith(("/", "data:", "~")):
        return path
    return posixpath.normpath(posixpath.join(base, path)) if "://" not in base else f"{base}/{path}"


def load_manifest(url: str, storage_options: Optional[dict[str, Any]] = None) -> list[KeyframePair]:
    """Read every pair of a manifest; raise ``ManifestError`` naming the row and field at fault."""
    if not url.lower().endswith((".csv", ".json", ".yaml", ".yml")):
        raise ManifestError(f"{url}: a manifest must end in .csv, .json, .yaml or .yml")
    try:
        with fsspec.open(url, "rt", encoding="utf-8", **(storage_options or {})) as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ManifestError(f"{url}: no such manifest") from None
    except Exception as exc:  # storage errors (botocore's are not OSErrors): say which and why, in one line
        raise ManifestError(f"{url}: cannot read the manifest: {explain_storage_error(exc)}") from None
    base = url.rsplit("/", 1)[0] if "/" in url else "."
    pairs = []
    for number, row in enumerate(_rows(text, url), start=1):
        if not isinstance(row, dict):
            raise ManifestError(f"{url} pair {number}: expected a mapping, got {type(row).__name__}")
        if None in row:  # csv.DictReader files cells beyond the header under None
            raise ManifestError(f"{url} pair {number}: more cells than the header has columns")
        for key in row:
            if key not in KeyframePair.model_fields:
                # A misspelled setting would otherwise be paid for at the default.
                raise ManifestError(f"{url} pair {number}: {unknown_field(str(key), KeyframePair)}")
        try:
            pair = KeyframePair.model_validate(row)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ManifestError(f"{url} pair {number}: {problems}") from None
        pairs.append(pair.model_copy(update={
            "first_frame": _resolve(pair.first_frame, base), "last_frame": _resolve(pair.last_frame, base),
        }))
    if not pairs:
        raise ManifestError(f"{url}: no pairs")
    return pairs
