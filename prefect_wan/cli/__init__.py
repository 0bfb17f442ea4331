"""The ``prefect-wan`` command line."""

import os
import sys

# Piped or redirected, Rich would lay the help out at 80 columns and cut words ("wan2.2-kf2v-flas…"):
# give it room, unless the user chose a width.
if not sys.stdout.isatty():
    os.environ.setdefault("TERMINAL_WIDTH", "200")

# Prefect's anonymous usage data stays off unless the user turns it on: its server's analytics (the
# temporary server is this command's) and its SDK telemetry, whose first-run notice a new Prefect
# home would otherwise print into the command's output. Set before Prefect is imported.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from prefect_wan.cli.app import app, main  # noqa: E402

__all__ = ["app", "main"]
