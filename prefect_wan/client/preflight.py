"""Every rule the service enforces, checked before a single request is sent to it.

``check_request`` needs no I/O; ``prepare`` also reads the frames, checks them, and computes the
fingerprint and the predicted output size.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Optional

import httpx

from prefect_wan.client.catalog import MB, MODELS, ImageLimits, ModelSpec, lookup_model, offered_in
from prefect_wan.client.errors import PreflightError, PreflightViolation
from prefect_wan.client.fingerprint import request_fingerprint
from prefect_wan.client.images import (
    LoadedMedia,
    SourceError,
    describe_source,
    inspect_audio,
    inspect_image,
    read_source,
)
from prefect_wan.client.regions import Region
from prefect_wan.client.request import KeyframeVideoRequest
from prefect_wan.client.sizing import output_size
from prefect_wan.client.wire import TaskParameters

SEED_MAX = 2_147_483_647
AUDIO_MAX_BYTES = 15 * MB
AUDIO_SECONDS = (2.0, 30.0)


@dataclass(frozen=True)
class CheckedRequest:
    """A request whose parameters passed, with every default made explicit."""

    request: KeyframeVideoRequest
    spec: ModelSpec
    region: Region
    prompt: Optional[str]
    negative_prompt: Optional[str]
    parameters: TaskParameters

    @property
    def family(self):
        return self.spec.family

    @property
    def uses_last_frame(self) -> bool:
        # With a template the service ignores the last frame, so we neither read nor send it.
        return self.request.template is None


@dataclass(frozen=True)
class PreparedRequest(CheckedRequest):
    """A checked request with its media read and inspected."""

    first_frame: LoadedMedia = None  # type: ignore[assignment]
    last_frame: Optional[LoadedMedia] = None
    driving_audio: Optional[LoadedMedia] = None
    fingerprint: str = ""
    output_size: Optional[tuple[int, int]] = None


def check_request(request: KeyframeVideoRequest, region: Region | str) -> CheckedRequest:
    """Check every rule that needs no I/O; raise ``PreflightError`` naming each broken one."""
    region = Region(region)
    problems: list[PreflightViolation] = []
    spec = lookup_model(request.model)
    if spec is None:
        raise PreflightError(
            [PreflightViolation("model", request.model, f"unknown model; supported: {', '.join(sorted(MODELS))} (and dated wan2.7-i2v snapshots)")]
        )
    family = spec.family
    if region not in spec.regions:
        there = sorted(name for name, s in MODELS.items() if region in s.regions)
        where = ", ".join(r.value for r in offered_in(spec.name))
        problems.append(
            PreflightViolation(
                "model",
                request.model,
                f"not offered in region {region.value}; it is offered in {where}. Model, key and endpoint must be of "
                f"one region (first-and-last-frame models in {region.value}: {', '.join(there) or 'none'})",
            )
        )
    resolution = request.resolution or spec.default_resolution
    if resolution not in spec.resolutions:
        problems.append(PreflightViolation("resolution", request.resolution, f"{spec.name} takes {', '.join(spec.resolutions)}"))
    duration = family.default_duration if request.duration is None else request.duration
    smart = family.smart_duration and duration == -1
    if not smart and not family.min_duration <= duration <= family.max_duration:
        rule = (
            f"{spec.name} makes videos of exactly {family.min_duration} s"
            if family.min_duration == family.max_duration
            else f"{spec.name} takes {family.min_duration} to {family.max_duration} s" + (", or -1 to let the service choose" if family.smart_duration else "")
        )
        problems.append(PreflightViolation("duration", request.duration, rule))
    if request.ratio is not None:
        if not family.ratios:
            problems.append(PreflightViolation("ratio", request.ratio, f"{spec.name} takes no ratio (its output follows the first frame)"))
        elif request.ratio not in family.ratios:
            problems.append(PreflightViolation("ratio", request.ratio, f"must be one of {', '.join(family.ratios)}"))
    if request.audio is not None and not family.audio_switch:
        state = "always has an audio track" if family.has_audio else "makes silent videos"
        problems.append(PreflightViolation("audio", request.audio, f"{spec.name} {state}; audio on/off is for wan3.0 models"))
    if request.negative_prompt and not family.takes_negative_prompt:
        problems.append(PreflightViolation("negative_prompt", request.negative_prompt, f"{spec.name} documents no negative prompt; put it in the prompt"))
    if request.seed is not None and not 0 <= request.seed <= SEED_MAX:
        problems.append(PreflightViolation("seed", request.seed, f"must be in [0, {SEED_MAX}]"))
    prompt = _check_text("prompt", request.prompt, family.prompt_limit, request.truncate_prompts, problems)
    negative = _check_text("negative_prompt", request.negative_prompt, family.negative_prompt_limit, request.truncate_prompts, problems)
    if request.template is not None:
        if not spec.templates:
            problems.append(PreflightViolation("template", request.template, f"{spec.name} takes no template (templates are for wanx2.1/wan2.1-kf2v-plus)"))
        elif request.template not in spec.templates:
            problems.append(PreflightViolation("template", request.template, f"must be one of {', '.join(sorted(spec.templates))}"))
    elif request.last_frame is None:
        problems.append(PreflightViolation("last_frame", None, "required (only template mode works from a first frame alone)"))
    if request.driving_audio is not None and not family.supports_driving_audio:
        problems.append(PreflightViolation("driving_audio", describe_source(request.driving_audio), f"{spec.name} takes no driving audio"))
    if problems:
        raise PreflightError(problems)
    return CheckedRequest(
        request=request,
        spec=spec,
        region=region,
        prompt=prompt,
        negative_prompt=negative,
        parameters=TaskParameters(
            resolution=resolution,
            ratio=(request.ratio or "adaptive") if family.ratios else None,
            audio=(True if request.audio is None else request.audio) if family.audio_switch else None,
            duration=duration,
            prompt_extend=request.prompt_extend,
            watermark=request.watermark,
            seed=request.seed,
        ),
    )


async def prepare(request: KeyframeVideoRequest, region: Region | str, *, http: httpx.AsyncClient) -> PreparedRequest:
    """Check the request, read and check its media, fingerprint it. Sends nothing to DashScope."""
    checked = check_request(request, region)
    limits = checked.family.image_limits
    sources: dict[str, Any] = {"first_frame": request.first_frame}
    if checked.uses_last_frame:
        sources["last_frame"] = request.last_frame
    if request.driving_audio is not None:
        sources["driving_audio"] = request.driving_audio

    async def load(field: str, source: Any) -> LoadedMedia | PreflightViolation:
        audio = field == "driving_audio"
        max_bytes = AUDIO_MAX_BYTES if audio else limits.max_bytes
        try:
            data, passthrough = await read_source(source, http=http, max_bytes=max_bytes, storage_options=request.storage_options)
        except SourceError as exc:
            return PreflightViolation(field, describe_source(source), str(exc))
        inspect = inspect_audio if audio else inspect_image
        # Decoding a large frame takes a while: keep the event loop free.
        return await asyncio.to_thread(inspect, data, origin=describe_source(source), passthrough_url=passthrough)

    loaded = dict(zip(sources, await asyncio.gather(*(load(f, s) for f, s in sources.items()))))
    problems = [v for v in loaded.values() if isinstance(v, PreflightViolation)]
    for field, media in loaded.items():
        if isinstance(media, LoadedMedia) and media.inspectable:
            check = _check_audio if field == "driving_audio" else _check_image
            problems.extend(check(field, media, limits))
    if problems:
        raise PreflightError(problems)

    first: LoadedMedia = loaded["first_frame"]  # type: ignore[assignment]
    last: Optional[LoadedMedia] = loaded.get("last_frame")  # type: ignore[assignment]
    audio: Optional[LoadedMedia] = loaded.get("driving_audio")  # type: ignore[assignment]
    resolution = checked.parameters.resolution or checked.spec.default_resolution
    size = output_size(checked.parameters.ratio, first.width, first.height, resolution)
    return PreparedRequest(
        **checked.__dict__,
        first_frame=first,
        last_frame=last,
        driving_audio=audio,
        fingerprint=_fingerprint(checked, first, last, audio),
        output_size=size,
    )


def _fingerprint(checked: CheckedRequest, first: LoadedMedia, last: Optional[LoadedMedia], audio: Optional[LoadedMedia]) -> str:
    return request_fingerprint(
        model=checked.spec.name,
        region=checked.region.value,
        parameters=checked.parameters.model_dump(),
        prompt=checked.prompt,
        negative_prompt=checked.negative_prompt,
        template=checked.request.template,
        first_frame_sha256=first.sha256,
        last_frame_sha256=last.sha256 if last else None,
        driving_audio_sha256=audio.sha256 if audio else None,
    )


def revised(prepared: PreparedRequest, request: KeyframeVideoRequest) -> PreparedRequest:
    """``request`` (the prepared one with other fields: a draft's resolution or model, a take's
    seed, a final's prompt) over the frames already read: every rule checked again, the
    fingerprint and output size made anew, the frames not read again."""
    checked = check_request(request, prepared.region)
    problems = [
        problem
        for field, media in (("first_frame", prepared.first_frame), ("last_frame", prepared.last_frame if checked.uses_last_frame else None))
        if media is not None and media.inspectable
        for problem in _check_image(field, media, checked.family.image_limits)
    ]
    if problems:
        raise PreflightError(problems)
    first, last, audio = prepared.first_frame, prepared.last_frame if checked.uses_last_frame else None, prepared.driving_audio
    resolution = checked.parameters.resolution or checked.spec.default_resolution
    return PreparedRequest(
        **checked.__dict__,
        first_frame=first,
        last_frame=last,
        driving_audio=audio,
        fingerprint=_fingerprint(checked, first, last, audio),
        output_size=output_size(checked.parameters.ratio, first.width, first.height, resolution),
    )


def reseeded(prepared: PreparedRequest, seed: int) -> PreparedRequest:
    """The same request with another seed (another piece of work: its own fingerprint), frames not read again."""
    if not 0 <= seed <= SEED_MAX:
        raise PreflightError([PreflightViolation("seed", seed, f"must be in [0, {SEED_MAX}]")])
    return revised(prepared, prepared.request.model_copy(update={"seed": seed}))


def _check_text(field: str, text: Optional[str], limit: int, truncate: bool, problems: list[PreflightViolation]) -> Optional[str]:
    if text is None or len(text) <= limit:
        return text
    if truncate:
        return text[:limit]
    problems.append(
        PreflightViolation(
            field,
            text,
            f"{len(text)} characters, the limit is {limit} (the service would cut the rest silently; shorten it or set truncate_prompts=True)",
        )
    )
    return text


def _check_image(field: str, image: LoadedMedia, limits: ImageLimits) -> list[PreflightViolation]:
    where = image.origin
    if image.decode_error:
        return [PreflightViolation(field, where, f"{image.format or 'image'} is truncated or corrupt ({image.decode_error}); re-export it")]
    if not image.readable:
        return [PreflightViolation(field, where, f"not a readable image; use {', '.join(limits.formats)}")]
    problems = []
    if image.format not in limits.formats:
        problems.append(PreflightViolation(field, where, f"format {image.format} is not accepted; use {', '.join(limits.formats)}"))
    if image.format == "PNG" and image.has_transparency:
        problems.append(PreflightViolation(field, where, f"PNG with transparency (mode {image.mode}) is not accepted; flatten it to RGB"))
    if image.size > limits.max_bytes:
        problems.append(PreflightViolation(field, where, f"{image.size} bytes, the limit is {limits.max_bytes} bytes"))
    for side, value in (("width", image.width), ("height", image.height)):
        if not limits.min_side <= value <= limits.max_side:
            problems.append(PreflightViolation(field, where, f"{side} {value} px is outside [{limits.min_side}, {limits.max_side}] px"))
    if limits.max_aspect and image.width and image.height:
        aspect = max(image.width / image.height, image.height / image.width)
        if aspect > limits.max_aspect:
            problems.append(PreflightViolation(field, where, f"aspect ratio {image.width}:{image.height} is beyond 1:{limits.max_aspect:g}"))
    return problems


def _check_audio(field: str, audio: LoadedMedia, limits: ImageLimits) -> list[PreflightViolation]:
    where = audio.origin
    if not audio.readable:
        return [PreflightViolation(field, where, "not readable as WAV or MP3 audio")]
    problems = []
    if audio.size > AUDIO_MAX_BYTES:
        problems.append(PreflightViolation(field, where, f"{audio.size} bytes, the limit is {AUDIO_MAX_BYTES} bytes"))
    low, high = AUDIO_SECONDS
    if audio.seconds is not None and not low <= audio.seconds <= high:
        problems.append(PreflightViolation(field, where, f"{audio.seconds:.1f} s is outside [{low:g}, {high:g}] s"))
    return problems
