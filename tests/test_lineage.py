"""Asset lineage: a batch's and a storyboard's videos are reported as Prefect asset materializations,
read back here from a real Prefect server's event store: keys are the archived URLs, upstreams the
keyframes (and, for a storyboard, its transitions)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from prefect.settings import PREFECT_API_URL

from prefect_wan.flows import GenerationOptions, KeyframePair, keyframes_batch
from prefect_wan.flows.lineage import asset_key
from tests.test_flows import FIRST, LAST, POLL


async def _materializations(keys: set[str], timeout: float = 60) -> dict[str, dict]:
    deadline, found = time.monotonic() + timeout, {}
    async with httpx.AsyncClient(base_url=PREFECT_API_URL.value()) as http:
        while time.monotonic() < deadline:
            answer = await http.post(
                "/events/filter",
                json={"filter": {"event": {"name": ["prefect.asset.materialization.succeeded"]}, "any_resource": {"id": sorted(keys)}}, "limit": 50},
            )
            answer.raise_for_status()
            found = {e["resource"]["prefect.resource.id"]: e for e in answer.json()["events"]}
            if keys <= found.keys():
                return found
            await asyncio.sleep(1)
    raise AssertionError(f"materializations of {sorted(keys - found.keys())} not found (found {sorted(found)})")


async def test_a_batch_and_a_storyboard_report_their_videos_as_assets_with_their_upstreams(prefect_harness, emulator, tmp_path):
    from prefect_wan.flows import keyframes_storyboard
    from tests.test_storyboard import keyframes

    pairs = [KeyframePair(first_frame=FIRST, last_frame=LAST, prompt=f"asset {i}", label=f"a{i}", seed=5100 + i) for i in range(2)]
    result = await keyframes_batch(
        pairs=pairs, options=GenerationOptions(resolution="480P"), credentials=emulator.credentials(), destination=str(tmp_path), poll=POLL
    )
    keys = {v.video_url for v in result.videos}
    events = await _materializations(keys)
    for video in result.videos:
        event = events[video.video_url]
        upstream = {r["prefect.resource.id"] for r in event["related"] if r["prefect.resource.role"] == "asset"}
        assert upstream == {Path(FIRST).resolve().as_uri(), Path(LAST).resolve().as_uri()}
        assert {"prefect.resource.id": "prefect-wan", "prefect.resource.role": "asset-materialized-by"} in event["related"]
        assert event["resource"]["prefect.resource.name"] == video.label and event["payload"]["fingerprint"] == video.fingerprint

    board = await keyframes_storyboard(
        keyframes(tmp_path, 3),
        label="lineage",
        options=GenerationOptions(resolution="480P", seed=5200),
        credentials=emulator.credentials(),
        destination=str(tmp_path / "b"),
        poll=POLL,
    )
    events = await _materializations({board.video_url})
    upstream = {r["prefect.resource.id"] for r in events[board.video_url]["related"] if r["prefect.resource.role"] == "asset"}
    assert upstream == {s.video_url for s in board.record.segments} and len(upstream) == 2


def test_asset_keys_follow_prefects_rules():
    assert asset_key("s3://bucket/a b.mp4") is None  # a space
    assert asset_key("https://host/v.mp4?Signature=abc&Expires=1") == "https://host/v.mp4"  # never a presigned URL
    assert asset_key("S3://bucket/v.mp4") == "s3://bucket/v.mp4"  # a lowercase scheme
    assert asset_key("/tmp/first.png") == "file:///tmp/first.png"
    assert asset_key("data:image/png;base64,AAAA") is None and asset_key("<bytes>") is None and asset_key("frames/a.png") is None
    assert asset_key("s3://bucket/" + "x" * 600) is None
