"""Joining clips into one MP4 with PyAV: by remuxing when they share codec parameters (no quality
lost, no time spent), by re-encoding when they do not.

Consecutive transitions share a keyframe: clip i ends on the frame clip i+1 starts on.
``drop_boundary`` drops clip i's last frame so it is shown once; by remuxing that is only safe
without frame reordering (the last frame then references others but nothing references it), and
the stitch re-encodes otherwise. Audio follows each clip's video and is cut where it ends, so the
tracks stay in sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, Optional

import av
from PIL import ImageOps

from prefect_wan.client.errors import WanError

Method = Literal["remux", "reencode"]
Fit = Literal["pad", "crop"]


class StitchError(WanError, ValueError):
    """The clips cannot be joined; the message says which and why."""


@dataclass(frozen=True)
class ClipInfo:
    path: Path
    codec: str
    width: int
    height: int
    pix_fmt: Optional[str]
    rate: Fraction
    extradata: Optional[bytes]
    audio: Optional[tuple[str, int, int]]  # codec, sample rate, channels

    def remux_key(self) -> tuple:
        return (self.codec, self.width, self.height, self.pix_fmt, self.rate, self.extradata, self.audio)


@dataclass(frozen=True)
class StitchResult:
    path: Path
    method: Method
    reason: str
    frames: int
    duration_seconds: float
    width: int
    height: int
    audio: bool
    dropped_frames: int


def inspect_clip(path: Path) -> ClipInfo:
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise StitchError(f"{path.name}: no video stream")
        video = container.streams.video[0]
        context = video.codec_context
        audio = None
        if container.streams.audio:
            sound = container.streams.audio[0].codec_context
            audio = (sound.name, sound.sample_rate, sound.channels)
        return ClipInfo(
            path=path,
            codec=context.name,
            width=context.width,
            height=context.height,
            pix_fmt=context.pix_fmt,
            rate=Fraction(video.average_rate or video.guessed_rate or 30),
            extradata=bytes(context.extradata or b""),
            audio=audio,
        )


def _video_packets(path: Path) -> list[av.Packet]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [p for p in container.demux(stream) if p.size and p.pts is not None]


def _reorders(packets: list[av.Packet]) -> bool:
    pts = [p.pts or 0 for p in packets]
    return pts != sorted(pts)


def stitch(clips: list[Path], out: Path, *, drop_boundary: bool = False, reencode: bool = False, fit: Fit = "pad") -> StitchResult:
    """Join ``clips`` in order into ``out``; remux when possible, re-encode otherwise (or if asked).

    Clips of another size than the first are fitted to it when re-encoding: ``pad`` (letterbox) or
    ``crop`` (fill, cutting the edges).
    """
    if len(clips) < 2:
        raise StitchError(f"stitching needs at least 2 clips, got {len(clips)}")
    infos = [inspect_clip(Path(c)) for c in clips]
    reason = "asked to re-encode" if reencode else ""
    if not reason and len({i.remux_key() for i in infos}) > 1:
        first = infos[0]
        odd = next(i for i in infos if i.remux_key() != first.remux_key())
        reason = f"{odd.path.name} differs from {first.path.name} in codec parameters"
    if not reason and drop_boundary and any(_reorders(_video_packets(i.path)) for i in infos[:-1]):
        reason = "frames are reordered (B-frames), so a boundary frame cannot be dropped without re-encoding"
    if reason:
        return _reencode(infos, out, drop_boundary=drop_boundary, reason=reason, fit=fit)
    return _remux(infos, out, drop_boundary=drop_boundary)


def _remux(infos: list[ClipInfo], out: Path, *, drop_boundary: bool) -> StitchResult:
    frames = dropped = 0
    with av.open(str(out), "w", format="mp4") as output:
        with av.open(str(infos[0].path)) as template:
            video_out = output.add_stream_from_template(template.streams.video[0])
            audio_out = output.add_stream_from_template(template.streams.audio[0]) if template.streams.audio else None
        start = 0.0  # seconds: where the current clip begins in the output
        audio_end = -1.0
        for index, info in enumerate(infos):
            with av.open(str(info.path)) as clip:
                video_in = clip.streams.video[0]
                audio_in = clip.streams.audio[0] if clip.streams.audio and audio_out is not None else None
                wanted = [video_in] + ([audio_in] if audio_in is not None else [])
                demuxed = [p for p in clip.demux(*wanted) if p.size and p.pts is not None]
                packets = [p for p in demuxed if p.stream.type == "video"]
                if drop_boundary and index < len(infos) - 1:
                    packets.remove(max(packets, key=lambda p: p.pts))
                    dropped += 1
                tb = video_in.time_base
                length = float(len(packets) * int(round(1 / (info.rate * tb))) * tb)
                _shift(packets, video_out, output, start)
                frames += len(packets)
                if audio_in is not None:
                    atb = audio_in.time_base
                    # Sound past this clip's last kept frame would overlap the next clip's, and the
                    # encoder's priming packet (negative time) would step back into the previous one.
                    sound = [p for p in demuxed if p.stream.type == "audio" and 0 <= float(p.pts * atb) < length and start + float(p.dts * atb) > audio_end]
                    if sound:
                        audio_end = start + float(sound[-1].dts * atb)
                    _shift(sound, audio_out, output, start)
                start += length
    return StitchResult(out, "remux", "codec parameters match", frames, start, infos[0].width, infos[0].height, audio_out is not None, dropped)


def _shift(packets: list[av.Packet], stream, output, start: float) -> None:
    """Mux ``packets`` into ``stream``, moved to begin at ``start`` seconds."""
    for packet in packets:
        offset = int(round(start / packet.time_base))
        pts = packet.pts or 0  # packets without a time were filtered out before
        packet.pts = pts + offset
        packet.dts = (pts if packet.dts is None else packet.dts) + offset
        packet.stream = stream
        output.mux(packet)


def _fitted(frame: av.VideoFrame, width: int, height: int, fit: Fit) -> av.VideoFrame:
    if (frame.width, frame.height) == (width, height):
        return frame.reformat(format="yuv420p")
    image = frame.to_image()
    shaped = ImageOps.pad(image, (width, height), color=(0, 0, 0)) if fit == "pad" else ImageOps.fit(image, (width, height))
    return av.VideoFrame.from_image(shaped).reformat(format="yuv420p")


def _reencode(infos: list[ClipInfo], out: Path, *, drop_boundary: bool, reason: str, fit: Fit) -> StitchResult:
    first = infos[0]
    rate = first.rate
    with_audio = all(i.audio for i in infos)
    frames = dropped = 0
    with av.open(str(out), "w", format="mp4") as output:
        video_out = output.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "veryfast"})
        video_out.width, video_out.height, video_out.pix_fmt = first.width, first.height, "yuv420p"
        audio_out = output.add_stream("aac", rate=first.audio[1], layout="mono" if first.audio[2] == 1 else "stereo") if with_audio and first.audio else None
        start = 0.0
        for index, info in enumerate(infos):
            with av.open(str(info.path)) as clip:
                decoded = [f for f in clip.decode(clip.streams.video[0])]
            if drop_boundary and index < len(infos) - 1:
                decoded = decoded[:-1]
                dropped += 1
            for frame in decoded:
                picture = _fitted(frame, first.width, first.height, fit)
                picture.pts, picture.time_base = frames, Fraction(1, 1) / rate
                for packet in video_out.encode(picture):
                    output.mux(packet)
                frames += 1
            length = len(decoded) / rate
            if audio_out is not None:
                _reencode_audio(info.path, audio_out, output, start, float(start + length))
            start += float(length)
        for packet in video_out.encode(None):
            output.mux(packet)
        if audio_out is not None:
            for packet in audio_out.encode(None):
                output.mux(packet)
    return StitchResult(out, "reencode", reason, frames, start, first.width, first.height, audio_out is not None, dropped)


def _reencode_audio(path: Path, audio_out, output, start: float, end: float) -> None:
    resampler = av.AudioResampler(format="fltp", layout=audio_out.layout.name, rate=audio_out.rate)
    with av.open(str(path)) as clip:
        for frame in clip.decode(clip.streams.audio[0]):
            at = start + float(frame.pts * frame.time_base)
            if at >= end:
                break
            for resampled in resampler.resample(frame):
                resampled.pts = int(round(at * audio_out.rate))
                resampled.time_base = Fraction(1, audio_out.rate)
                for packet in audio_out.encode(resampled):
                    output.mux(packet)
