"""The ``prefect-wan`` command line."""

from prefect_wan.cli.app import app, main

__all__ = ["app", "main"]
