"""Where Prefect keeps this machine's state (its home, database and API), read without importing Prefect.

A command sends its first pair while Prefect is still loading (a second here), so the submission
record and lock of that send must be found where the run will look for them: under Prefect's own
home. ``PrefectPlaces.read`` resolves what Prefect would from the environment and the active
profile, and answers None whenever another source could change it (a ``.env``, ``prefect.toml`` or
``[tool.prefect]`` in the working folder, a database given piecewise, a templated value): then the
command waits for Prefect, as before. Tests hold it equal to Prefect's settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import tomllib

HOME = "PREFECT_HOME"
API_URL = "PREFECT_API_URL"
DATABASE_URLS = ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")
# Database settings given piecewise (driver, host, name...): Prefect builds the URL from them.
_DATABASE_PARTS = ("PREFECT_SERVER_DATABASE_", "PREFECT_API_DATABASE_")
_CHOOSERS = ("PREFECT_PROFILE", "PREFECT_PROFILES_PATH")


@dataclass(frozen=True)
class PrefectPlaces:
    home: Path
    api_url: Optional[str]
    database_url: str

    @classmethod
    def read(cls, environ: Optional[Mapping[str, str]] = None, cwd: Optional[Path] = None) -> Optional[PrefectPlaces]:
        """What Prefect's settings would say, or None when only Prefect can tell."""
        environ = os.environ if environ is None else environ
        cwd = cwd or Path.cwd()
        if (cwd / ".env").exists() or (cwd / "prefect.toml").exists() or _names_prefect(cwd / "pyproject.toml"):
            return None
        profile = _active_profile(environ)
        if profile is None:
            return None
        # The environment wins over the profile, as in Prefect.
        settings = {**profile, **{k: v for k, v in environ.items() if k.startswith("PREFECT_")}}
        if any(k.startswith(_DATABASE_PARTS) and k not in DATABASE_URLS for k in settings):
            return None
        if any("$" in settings.get(k, "") for k in (HOME, API_URL, *DATABASE_URLS)):
            return None
        home = Path(settings.get(HOME) or "~/.prefect").expanduser()
        database = next((settings[k] for k in DATABASE_URLS if settings.get(k)), f"sqlite+aiosqlite:///{home}/prefect.db")
        return cls(home=home, api_url=settings.get(API_URL) or None, database_url=database)

    @classmethod
    def of_prefect(cls) -> PrefectPlaces:
        """Prefect's own settings (imports Prefect)."""
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        url = settings.server.database.connection_url
        return cls(home=Path(settings.home), api_url=settings.api.url or None, database_url=url.get_secret_value() if url is not None else "")


def home_or_prefects(home: Optional[Path]) -> Path:
    """``home`` when given, else Prefect's own (imports Prefect)."""
    if home is not None:
        return home
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home)


def _names_prefect(pyproject: Path) -> bool:
    try:
        return "tool.prefect" in pyproject.read_text(errors="replace")
    except OSError:
        return False


def _active_profile(environ: Mapping[str, str]) -> Optional[dict[str, str]]:
    """The active profile's settings ({} without a profiles file), or None when it cannot be read."""
    if any(environ.get(k) for k in _CHOOSERS):
        return None  # chosen elsewhere: left to Prefect
    path = Path(environ.get(HOME) or "~/.prefect").expanduser() / "profiles.toml"
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    profiles = document.get("profiles", {})
    chosen = profiles.get(document.get("active", "ephemeral"), {})
    if not isinstance(chosen, dict):
        return None
    return {str(k): str(v) for k, v in chosen.items()}
