"""A stable identity for a piece of work, independent of where its inputs live."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

FINGERPRINT_VERSION = 1


def request_fingerprint(
    *,
    model: str,
    region: str,
    parameters: dict[str, Any],
    prompt: Optional[str],
    negative_prompt: Optional[str],
    template: Optional[str],
    first_frame_sha256: str,
    last_frame_sha256: Optional[str],
    driving_audio_sha256: Optional[str] = None,
) -> str:
    """SHA-256 over the canonical JSON of everything that decides the video (and its bill)."""
    document = {
        "v": FINGERPRINT_VERSION,
        "model": model,
        "region": region,
        "parameters": {k: v for k, v in sorted(parameters.items()) if v is not None},
        "prompt": prompt or "",
        "negative_prompt": negative_prompt or "",
        "template": template,
        "first_frame": first_frame_sha256,
        "last_frame": last_frame_sha256,
        "driving_audio": driving_audio_sha256,
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
