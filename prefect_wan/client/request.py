"""``KeyframeVideoRequest``: one first frame, one last frame, one prompt, one video."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, InstanceOf, field_validator
from pydantic.json_schema import SkipJsonSchema

from prefect_wan.client.catalog import DEFAULT_MODEL

ImageInput = Union[Path, str, bytes, SkipJsonSchema[InstanceOf[Image.Image]]]
AudioInput = Union[Path, str, bytes]


class KeyframeVideoRequest(BaseModel):
    """What to generate. The model name picks the request shape (kf2v or wan2.7) and its limits.

    Fields left ``None`` take the model's defaults. Rules are checked by ``preflight`` (which
    needs the region) before anything is sent.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    first_frame: ImageInput = Field(description="First frame: path, http(s)/fsspec/oss URL, data URI, bytes or PIL image.")
    last_frame: Optional[ImageInput] = Field(default=None, description="Last frame; required unless a template is used.")
    prompt: Optional[str] = Field(default=None, description="What happens between the frames.")
    negative_prompt: Optional[str] = Field(default=None, description="What to avoid.")
    model: str = Field(default=DEFAULT_MODEL, description="A kf2v model, wan2.7-i2v or wan3.0-video(-prime), or a dated snapshot.")
    resolution: Optional[str] = Field(default=None, description="Resolution tier: 480P, 720P or 1080P, per model.")
    duration: Optional[int] = Field(default=None, description="Seconds: 5 for kf2v, 2-15 for wan2.7, 2-30 or -1 (the service chooses) for wan3.0.")
    ratio: Optional[str] = Field(default=None, description="wan3.0 only: adaptive (default), 16:9, 4:3, 1:1, 3:4 or 9:16.")
    audio: Optional[bool] = Field(default=None, description="wan3.0 only: with an audio track (default) or silent; same price.")
    prompt_extend: bool = Field(default=True, description="Let the service rewrite the prompt.")
    watermark: bool = Field(default=False, description="Add the 'AI generated' mark.")
    seed: Optional[int] = Field(default=None, description="Seed in [0, 2147483647]; random if omitted.")
    template: Optional[str] = Field(default=None, description="Effect template (wanx2.1/wan2.1-kf2v-plus only).")
    driving_audio: Optional[AudioInput] = Field(default=None, description="wan2.7 only: wav/mp3 that drives the video.")
    truncate_prompts: bool = Field(
        default=False,
        description="Cut over-long prompts to the model's limit instead of refusing them (the service would cut silently).",
    )
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for reading fsspec-URL sources (s3://...).")

    @field_validator("resolution", mode="before")
    @classmethod
    def _tier_in_any_case(cls, value: object) -> object:
        # 720p, 720P: the same tier.
        return value.strip().upper() if isinstance(value, str) else value
