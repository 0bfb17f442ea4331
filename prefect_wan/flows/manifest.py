"""Batch manifests: CSV, JSON or YAML on any fsspec path; relative frame paths resolve against
the manifest's own location."""

from __future__ import annotations

import csv
import io
import json
import posixpath
from typing import Any, Optional, TypeVar, Union

import fsspec
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from prefect_wan.archive.destination import explain_storage_error
from prefect_wan.client.errors import WanError
from prefect_wan.flows.models import KeyframePair, unknown_field


class ManifestError(WanError, ValueError):
    """The manifest cannot be read or one of its rows is invalid; the message says where."""


Entry = TypeVar("Entry", bound=BaseModel)


def _validated(model: type[Entry], data: dict, where: str) -> Entry:
    """``data`` as ``model``; a misspelled field is refused (it would be paid for at the default)."""
    for key in data:
        if key not in model.model_fields:
            raise ManifestError(f"{where}: {unknown_field(str(key), model)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ManifestError(f"{where}: {problems}") from None


def _read(url: str, storage_options: Optional[dict[str, Any]]) -> str:
    try:
        with fsspec.open(url, "rt", encoding="utf-8", **(storage_options or {})) as handle:
            return handle.read()
    except FileNotFoundError:
        raise ManifestError(f"{url}: no such manifest") from None
    except Exception as exc:  # storage errors (botocore's are not OSErrors): say which and why, in one line
        raise ManifestError(f"{url}: cannot read the manifest: {explain_storage_error(exc)}") from None


def _syntax_error(exc: Exception) -> str:
    """A JSON or YAML parser's complaint in one line: where, and what it expected."""
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {' '.join(str(exc.problem).split())}"
    return " ".join(str(exc).split())


def _rows(text: str, url: str) -> list[Any]:
    suffix = url.lower().rsplit(".", 1)[-1]
    if suffix == "csv":
        return list(csv.DictReader(io.StringIO(text)))
    try:
        data = json.loads(text) if suffix == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ManifestError(f"{url}: not valid {suffix.upper()}: {_syntax_error(exc)}") from None
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
    text = _read(url, storage_options)
    base = url.rsplit("/", 1)[0] if "/" in url else "."
    pairs = []
    for number, row in enumerate(_rows(text, url), start=1):
        if not isinstance(row, dict):
            raise ManifestError(f"{url} pair {number}: expected a mapping, got {type(row).__name__}")
        if None in row:  # csv.DictReader files cells beyond the header under None
            raise ManifestError(f"{url} pair {number}: more cells than the header has columns")
        pair = _validated(KeyframePair, row, f"{url} pair {number}")
        pairs.append(
            pair.model_copy(
                update={
                    "first_frame": _resolve(pair.first_frame, base),
                    "last_frame": _resolve(pair.last_frame, base),
                }
            )
        )
    if not pairs:
        raise ManifestError(f"{url}: no pairs")
    return pairs


class StoryboardManifest(BaseModel):
    """A storyboard as a file: keyframes in order, one prompt or one per transition, overrides."""

    model_config = ConfigDict(extra="forbid")

    keyframes: list[str]
    prompts: Union[str, list[Optional[str]], None] = None
    label: str = "storyboard"
    overrides: dict[int, dict[str, Any]] = {}


def load_storyboard(url: str, storage_options: Optional[dict[str, Any]] = None) -> StoryboardManifest:
    """Read a YAML or JSON storyboard; relative keyframe paths resolve against its location."""
    if not url.lower().endswith((".json", ".yaml", ".yml")):
        raise ManifestError(f"{url}: a storyboard must end in .json, .yaml or .yml")
    text = _read(url, storage_options)
    try:
        data = json.loads(text) if url.lower().endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if url.lower().endswith(".json") else "YAML"
        raise ManifestError(f"{url}: not valid {kind}: {_syntax_error(exc)}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{url}: expected a mapping with 'keyframes'")
    manifest = _validated(StoryboardManifest, data, url)
    base = url.rsplit("/", 1)[0] if "/" in url else "."
    return manifest.model_copy(update={"keyframes": [_resolve(k, base) or k for k in manifest.keyframes]})
