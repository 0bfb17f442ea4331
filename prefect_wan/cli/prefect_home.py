"""The Prefect database a command would open, checked before Prefect starts a temporary server on it.

A ``PREFECT_HOME`` whose SQLite database was migrated by another Prefect version cannot be opened:
the temporary server dies in alembic ("No such revision") and the command prints hundreds of lines.
Said here in one line instead, with the fix.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sqlite3
from pathlib import Path
from typing import Optional

from prefect_wan.ledger.places import PrefectPlaces

_REVISION = re.compile(r'^revision = "([0-9a-f]+)"', re.MULTILINE)


def _known_revisions() -> set[str]:
    # Found by path, without importing Prefect (a second) or its server's database module (one more).
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.origin is not None
    folder = Path(spec.origin).parent / "server" / "database" / "_migrations" / "versions" / "sqlite"
    return {m.group(1) for path in folder.glob("*.py") for m in [_REVISION.search(path.read_text())] if m}


def unopenable_database(places: Optional[PrefectPlaces] = None) -> Optional[str]:
    """Why the temporary server could not open its database, or None (a server is configured, the
    database is new, or this Prefect made it). ``places``: Prefect's settings as read without it;
    Prefect's own when not given."""
    places = places or PrefectPlaces.of_prefect()
    if places.api_url:
        return None  # a server of the user's own: its database is its business
    text = places.database_url
    if not text.startswith("sqlite"):
        return None
    path = Path(text.split(":///", 1)[-1]).expanduser()
    if not path.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            row = connection.execute("select version_num from alembic_version").fetchone()
    except sqlite3.Error:
        return None  # not ours to judge: Prefect says what is wrong with it
    if row is None or row[0] in _known_revisions():
        return None
    return (
        f"the Prefect database {path} was migrated by another Prefect version (revision {row[0]} is unknown to Prefect "
        f"{importlib.metadata.version('prefect')}): set PREFECT_HOME to another folder, or use the Prefect version that made it"
    )
