"""Local conversion of the media formats the API does not take, with ffmpeg.

The Chanjing API takes video ``.mp4/.mov/.webm`` and audio ``.wav/.mp3/.m4a``. The other common
formats that :mod:`hotfolder.pairing.names` recognises (``CONVERTIBLE_VIDEO``/``CONVERTIBLE_AUDIO``)
are converted here, in the upload stage, and the converted file is what is uploaded. The
original is never modified or moved by this module: it stays where it is, and it is what ends up
in ``archive/`` or ``failed/``.

**Where ffmpeg comes from.** ``ffmpeg`` on ``PATH``, else the static binary of the optional extra
``pip install 'hotfolder[ffmpeg]'`` (imageio-ffmpeg). Without either, a job that needs a
conversion fails at intake with :func:`install_hint` in its message, before anything is
uploaded. ffprobe is not needed (imageio-ffmpeg ships only ffmpeg): :func:`inspect` reads what
``ffmpeg -hide_banner -i FILE`` prints about the input.

**What it makes** (:func:`plans`, first choice first; a failed remux falls back to a transcode):

* video with H.264/HEVC picture and AAC/MP3 sound (or none) → MP4, remuxed (``-c copy``,
  ``-movflags +faststart``): no quality loss, seconds even for big files;
* video with H.264/HEVC picture and other sound (AMR in 3GP, Vorbis/Opus/FLAC/AC-3 in MKV...) →
  MP4 with the picture copied and only the sound encoded to AAC 128 kb/s;
* video with VP8/VP9 picture and Opus/Vorbis sound (or none) → WebM, remuxed;
* any other video (MPEG-4 Part 2 AVI, MPEG-2, WMV, FLV1, H.263...) → MP4 transcoded:
  ``libx264 -preset veryfast -crf 20 -pix_fmt yuv420p`` (visually transparent at a sane size and
  speed), interlaced frames deinterlaced (``yadif=deint=interlaced``), odd sizes rounded down to
  even (yuv420p needs it), a rotation tag applied to the pixels; sound AAC 128 kb/s (down-mixed
  to stereo above two channels);
* audio in AAC (raw ``.aac``) → M4A remuxed, MP3 → MP3 remuxed;
* any other audio (FLAC, Ogg Vorbis/Opus, WMA, AMR, AIFF) → WAV, 16-bit PCM, at the source's
  sample rate (resampled to 48 kHz only above it), mono stays mono (down-mixed to stereo above
  two channels). Why WAV and not a small M4A: most of these sources are lossy already, and a
  second lossy encode degrades exactly the speech the lip-sync model listens to; PCM is an exact
  decode, keeps the duration to the sample (AAC adds priming and padding), needs no optional
  encoder, and the API takes it. The price is size (about 5.6 MB a minute at 48 kHz mono), which
  is small next to the video it drives.

**Checkpoint.** The output is ``<work>/<sha256 of the original>.<ext>``, written under a
temporary name (``.<sha256>.<pid>.<random>.tmp``) and renamed once ffmpeg has finished and the
result checks out, so the final name only ever holds a complete conversion: after a crash, a
finished one is reused and a half-written temporary one is removed (by the next
:class:`Converter` of another process) and made again.

**Running it.** :class:`Converter` bounds how many conversions run at once (``slots``), runs
ffmpeg in its own process group and polls it, and kills the group when the ``stop`` event is
set (SIGTERM), raising :class:`~hotfolder.errors.Interrupted`.

**Parsing ffmpeg's text.** The file's own name is removed from the text before parsing, streams
are only taken after the ``Duration:`` line (the file's own tags come before it) from lines
indented like stream lines (stream tags are indented deeper), and only the first line of each
stream index counts; a hostile name or tag can at worst make the conversion itself fail, with
ffmpeg's message.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from hotfolder.errors import InputError, Interrupted
from hotfolder.pairing.names import (API_AUDIO_EXTS, API_VIDEO_EXTS, CONVERTIBLE_AUDIO, CONVERTIBLE_VIDEO,
                                     split_name)

if TYPE_CHECKING:
    from hotfolder.config import Settings

Kind = Literal["video", "audio"]

INSPECT_TIMEOUT_S = 60.0     # reading a header; longer means a stalled share
POLL_S = 0.1                 # how often a running conversion looks at the stop event
STDERR_TAIL = 64 * 1024      # bytes of ffmpeg's messages kept for an error
CACHE_MARK = ":converted"    # upload-cache service suffix: the converted bytes of an original
VIDEO_OUTPUT_EXTS = ("mp4", "webm")
AUDIO_OUTPUT_EXTS = ("wav", "m4a", "mp3")
MUXER = {"mp4": "mp4", "webm": "webm", "m4a": "mp4", "mp3": "mp3", "wav": "wav"}

REMUX_VIDEO_MP4 = frozenset({"h264", "hevc"})
REMUX_AUDIO_MP4 = frozenset({"aac", "mp3"})
REMUX_VIDEO_WEBM = frozenset({"vp8", "vp9"})
REMUX_AUDIO_WEBM = frozenset({"opus", "vorbis"})
# The transcode settings (see the module docstring and the README).
X264 = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p")
VIDEO_FILTER = "yadif=deint=interlaced,scale=trunc(iw/2)*2:trunc(ih/2)*2"
AAC = ("-c:a", "aac", "-b:a", "128k")
MAX_WAV_RATE = 48000


# --- where ffmpeg is -------------------------------------------------------------------------

def find_ffmpeg() -> str | None:
    """The ffmpeg to use: ``ffmpeg`` on PATH, else imageio-ffmpeg's bundled binary (the
    ``hotfolder[ffmpeg]`` extra), else None. Looked up each time: installing ffmpeg needs no
    restart."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg  # type: ignore[import-not-found,import-untyped,unused-ignore]

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:   # not installed, or installed without a binary for this platform
        return None
    return str(exe) if exe and os.access(exe, os.X_OK) else None


def install_hint() -> str:
    """How to get an ffmpeg hotfolder can use."""
    return "apt-get install ffmpeg (or your system's package), or pip install 'hotfolder[ffmpeg]'"


def work_dir(settings: Settings) -> Path:
    """Where conversions are kept until their job ends: ``work/`` beside the ledger."""
    return settings.ledger_path.parent / "work"


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


def missing_ffmpeg_message(name: str) -> str:
    """The intake failure of a file that needs converting when no ffmpeg is there."""
    return (f"{name} is {describe(name)}, which the Chanjing API does not take (it takes video .mp4, .mov, "
            f".webm and audio .wav, .mp3, .m4a); hotfolder converts it with ffmpeg, which is not "
            f"installed: {install_hint()}")


def conversion_problem(name: str) -> str | None:
    """Why ``name`` cannot be taken as it is *now* (it needs a conversion and there is no ffmpeg),
    or None (no conversion needed, or ffmpeg is there). For `explain` and the dashboard."""
    if needs_conversion(name) is None or find_ffmpeg() is not None:
        return None
    return missing_ffmpeg_message(name)


class FfmpegMissing(InputError):
    """A file needs converting and no ffmpeg is installed."""


class ConversionError(InputError):
    """ffmpeg cannot read or convert an input (code ``bad_input``)."""


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


# --- what to make of it ----------------------------------------------------------------------

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


def missing_encoders(ffmpeg: str, plan: Plan) -> list[str]:
    have = encoders(ffmpeg)
    return [e for e in plan.encoders if e not in have]


def _encoder_error(ffmpeg: str, missing: Sequence[str], name: str) -> ConversionError:
    return ConversionError(
        f"{name} needs re-encoding, and the ffmpeg at {ffmpeg} has no {' or '.join(missing)} encoder: install "
        f"a full ffmpeg ({install_hint()}), or export the file as {_api_formats(needs_conversion(name) or 'video')}",
        path=name)


def validate(path: Path, kind: Kind, *, name: str | None = None) -> Inspection:
    """Intake's check of an input that needs converting: ffmpeg is there, reads it, finds the
    right streams and can make something the API takes. Raises :class:`FfmpegMissing` or
    :class:`ConversionError` (an unreadable file too); ``FileNotFoundError`` passes through."""
    name = name or path.name
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        raise FfmpegMissing(missing_ffmpeg_message(name), path=name)
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise   # vanished: the caller knows what that means
    except OSError as exc:
        raise ConversionError(f"cannot read {name}: {exc.strerror or exc}; let the hotfolder user read it",
                              path=name) from exc
    info = inspect(path, ffmpeg, name=name)
    check(info, kind, name)
    usable = [p for p in plans(kind, info) if not missing_encoders(ffmpeg, p)]
    if not usable:
        raise _encoder_error(ffmpeg, missing_encoders(ffmpeg, plans(kind, info)[-1]), name)
    return info


# --- doing it --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Converted:
    """A finished conversion: the file to upload in place of the original."""

    path: Path
    ext: str
    method: str          # remux / transcode; "reused" when a finished checkpoint was found
    video: str | None
    audio: str | None
    seconds: float
    reused: bool
    bytes: int

    def detail(self) -> dict[str, object]:
        return {"method": self.method, "video": self.video, "audio": self.audio,
                "seconds": round(self.seconds, 3), "reused": self.reused, "bytes": self.bytes}


class Converter:
    """Converts inputs into ``work_dir``, at most ``slots`` at a time, until ``stop`` is set.

    Safe to share between threads; the same input (by hash) is converted by one thread at a time
    and then reused. Creating one removes the temporary files other processes left behind.
    """

    def __init__(self, work_dir: Path, slots: int, stop: threading.Event, *, ffmpeg: str | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.stop = stop
        self.ffmpeg = ffmpeg          # None: find_ffmpeg() at each conversion
        self.slots = threading.BoundedSemaphore(max(1, slots))
        self.runs = 0                 # ffmpeg conversions started (not inspections)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.remove_stale_temps()

    def set_slots(self, slots: int) -> None:
        """New concurrency for the conversions that start from now on (a reloaded config)."""
        self.slots = threading.BoundedSemaphore(max(1, slots))

    # -- the work folder ---------------------------------------------------------------------
    def finished(self, sha256: str, kind: Kind) -> Path | None:
        """The finished conversion of this content, if one is there (a checkpoint)."""
        for ext in (VIDEO_OUTPUT_EXTS if kind == "video" else AUDIO_OUTPUT_EXTS):
            path = self.work_dir / f"{sha256}.{ext}"
            if path.is_file():
                return path
        return None

    def remove_stale_temps(self) -> int:
        """Remove temporary outputs of other processes (a crash, a SIGKILL): never complete."""
        if not self.work_dir.is_dir():
            return 0
        removed = 0
        mine = str(os.getpid())
        for tmp in self.work_dir.glob(".*.tmp"):
            parts = tmp.name.split(".")
            if len(parts) >= 5 and parts[2] == mine:
                continue   # another Converter of this process may be writing it
            try:
                tmp.unlink()
                removed += 1
            except OSError:
                pass
        return removed

    # -- converting --------------------------------------------------------------------------
    def convert(self, source: Path, sha256: str, kind: Kind, *, name: str | None = None) -> Converted:
        """The converted form of ``source`` (whose content hashes to ``sha256``): reused if a
        finished one is in the work folder, else made now.

        Raises :class:`Interrupted` when ``stop`` is set meanwhile (the temporary output is
        removed), :class:`FfmpegMissing`/:class:`ConversionError` (``InputError``: the job
        fails) and ``OSError`` (a full or unwritable work folder: try again later).
        """
        name = name or source.name
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        with self._guard:
            lock = self._locks.setdefault(f"{sha256}:{kind}", threading.Lock())
        with lock:
            done = self.finished(sha256, kind)
            if done is not None:
                return Converted(done, done.suffix[1:], "reused", None, None, 0.0, True, done.stat().st_size)
            ffmpeg = self.ffmpeg or find_ffmpeg()
            if ffmpeg is None:
                raise FfmpegMissing(missing_ffmpeg_message(name), path=name)
            info = inspect(source, ffmpeg, name=name, stop=self.stop)
            check(info, kind, name)
            slots = self.slots   # the one to release, even if set_slots replaces it meanwhile
            self._acquire(slots, name)
            try:
                return self._convert(source, sha256, kind, name, ffmpeg, info)
            finally:
                slots.release()

    def _acquire(self, slots: threading.BoundedSemaphore, name: str) -> None:
        while not slots.acquire(timeout=POLL_S):
            if self.stop.is_set():
                raise Interrupted(f"stopped while {name} waited to be converted")
        if self.stop.is_set():
            slots.release()
            raise Interrupted(f"stopped before converting {name}")

    def _convert(self, source: Path, sha256: str, kind: Kind, name: str, ffmpeg: str,
                 info: Inspection) -> Converted:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        failures: list[str] = []
        candidates = plans(kind, info)
        for plan in candidates:
            missing = missing_encoders(ffmpeg, plan)
            if missing:
                failures.append(f"{plan.method}: no {' or '.join(missing)} encoder")
                continue
            started = time.monotonic()
            tmp = self.work_dir / f".{sha256}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
            try:
                rc, messages = self._run([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                                          "-i", _file_url(source), *plan.args, "-f", MUXER[plan.ext],
                                          _file_url(tmp)], name)
                messages = messages.replace(_file_url(source), name).replace(_file_url(tmp), "the output")
                if rc == 0:
                    problem = _output_problem(tmp, plan)
                    if problem is None:
                        final = self.work_dir / f"{sha256}.{plan.ext}"
                        _fsync(tmp)
                        os.replace(tmp, final)
                        return Converted(final, plan.ext, plan.method, plan.video, plan.audio,
                                         time.monotonic() - started, False, final.stat().st_size)
                    messages = problem
                if "No space left on device" in messages:
                    raise OSError(28, f"no space left in {self.work_dir} while converting {name}")
                failures.append(f"{plan.method}: {_last_lines(messages, 3) or f'ffmpeg exited with {rc}'}")
            finally:
                _unlink(tmp)
        raise ConversionError(
            f"ffmpeg could not convert {name} ({describe(name)}): {'; '.join(failures)}. Re-export it, or export "
            f"it as {_api_formats(kind)}, which the API takes", path=name)

    def _run(self, args: list[str], name: str) -> tuple[int, str]:
        """Run one ffmpeg conversion, killing it (its whole process group) if ``stop`` is set."""
        with self._guard:
            self.runs += 1
        return run_ffmpeg(args, what=f"converting {name}", stop=self.stop)

    # -- cleaning up -------------------------------------------------------------------------
    def discard(self, sha256: str) -> list[Path]:
        """Remove the finished conversions of this content (its job ended, or it is uploaded)."""
        return remove_work_files(self.work_dir, [sha256])


def remove_work_files(work: Path, sha256s: Sequence[str]) -> list[Path]:
    """Remove the finished conversions of these contents from ``work``; returns what went."""
    removed: list[Path] = []
    if not work.is_dir():
        return removed
    for sha in sha256s:
        if not re.fullmatch(r"[0-9a-f]{64}", sha or ""):
            continue
        for ext in VIDEO_OUTPUT_EXTS + AUDIO_OUTPUT_EXTS:
            path = work / f"{sha}.{ext}"
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed


# --- internals ------------------------------------------------------------------------------

def _file_url(path: Path) -> str:
    """``path`` for ffmpeg's command line: absolute, with the ``file:`` protocol, so no name
    (``-x.mkv``, ``http:a.mkv``) is taken for an option or another protocol."""
    return "file:" + os.path.abspath(path)


def _output_problem(tmp: Path, plan: Plan) -> str | None:
    """Why the output of a conversion that ffmpeg says succeeded is not usable, or None."""
    try:
        size = tmp.stat().st_size
    except OSError as exc:
        return f"the output is missing ({exc.strerror})"
    if size == 0:
        return "the output is empty"
    if plan.ext in ("mp4", "webm"):
        from hotfolder import media

        try:
            media.probe_path(tmp)
        except InputError as exc:
            return f"the output does not read back as a video ({exc})"
    return None


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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


__all__ = [
    "CACHE_MARK", "ConversionError", "Converted", "Converter", "FfmpegMissing", "Inspection", "Plan", "Stream",
    "check", "conversion_problem", "describe", "encoders", "find_ffmpeg", "inspect", "install_hint",
    "missing_ffmpeg_message", "needs_conversion", "parse_inspection", "plans", "remove_work_files", "run_ffmpeg",
    "validate", "work_dir",
]
