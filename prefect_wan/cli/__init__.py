"""The ``prefect-wan`` command line."""

import os
import sys

# Piped or redirected, Rich would lay the help out at 80 columns and cut words ("wan2.2-kf2v-flas…"):
# give it room, unless the user chose a width.
if not sys.stdout.isatty():
    os.environ.setdefault("TERMINAL_WIDTH", "200")

from prefect_wan.cli.app import app, main  # noqa: E402

__all__ = ["app", "main"]
