"""What ffmpeg says about an input: running it, parsing its messages, checking the result.

This module owns everything :mod:`hotfolder.convert` learns *from* ffmpeg's text, and nothing it
decides to make of it (that is :mod:`hotfolder.ffmpeg_plans`) or how conversions are run and
kept (that is :mod:`hotfolder.convert`, which re-exports the public names here):

* what kind of convertible file a name is (:func:`needs_conversion`, :func:`describe`) and the
  formats the API takes, for the messages;
* :func:`run_ffmpeg`: one ffmpeg process in its own process group, polled, killed on ``stop``
  or a timeout, its messages read back from a temporary file;
* :func:`parse_inspection`/:func:`inspect`: the streams (codec, picture size, rotation, cover
  art, sample rate, channels) and the duration that ``ffmpeg -hide_banner -i FILE`` prints;
* :func:`check`: whether an :class:`Inspection` is usable as a video or as audio;
* :func:`encoders`: the encoders a given ffmpeg binary has (``ffmpeg -encoders``).

**Parsing ffmpeg's text.** The file's own name is removed from the text before parsing, streams
are only taken after the ``Duration:`` line (the file's own tags come before it) from lines
indented like stream lines (stream tags are indented deeper), and only the first line of each
stream index counts; a hostile name or tag can at worst make the conversion itself fail, with
ffmpeg's message.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hotfolder.errors import InputError, Interrupted
from hotfolder.pairing.names import API_AUDIO_EXTS, API_VIDEO_EXTS, CONVERTIBLE_AUDIO, CONVERTIBLE_VIDEO, split_name

Kind = Literal["video", "audio"]

INSPECT_TIMEOUT_S = 60.0     # reading a header; longer means a stalled share
POLL_S = 0.1                 # how often a running ffmpeg looks at the stop event
STDERR_TAIL = 64 * 1024      # bytes of ffmpeg's messages kept for an error


class ConversionError(InputError):
    """ffmpeg cannot read or convert an input (code ``bad_input``)."""


# --- what kind of file a name is -------------------------------------------------------------

def needs_conversion(name: str) -> Kind | None:
    """"video"/"audio" for a file the API does not take but hotfolder converts, else None."""
    ext = split_name(name)[2]
    if ext in CONVERTIBLE_VIDEO:
        return "video"
    if ext in CONVERTIBLE_AUDIO:
        return "audio"
    return None


def describe(name: str) -> str:
    """What kind of file ``name`` is by its extension ("Matroska video")."""
    ext = split_name(name)[2]
    return CONVERTIBLE_VIDEO.get(ext) or CONVERTIBLE_AUDIO.get(ext) or f".{ext} file"


def _api_formats(kind: Kind) -> str:
    order = ("mp4", "mov", "webm") if kind == "video" else ("wav", "mp3", "m4a")
    assert set(order) == (API_VIDEO_EXTS if kind == "video" else API_AUDIO_EXTS)
    return f".{order[0]}, .{order[1]} or .{order[2]}"


# --- what is in a file -----------------------------------------------------------------------

@dataclass(frozen=True)
class Stream:
    """One stream as ffmpeg describes it."""

    index: int
    kind: str                  # "video", "audio", "subtitle", "data", "attachment"
    codec: str
    width: int | None = None
    height: int | None = None
    rotation: int = 0          # clockwise degrees to turn the stored picture for display: 0/90/180/270
    attached_pic: bool = False  # cover art, not a moving picture
    sample_rate: int | None = None
    channels: int | None = None


@dataclass(frozen=True)
class Inspection:
    """What ffmpeg read from an input."""

    streams: tuple[Stream, ...]
    duration_s: float | None = None

    @property
    def video(self) -> Stream | None:
        """The first moving picture (cover art does not count)."""
        return next((s for s in self.streams if s.kind == "video" and not s.attached_pic), None)

    @property
    def audio(self) -> Stream | None:
        return next((s for s in self.streams if s.kind == "audio"), None)

    def display_size(self) -> tuple[int, int]:
        """(width, height) of the picture as shown: swapped for a 90/270 rotation; (0, 0) without."""
        v = self.video
        if v is None or not v.width or not v.height:
            return 0, 0
        return (v.height, v.width) if v.rotation in (90, 270) else (v.width, v.height)


_STREAM = re.compile(r"^ {2,4}Stream #0:(\d+)(?:\[[^\]]*\])?(?:\([^)]*\))?: ([A-Za-z]+): ([A-Za-z0-9_]+)(.*)$")
_SIZE = re.compile(r"(?:^|, )(\d{1,5})x(\d{1,5})(?=[ ,]|$)")
# "displaymatrix: rotation of -90.00 degrees" (ffmpeg 4-6), "Display Matrix: rotation of ..." (7 on)
_DISPLAYMATRIX = re.compile(r"^\s+display ?matrix: rotation of (-?\d+(?:\.\d+)?) degrees", re.IGNORECASE)
_ROTATE_TAG = re.compile(r"^\s+rotate\s*: (-?\d+)\s*$")
_DURATION = re.compile(r"^ {2}Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_HZ = re.compile(r", (\d+) Hz(?:, ([^,]+))?")
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "downmix": 2, "quad": 4, "hexagonal": 6, "octagonal": 8}


def parse_inspection(text: str, path_text: str | None = None) -> Inspection | None:
    """The streams and duration in ``ffmpeg -hide_banner -i FILE``'s messages, or None if ffmpeg
    did not recognise the input at all (no ``Input #0`` section).

    ``path_text`` (the file as given to ffmpeg) is removed first, so a file name cannot pose as
    a stream. Rotation is clockwise: ffmpeg's ``displaymatrix: rotation of -90.00 degrees``
    (counter-clockwise) and the older ``rotate: 90`` tag both mean 90.
    """
    if path_text:
        text = text.replace(path_text, "FILE")
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Input #0,")), None)
    if start is None:
        return None
    streams: dict[int, dict[str, object]] = {}
    current: dict[str, object] | None = None
    duration: float | None = None
    at_streams = False   # ffmpeg prints the streams after the Duration line, the file's tags before it
    for line in lines[start + 1:]:
        if line.startswith("Input #") or line.startswith("Output #") or not line.startswith(" "):
            break   # the next input, or the closing message
        if not at_streams:
            if line.startswith("  Duration: "):
                at_streams = True
                m = _DURATION.match(line)
                if m:   # else "N/A"
                    duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
            continue
        m = _STREAM.match(line)
        if m:
            index = int(m.group(1))
            if index in streams:   # a second line claiming an index already seen: not ffmpeg's
                current = None
                continue
            current = _stream_fields(index, m.group(2).lower(), m.group(3).lower(), m.group(4))
            streams[index] = current
            continue
        if current is None:
            continue
        m = _DISPLAYMATRIX.match(line)
        if m:
            current["rotation"] = _clockwise(-float(m.group(1)))
            current["matrix"] = True
            continue
        m = _ROTATE_TAG.match(line)
        if m and not current.get("matrix"):
            current["rotation"] = _clockwise(float(m.group(1)))
    built = tuple(Stream(**{k: v for k, v in fields.items() if k != "matrix"})  # type: ignore[arg-type]
                  for _i, fields in sorted(streams.items()))
    return Inspection(built, duration)


def _stream_fields(index: int, kind: str, codec: str, rest: str) -> dict[str, object]:
    fields: dict[str, object] = {"index": index, "kind": kind, "codec": codec}
    if kind == "video":
        size = _SIZE.search(rest)
        if size:
            fields["width"], fields["height"] = int(size.group(1)), int(size.group(2))
        fields["attached_pic"] = "(attached pic)" in rest
    elif kind == "audio":
        hz = _HZ.search(rest)
        if hz:
            fields["sample_rate"] = int(hz.group(1))
            fields["channels"] = _channels(hz.group(2) or "")
    return fields


def _channels(layout: str) -> int | None:
    layout = layout.strip()
    base = layout.split("(", 1)[0]
    if base in _LAYOUT_CHANNELS:
        return _LAYOUT_CHANNELS[base]
    m = re.fullmatch(r"(\d+) channels.*", layout)
    if m:
        return int(m.group(1))
    m = re.fullmatch(r"(\d+)\.(\d+)", base)
    if m:
        return int(m.group(1)) + int(m.group(2))
    return None


def _clockwise(degrees: float) -> int:
    """Degrees rounded to a quarter turn, in 0..270."""
    return int(round(degrees / 90.0)) % 4 * 90


def inspect(path: Path, ffmpeg: str, *, name: str | None = None, stop: threading.Event | None = None) -> Inspection:
    """What ffmpeg reads in ``path``; :class:`ConversionError` if it cannot read it at all,
    :class:`Interrupted` if ``stop`` is set meanwhile."""
    name = name or path.name
    target = _file_url(path)
    try:
        _rc, text = run_ffmpeg([ffmpeg, "-hide_banner", "-nostdin", "-i", target], what=f"reading {name}",
                               stop=stop, timeout=INSPECT_TIMEOUT_S, head=True)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"ffmpeg took more than {INSPECT_TIMEOUT_S:g} s to read the start of {name}: is it "
                              "on a share that stalls? Drop it again once it is readable", path=name) from exc
    info = parse_inspection(text, target)
    if info is None:
        reason = _last_lines(text.replace(target, name), 1) or "it is not a media file it knows"
        kind = needs_conversion(name) or "video"
        raise ConversionError(f"{name} cannot be read as {describe(name)}: ffmpeg says \"{reason}\". Re-export "
                              f"it, or export it as {_api_formats(kind)}, which the API takes", path=name)
    return info


def run_ffmpeg(args: list[str], *, what: str, stop: threading.Event | None = None, timeout: float | None = None,
               head: bool = False) -> tuple[int, str]:
    """Run ffmpeg and return its exit code and messages (the first, with ``head``, or else the
    last :data:`STDERR_TAIL` bytes). It runs in its own process group (a terminal's Ctrl-C
    reaches the daemon, which decides), and the group is killed when ``stop`` is set
    (:class:`Interrupted`), after ``timeout`` seconds (``subprocess.TimeoutExpired``) or on
    any other way out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with tempfile.TemporaryFile() as err:   # a file, not a pipe: ffmpeg never blocks on a full pipe
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        try:
            while True:
                try:
                    rc = proc.wait(timeout=POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    if stop is not None and stop.is_set():
                        raise Interrupted(f"stopped while {what}") from None
                    if deadline is not None and time.monotonic() > deadline:
                        raise subprocess.TimeoutExpired(args, timeout or 0.0) from None
        finally:
            if proc.returncode is None:
                _kill(proc)
        size = err.seek(0, os.SEEK_END)
        err.seek(0 if head else max(0, size - STDERR_TAIL))
        return rc, err.read(STDERR_TAIL if not head else 4 * STDERR_TAIL).decode("utf-8", errors="replace")


def check(info: Inspection, kind: Kind, name: str) -> None:
    """Raise :class:`ConversionError` unless ``info`` is usable as a ``kind``."""
    if kind == "video":
        video = info.video
        if video is None:
            what = "only sound" if info.audio is not None else "no moving picture"
            raise ConversionError(f"{name} has {what}: it is not a video. Export the clip itself as "
                                  f"{_api_formats('video')}", path=name)
        if not video.width or not video.height:
            raise ConversionError(f"{name}: ffmpeg cannot tell the picture size of its {video.codec} video; "
                                  f"re-export it as {_api_formats('video')}", path=name)
    elif info.audio is None:
        raise ConversionError(f"{name} has no sound in it; export the speech as {_api_formats('audio')}",
                              path=name)


# --- what this ffmpeg can encode -------------------------------------------------------------

_ENCODERS: dict[str, frozenset[str]] = {}
_ENCODERS_LOCK = threading.Lock()


def encoders(ffmpeg: str) -> frozenset[str]:
    """The encoders this ffmpeg has (``ffmpeg -encoders``), remembered per binary."""
    with _ENCODERS_LOCK:
        known = _ENCODERS.get(ffmpeg)
    if known is not None:
        return known
    try:
        done = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-encoders"], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=INSPECT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    found = frozenset(m.group(1) for m in re.finditer(r"^ [VAS.][F.][S.][X.][B.][D.] (\S+)",
                                                        done.stdout.decode("utf-8", errors="replace"), re.M))
    if found:
        with _ENCODERS_LOCK:
            _ENCODERS[ffmpeg] = found
    return found


# --- internals ------------------------------------------------------------------------------

def _file_url(path: Path) -> str:
    """``path`` for ffmpeg's command line: absolute, with the ``file:`` protocol, so no name
    (``-x.mkv``, ``http:a.mkv``) is taken for an option or another protocol."""
    return "file:" + os.path.abspath(path)


def _last_lines(text: str, n: int) -> str:
    """ffmpeg's last ``n`` messages on one line, without their ``[component @ 0x...]`` prefixes."""
    lines = [re.sub(r"^\[[^\]]* @ 0x[0-9a-f]+\] ", "", line.strip()) for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if line != "At least one output file must be specified"]
    return " / ".join(lines[-n:])


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


__all__ = [
    "INSPECT_TIMEOUT_S", "POLL_S", "STDERR_TAIL", "ConversionError", "Inspection", "Kind", "Stream", "check",
    "describe", "encoders", "inspect", "needs_conversion", "parse_inspection", "run_ffmpeg",
]
