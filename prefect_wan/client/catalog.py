"""What each supported model accepts: endpoint, body shape, limits, regions and prices.

A model family owns the request shape; a model spec owns the per-model facts. Adding a family is a
new ``ModelFamily`` subclass and its specs here, nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from prefect_wan.client.regions import Region
from prefect_wan.client.wire import MediaItem, TaskInput

IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
MB = 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    formats: tuple[str, ...] = IMAGE_FORMATS
    max_bytes: int = 10 * MB
    # Current docs say [240, 8000]; 2025 docs said [360, 2000]. The service is the judge; we
    # follow the current docs so we never refuse what it accepts.
    min_side: int = 240
    max_side: int = 8000
    max_aspect: Optional[float] = None


@dataclass(frozen=True)
class Price:
    """Price of one billed second (output video; for wan3.0 input plus output video)."""

    amount: float
    currency: str
    confirmed: bool = True
    note: str = ""


@dataclass(frozen=True)
class FrameUrls:
    first: Optional[str]
    last: Optional[str]
    audio: Optional[str] = None


class ModelFamily:
    """A request shape and the limits that come with it."""

    name: str
    endpoint_path: str
    prompt_limit: int
    negative_prompt_limit: int = 500
    image_limits: ImageLimits
    min_duration: int
    max_duration: int
    default_duration: int = 5
    has_audio: bool
    supports_driving_audio: bool = False
    # wan3.0: -1 asks the service to choose the length ("smart duration").
    smart_duration: bool = False
    takes_negative_prompt: bool = True
    ratios: tuple[str, ...] = ()
    audio_switch: bool = False

    def build_input(
        self,
        *,
        prompt: str | None,
        negative_prompt: str | None,
        first_url: str,
        last_url: str | None,
        template: str | None = None,
        audio_url: str | None = None,
    ) -> TaskInput:
        raise NotImplementedError

    def frame_urls(self, task_input: TaskInput) -> FrameUrls:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<ModelFamily {self.name}>"


class Kf2vFamily(ModelFamily):
    name = "kf2v"
    endpoint_path = "/api/v1/services/aigc/image2video/video-synthesis"
    prompt_limit = 800
    image_limits = ImageLimits()
    min_duration = max_duration = 5
    has_audio = False

    def build_input(self, *, prompt, negative_prompt, first_url, last_url, template=None, audio_url=None):
        return TaskInput(
            prompt=prompt,
            negative_prompt=negative_prompt,
            first_frame_url=first_url,
            last_frame_url=last_url,
            template=template,
        )

    def frame_urls(self, task_input: TaskInput) -> FrameUrls:
        extra = task_input.model_extra or {}
        # Legacy SDK names for the same two frames.
        first = task_input.first_frame_url or extra.get("head_frame")
        last = task_input.last_frame_url or extra.get("tail_frame")
        return FrameUrls(first=first, last=last)


class Wan27Family(ModelFamily):
    name = "wan2.7"
    endpoint_path = "/api/v1/services/aigc/video-generation/video-synthesis"
    prompt_limit = 5000
    image_limits = ImageLimits(max_bytes=20 * MB, max_aspect=8.0)
    min_duration, max_duration = 2, 15
    has_audio = True
    supports_driving_audio = True

    def build_input(self, *, prompt, negative_prompt, first_url, last_url, template=None, audio_url=None):
        media = [MediaItem(type="first_frame", url=first_url)]
        if last_url:
            media.append(MediaItem(type="last_frame", url=last_url))
        if audio_url:
            media.append(MediaItem(type="driving_audio", url=audio_url))
        return TaskInput(prompt=prompt, negative_prompt=negative_prompt, media=media)

    def frame_urls(self, task_input: TaskInput) -> FrameUrls:
        by_type = {item.type: item.url for item in task_input.media or []}
        return FrameUrls(
            first=by_type.get("first_frame"),
            last=by_type.get("last_frame"),
            audio=by_type.get("driving_audio"),
        )


class Wan30Family(Wan27Family):
    """wan3.0-video: the wan2.7 endpoint and ``media`` shape, with ratio, audio on/off, 2-30 s."""

    name = "wan3.0"
    prompt_limit = 20_000
    min_duration, max_duration = 2, 30
    supports_driving_audio = False  # reference_* media are exclusive with frames
    smart_duration = True
    # UNCONFIRMED: no negative_prompt is documented for wan3.0; refused rather than silently ignored.
    takes_negative_prompt = False
    ratios = ("adaptive", "16:9", "4:3", "1:1", "3:4", "9:16")
    audio_switch = True


KF2V = Kf2vFamily()
WAN27 = Wan27Family()
WAN30 = Wan30Family()
FAMILIES = (KF2V, WAN27, WAN30)

KF2V_TEMPLATES = frozenset({"hanfu-1", "solaron", "magazine", "mech1", "mech2"})


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: ModelFamily
    regions: frozenset[Region]
    resolutions: tuple[str, ...]
    default_resolution: str
    templates: frozenset[str] = frozenset()
    prices: dict[tuple[Region, str], Price] = field(default_factory=dict)
    max_running: int = 2
    submit_rps: dict[Region, float] = field(default_factory=dict)

    def price(self, region: Region, resolution: str) -> Price | None:
        return self.prices.get((region, resolution))


_CNY, _USD = "CNY", "USD"
_SG, _BJ = Region.SINGAPORE, Region.BEIJING
_TOKYO, _FRANKFURT, _VIRGINIA = Region.TOKYO, Region.FRANKFURT, Region.VIRGINIA
_ALL_REGIONS = frozenset(Region)
_WAN30_DISCOUNT = "shown with a limited-time 30 % discount; this is the list price"


def _wan30_prices(mainland: tuple[float, float, float], singapore: tuple[float, float, float], note: str = "") -> dict[tuple[Region, str], Price]:
    """CNY per second of input + output video; the same list price in Beijing, Tokyo, Frankfurt and Virginia."""
    prices = {}
    for region in _ALL_REGIONS:
        amounts = singapore if region is _SG else mainland
        for tier, amount in zip(("480P", "720P", "1080P"), amounts):
            prices[(region, tier)] = Price(amount, _CNY, note=note)
    return prices


_SPECS = [
    ModelSpec(
        name="wan2.2-kf2v-flash",
        family=KF2V,
        # UNCONFIRMED in Singapore: the EN docs' Singapore samples use it, the ZH tables omit it.
        # Allowed, since a refusal by the service costs nothing while our refusal would block users.
        regions=frozenset({_BJ, _SG}),
        resolutions=("480P", "720P", "1080P"),
        default_resolution="720P",
        prices={(_BJ, "480P"): Price(0.10, _CNY), (_BJ, "720P"): Price(0.20, _CNY), (_BJ, "1080P"): Price(0.48, _CNY)},
        submit_rps={_BJ: 2.0, _SG: 2.0},
    ),
    ModelSpec(
        name="wanx2.1-kf2v-plus",
        family=KF2V,
        regions=frozenset({_BJ}),
        resolutions=("720P",),
        default_resolution="720P",
        templates=KF2V_TEMPLATES,
        prices={(_BJ, "720P"): Price(0.70, _CNY)},
        submit_rps={_BJ: 2.0},
    ),
    ModelSpec(
        name="wan2.1-kf2v-plus",
        family=KF2V,
        regions=frozenset({_SG}),
        resolutions=("720P",),
        default_resolution="720P",
        templates=KF2V_TEMPLATES,
        prices={(_SG, "720P"): Price(0.10, _USD)},
        submit_rps={_SG: 1.0},
    ),
    ModelSpec(
        name="wan2.7-i2v",
        family=WAN27,
        regions=frozenset({_BJ, _SG}),
        resolutions=("720P", "1080P"),
        default_resolution="1080P",
        prices={
            (_BJ, "720P"): Price(0.6, _CNY),
            (_BJ, "1080P"): Price(1.0, _CNY),
            # Derived from the CNY list price; no official USD table was found.
            (_SG, "720P"): Price(0.10, _USD, confirmed=False),
            (_SG, "1080P"): Price(0.15, _USD, confirmed=False),
        },
        max_running=5,
        submit_rps={_BJ: 5.0, _SG: 5.0},
    ),
]

_SPECS += [
    ModelSpec(
        name="wan3.0-video",
        family=WAN30,
        regions=_ALL_REGIONS,
        resolutions=("480P", "720P", "1080P"),
        default_resolution="1080P",
        prices=_wan30_prices((0.3, 0.6, 1.2), (0.37471, 0.74942, 1.49884), note=_WAN30_DISCOUNT),
        max_running=5,
        submit_rps={region: 5.0 for region in _ALL_REGIONS},
    ),
    ModelSpec(
        name="wan3.0-video-prime",
        family=WAN30,
        regions=_ALL_REGIONS,
        resolutions=("480P", "720P", "1080P"),
        default_resolution="1080P",
        prices=_wan30_prices((0.45, 0.9, 1.8), (0.495838, 1.020844, 2.041687)),
        max_running=5,
        submit_rps={region: 5.0 for region in _ALL_REGIONS},
    ),
]

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
DEFAULT_MODEL = "wan2.2-kf2v-flash"

# Dated snapshots ("wan2.7-i2v-2026-04-25") share the facts of their base model.
_SNAPSHOT = re.compile(r"^(?P<base>.+)-\d{4}-\d{2}-\d{2}$")


def lookup_model(name: str) -> ModelSpec | None:
    """The spec of a model name, including dated snapshots; ``None`` if unknown."""
    spec = MODELS.get(name)
    if spec is not None:
        return spec
    match = _SNAPSHOT.match(name)
    if match and match["base"] in MODELS and MODELS[match["base"]].family is not KF2V:
        base = MODELS[match["base"]]
        return ModelSpec(**{**base.__dict__, "name": name})
    return None


def serves_path(spec: ModelSpec, path: str) -> bool:
    """Whether a create call for ``spec`` belongs on ``path`` (wan2.7 and wan3.0 share theirs)."""
    return path.rstrip("/") == spec.family.endpoint_path


def offered_in(name: str) -> list[Region]:
    spec = lookup_model(name)
    return sorted(spec.regions, key=list(Region).index) if spec else []


def catalog_table() -> str:
    """Which model in which region, at what price per second: the README's table, from this catalog."""
    lines = ["| Model | Family | Region | Resolutions | Price per second | Running at once |", "|---|---|---|---|---|---|"]
    for spec in _SPECS:
        for region in offered_in(spec.name):
            prices = []
            for tier in spec.resolutions:
                price = spec.price(region, tier)
                if price is None:
                    prices.append(f"{tier}: unpublished")
                else:
                    flags = ("" if price.confirmed else " (derived, unconfirmed)") + (" ¹" if price.note else "")
                    prices.append(f"{tier}: {price.amount:g} {price.currency}{flags}")
            lines.append(f"| `{spec.name}` | {spec.family.name} | {region.value} | {', '.join(spec.resolutions)} | {'; '.join(prices)} | {spec.max_running} |")
    return "\n".join(lines)
