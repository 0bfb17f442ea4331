"""Prefect's own block standards, plus save/load and CLI registration against a real server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prefect.settings import PREFECT_API_URL
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from prefect_wan import WanCredentials
from prefect_wan.blocks import WanCoordination
from tests.helpers import FAKE_KEY


class TestWanCredentialsStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self):
        return WanCredentials

    @pytest.mark.skip(reason="downloads the logo; this machine has no network")
    def test_has_a_valid_image(self, block):  # pragma: no cover
        pass


class TestWanCoordinationStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self):
        return WanCoordination

    @pytest.mark.skip(reason="downloads the logo; this machine has no network")
    def test_has_a_valid_image(self, block):  # pragma: no cover
        pass


async def test_coordination_keeps_its_secrets(prefect_harness):
    await WanCoordination(
        submissions_url="s3://b/subs", submissions_storage_options={"secret": "s3-SECRET"}, redis_url="redis://:redis-SECRET@127.0.0.1:6379/0"
    ).asave("wan-coordination-test", overwrite=True)
    loaded = await WanCoordination.aload("wan-coordination-test")
    assert loaded.redis_url is not None and loaded.redis_url.get_secret_value().endswith("@127.0.0.1:6379/0")
    assert loaded.submissions_storage_options.get_secret_value() == {"secret": "s3-SECRET"}
    shown = repr(loaded) + str(loaded.model_dump())
    assert "SECRET" not in shown and loaded.redis_location == "redis://127.0.0.1:6379/0"
    with pytest.raises(ValueError, match="redis_url must start with redis://"):
        WanCoordination(redis_url="http://127.0.0.1:6379")


async def test_save_and_load_round_trip_keeps_the_secret(prefect_harness):
    await WanCredentials(api_key=FAKE_KEY, region="beijing", workspace="llm-1").asave("wan-test", overwrite=True)
    loaded = await WanCredentials.aload("wan-test")
    assert loaded.region == "beijing" and loaded.workspace == "llm-1"
    assert loaded.resolved_api_key().get_secret_value() == FAKE_KEY


def test_cli_registers_the_block_type(prefect_harness):
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_wan"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Wan Credentials" in done.stdout
