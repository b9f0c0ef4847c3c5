"""What to make of an input ffmpeg has read: the remux/transcode choice and ffmpeg's arguments.

This module owns the conversion plans of :mod:`hotfolder.convert` (which re-exports its public
names): given an :class:`~hotfolder.ffmpeg_probe.Inspection` that passed
:func:`~hotfolder.ffmpeg_probe.check`, :func:`plans` lists the ways to convert it, best first,
each a :class:`Plan` with the output extension, what happens to each stream, the output options
for ffmpeg's command line (:data:`MUXER` names the output format) and the encoders it needs
(:func:`missing_encoders`). The choices and the reasons for them are described in
:mod:`hotfolder.convert`'s docstring. It runs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from hotfolder.ffmpeg_probe import Inspection, Kind, Stream, encoders

MUXER = {"mp4": "mp4", "webm": "webm", "m4a": "mp4", "mp3": "mp3", "wav": "wav"}

REMUX_VIDEO_MP4 = frozenset({"h264", "hevc"})
REMUX_AUDIO_MP4 = frozenset({"aac", "mp3"})
REMUX_VIDEO_WEBM = frozenset({"vp8", "vp9"})
REMUX_AUDIO_WEBM = frozenset({"opus", "vorbis"})
# The transcode settings (see hotfolder.convert's docstring and the README).
X264 = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p")
VIDEO_FILTER = "yadif=deint=interlaced,scale=trunc(iw/2)*2:trunc(ih/2)*2"
AAC = ("-c:a", "aac", "-b:a", "128k")
MAX_WAV_RATE = 48000


@dataclass(frozen=True)
class Plan:
    """One way to convert an input: ffmpeg's output options and what it does to each stream."""

    ext: str                       # of the output: mp4, webm, wav, m4a, mp3
    method: str                    # "remux" (picture/sound copied) or "transcode"
    video: str | None              # "copy", "libx264", or None (audio output)
    audio: str | None              # "copy", "aac", "pcm_s16le", or None (no sound)
    args: tuple[str, ...]          # between the input and the output file
    encoders: tuple[str, ...] = ()  # what this ffmpeg must be able to encode


def plans(kind: Kind, info: Inspection) -> list[Plan]:
    """The ways to convert ``info`` (checked with :func:`check`), best first; the last one is a
    full transcode, the fallback when a remux fails."""
    if kind == "audio":
        return _audio_plans(info)
    video = info.video
    assert video is not None
    audio = info.audio
    maps = ("-map", f"0:{video.index}") + (("-map", f"0:{audio.index}") if audio else ())
    out: list[Plan] = []
    sound_copy = audio is None or audio.codec in REMUX_AUDIO_MP4
    if video.codec in REMUX_VIDEO_MP4:
        tag = ("-tag:v", "hvc1") if video.codec == "hevc" else ()   # what Apple players expect
        if sound_copy:
            out.append(Plan("mp4", "remux", "copy", "copy" if audio else None,
                            maps + ("-c", "copy") + tag + ("-movflags", "+faststart")))
        else:
            out.append(Plan("mp4", "remux", "copy", "aac",
                            maps + ("-c:v", "copy") + tag + AAC + _downmix(audio) + ("-movflags", "+faststart"),
                            ("aac",)))
    elif video.codec in REMUX_VIDEO_WEBM and (audio is None or audio.codec in REMUX_AUDIO_WEBM):
        out.append(Plan("webm", "remux", "copy", "copy" if audio else None, maps + ("-c", "copy")))
    sound = AAC + _downmix(audio) if audio else ()
    out.append(Plan("mp4", "transcode", "libx264", "aac" if audio else None,
                    maps + ("-vf", VIDEO_FILTER) + X264 + sound + ("-movflags", "+faststart"),
                    ("libx264", "aac") if audio else ("libx264",)))
    return out


def _audio_plans(info: Inspection) -> list[Plan]:
    audio = info.audio
    assert audio is not None
    maps = ("-vn", "-map", f"0:{audio.index}")
    out: list[Plan] = []
    if audio.codec == "aac":
        out.append(Plan("m4a", "remux", None, "copy", maps + ("-c:a", "copy", "-movflags", "+faststart")))
    elif audio.codec == "mp3":
        out.append(Plan("mp3", "remux", None, "copy", maps + ("-c:a", "copy")))
    rate = ("-ar", str(MAX_WAV_RATE)) if (audio.sample_rate or 0) > MAX_WAV_RATE else ()
    out.append(Plan("wav", "transcode", None, "pcm_s16le",
                    maps + ("-c:a", "pcm_s16le") + rate + _downmix(audio), ("pcm_s16le",)))
    return out


def _downmix(audio: Stream | None) -> tuple[str, ...]:
    return ("-ac", "2") if audio is not None and (audio.channels or 0) > 2 else ()


def missing_encoders(ffmpeg: str, plan: Plan) -> list[str]:
    have = encoders(ffmpeg)
    return [e for e in plan.encoders if e not in have]


__all__ = [
    "AAC", "MAX_WAV_RATE", "MUXER", "REMUX_AUDIO_MP4", "REMUX_AUDIO_WEBM", "REMUX_VIDEO_MP4", "REMUX_VIDEO_WEBM",
    "VIDEO_FILTER", "X264", "Plan", "missing_encoders", "plans",
]
