"""DashScope regions and their public API hosts."""

from __future__ import annotations

from enum import Enum


class Region(str, Enum):
    """A DashScope region. Model names, API keys and hosts belong to exactly one region."""

    SINGAPORE = "singapore"
    BEIJING = "beijing"

    @property
    def base_url(self) -> str:
        return _BASE_URLS[self]


_BASE_URLS: dict[Region, str] = {
    Region.SINGAPORE: "https://dashscope-intl.aliyuncs.com",
    Region.BEIJING: "https://dashscope.aliyuncs.com",
}
