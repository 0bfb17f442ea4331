"""Asset lineage: every archived video (and stitched storyboard) reported as a Prefect asset
materialization keyed by its archived URL, its keyframes (or its transitions) as upstream assets,
the way prefect-dbt reports dbt Cloud's models. Prefect Cloud draws the graph keyframes -> video ->
storyboard; a self-hosted server shows the events in its feed, where automations can chain on them.

Keys follow Prefect's rules (a URI with a lowercase scheme, at most 512 characters, none of
``? & % #`` or spaces): never a presigned URL; a source with no such key (bytes, an image, a data
URI) is no asset and is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from prefect.events import emit_event

from prefect_wan.client.images import redact_url

MATERIALIZED_BY = "prefect-wan"
_FORBIDDEN = set("?&%# ")


def asset_key(location: Optional[str]) -> Optional[str]:
    """The asset key of a location (a URL or a local path), or None when it can have none."""
    if not location or location.startswith("data:") or location in ("-", "<bytes>", "<image>"):
        return None
    url = redact_url(location).split("?", 1)[0]
    if "://" not in url:
        if not url.startswith("/"):
            return None  # not a place: bytes, an image, a relative name nobody else can resolve
        url = Path(url).as_uri()
    scheme, rest = url.split("://", 1)
    key = f"{scheme.lower()}://{rest}"
    if len(key) > 512 or _FORBIDDEN & set(key):
        return None
    return key


def report_materialized(location: str, *, name: str, upstream: list[Optional[str]], payload: dict[str, Any]) -> Optional[str]:
    """Emit the materialization of the asset at ``location`` (and a reference of each upstream
    asset, as Prefect's own ``materialize`` does); its key, or None when it has none."""
    key = asset_key(location)
    if key is None:
        return None
    upstream_keys = [k for k in dict.fromkeys(asset_key(u) for u in upstream) if k is not None]
    for upstream_key in upstream_keys:
        emit_event(event="prefect.asset.referenced", resource={"prefect.resource.id": upstream_key}, related=[])
    related = [{"prefect.resource.id": k, "prefect.resource.role": "asset"} for k in upstream_keys]
    related.append({"prefect.resource.id": MATERIALIZED_BY, "prefect.resource.role": "asset-materialized-by"})
    emit_event(
        event="prefect.asset.materialization.succeeded",
        resource={"prefect.resource.id": key, "prefect.resource.name": name},
        related=related,
        payload=payload,
    )
    return key
