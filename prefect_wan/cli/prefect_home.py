"""The Prefect database a command would open, checked before Prefect starts a temporary server on it.

A ``PREFECT_HOME`` whose SQLite database was migrated by another Prefect version cannot be opened:
the temporary server dies in alembic ("No such revision") and the command prints hundreds of lines.
Said here in one line instead, with the fix.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Optional

_REVISION = re.compile(r'^revision = "([0-9a-f]+)"', re.MULTILINE)


def _known_revisions() -> set[str]:
    import prefect

    # Found by path: importing prefect.server.database would cost the command a second.
    folder = Path(prefect.__file__).parent / "server" / "database" / "_migrations" / "versions" / "sqlite"
    return {m.group(1) for path in folder.glob("*.py") for m in [_REVISION.search(path.read_text())] if m}


def unopenable_database() -> Optional[str]:
    """Why the temporary server could not open its database, or None (a server is configured, the
    database is new, or this Prefect made it)."""
    import prefect
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url:
        return None  # a server of the user's own: its database is its business
    url = settings.server.database.connection_url
    text = url.get_secret_value() if url is not None else ""
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
        f"{prefect.__version__}): set PREFECT_HOME to another folder, or use the Prefect version that made it"
    )
