"""Prefect's own block standards, plus save/load and CLI registration against a real server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prefect.settings import PREFECT_API_URL
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from prefect_wan import WanCredentials
from tests.helpers import FAKE_KEY


class TestWanCredentialsStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self):
        return WanCredentials

    @pytest.mark.skip(reason="downloads the logo; this machine has no network")
    def test_has_a_valid_image(self, block):  # pragma: no cover
        pass


async def test_save_and_load_round_trip_keeps_the_secret(prefect_harness):
    await WanCredentials(api_key=FAKE_KEY, region="beijing", workspace="llm-1").asave("wan-test", overwrite=True)
    loaded = await WanCredentials.aload("wan-test")
    assert loaded.region == "beijing" and loaded.workspace == "llm-1"
    assert loaded.resolved_api_key().get_secret_value() == FAKE_KEY


def test_cli_registers_the_block_type(prefect_harness):
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_wan"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Wan Credentials" in done.stdout
