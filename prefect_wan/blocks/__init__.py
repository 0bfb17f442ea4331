"""Prefect Blocks of prefect-wan."""

from prefect_wan.blocks.coordination import WanCoordination
from prefect_wan.blocks.credentials import WanCredentials

__all__ = ["WanCoordination", "WanCredentials"]
