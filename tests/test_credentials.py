"""The WanCredentials block: key resolution, base URL rules, registration, secrecy."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from pydantic import ValidationError

from prefect_wan import WanCredentials
from prefect_wan.client import MissingApiKeyError, Region
from tests.helpers import FAKE_KEY


def test_key_falls_back_to_environment(monkeypatch):
    monkeypatch.setenv("DASHSCOPE_API_KEY", FAKE_KEY)
    assert WanCredentials().resolved_api_key().get_secret_value() == FAKE_KEY
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    with pytest.raises(MissingApiKeyError, match="DASHSCOPE_API_KEY"):
        WanCredentials(region="beijing").get_client()


def test_region_and_base_url():
    assert WanCredentials(api_key=FAKE_KEY, region="beijing").get_client().base_url == "https://dashscope.aliyuncs.com"
    assert WanCredentials(api_key=FAKE_KEY).get_client().base_url == Region.SINGAPORE.base_url
    creds = WanCredentials(api_key=FAKE_KEY, base_url="http://127.0.0.1:8765/api/v1/")
    assert creds.get_client().base_url == "http://127.0.0.1:8765"
    for bad in ("dashscope.aliyuncs.com", "ftp://x", "https://user:pw@host", "https://host?x=1"):
        with pytest.raises(ValidationError, match="base_url"):
            WanCredentials(api_key=FAKE_KEY, base_url=bad)
    with pytest.raises(ValidationError):
        WanCredentials(api_key=FAKE_KEY, region="virginia")


def test_secret_stays_secret():
    creds = WanCredentials(api_key=FAKE_KEY, workspace="llm-ws")
    for text in (repr(creds), str(creds), creds.model_dump_json(), repr(creds.get_client())):
        assert FAKE_KEY not in text


def test_registered_as_a_prefect_collection():
    names = {ep.name: ep.value for ep in entry_points(group="prefect.collections")}
    assert names.get("prefect_wan") == "prefect_wan"
    schema = WanCredentials.model_json_schema()
    assert schema["secret_fields"] == ["api_key"]
    assert WanCredentials.get_block_type_slug() == "wan-credentials"
