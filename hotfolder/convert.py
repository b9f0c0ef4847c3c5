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

**Where the parts are.** This module finds ffmpeg, validates an input at intake, runs and keeps
the conversions (:class:`Converter`, the work folder). Reading ffmpeg's messages (streams,
codecs, size, rotation, duration; :func:`check`) is :mod:`hotfolder.ffmpeg_probe`; the plans
(remux or transcode, ffmpeg's arguments) are :mod:`hotfolder.ffmpeg_plans`. Their public names
are re-exported here, so ``from hotfolder.convert import ...`` keeps working.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hotfolder.errors import InputError, Interrupted
# The public API of hotfolder.convert predates the split: the names that moved are re-exported.
# validate and Converter call plans/inspect/check through this module's globals, so a test that
# patches ``convert.plans`` (or ``convert.find_ffmpeg``) reaches them.
from hotfolder.ffmpeg_plans import MUXER, Plan, missing_encoders, plans
from hotfolder.ffmpeg_plans import (AAC, MAX_WAV_RATE, REMUX_AUDIO_MP4, REMUX_AUDIO_WEBM,  # noqa: F401 (re-exported)
                                    REMUX_VIDEO_MP4, REMUX_VIDEO_WEBM, VIDEO_FILTER, X264)
from hotfolder.ffmpeg_probe import (POLL_S, ConversionError, Inspection, Kind, Stream, _api_formats, _file_url,
                                    _last_lines, check, describe, encoders, inspect, needs_conversion,
                                    parse_inspection, run_ffmpeg)
from hotfolder.ffmpeg_probe import INSPECT_TIMEOUT_S, STDERR_TAIL  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from hotfolder.config import Settings

CACHE_MARK = ":converted"    # upload-cache service suffix: the converted bytes of an original
VIDEO_OUTPUT_EXTS = ("mp4", "webm")
AUDIO_OUTPUT_EXTS = ("wav", "m4a", "mp3")


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


# --- checking an input at intake -------------------------------------------------------------

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
