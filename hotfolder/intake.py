"""Intake: turns settled, paired files in the inbox into jobs in the ledger.

The watcher only says "look again"; this module looks: it walks the inbox (never following
links), feeds sizes and mtimes to the pure settle tracker, pairs names with the pure rules of
:mod:`hotfolder.pairing`, validates a ready group (video header, script, overrides) and records
a job. A group that can never work fails here, before anything is uploaded, so it costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotfolder import media, pairing
from hotfolder.config import Settings
from hotfolder.errors import InputError, Interrupted
from hotfolder.ledger import Ledger
from hotfolder.log import get_logger
from hotfolder import convert
from hotfolder.states import State

log = get_logger("hotfolder.intake")
HASH_CHUNK = 1 << 20


@dataclass
class ScanResult:
    """What one pass over the inbox found."""

    inbox_ok: bool = True
    created: list[int] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)   # files still changing (inbox-relative)
    files: list[str] = field(default_factory=list)       # every takeable file seen
    next_check: float | None = None                      # when an unsettled file could settle


def sha256_file(path: Path, stop: threading.Event | None = None) -> str:
    """Hex SHA-256 of a file, read in chunks; raises Interrupted if ``stop`` is set meanwhile
    (hashing a multi-GB file on a slow share must not hold up a SIGTERM)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            if stop is not None and stop.is_set():
                raise Interrupted(f"stopped while hashing {path.name}")
            digest.update(chunk)
    return digest.hexdigest()


def file_facts(path: Path, stop: threading.Event | None = None) -> dict[str, Any]:
    """Size, mtime and hash of an input, as recorded in the ledger."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path, stop)}


def build_params(settings: Settings, files: dict[str, Path], name: str) -> dict[str, Any]:
    """Validate a job's inputs and return the lip-sync parameters, or raise InputError.

    Reads only headers and the small text/JSON sidecars: nothing is uploaded yet. A video or
    audio the API does not take (``.mkv``, ``.flac``...) is read with ffmpeg instead (it is
    converted in the upload stage); without ffmpeg it fails here, saying how to install it.
    """
    video = files["video"]
    converted: dict[str, convert.Inspection] = {}
    info: media.VideoInfo | convert.Inspection
    try:
        for role in ("video", "audio"):
            kind = convert.needs_conversion(files[role].name) if role in files else None
            if kind is not None:
                converted[role] = convert.validate(files[role], kind,
                                                   name=name if role == "video" else files[role].name)
        if "video" in converted:
            info = converted["video"]
        else:
            size = video.stat().st_size
            with open(video, "rb") as fh:
                info = media.probe_video(fh, size, name=name)
    except FileNotFoundError:
        raise   # vanished (taken by a job that just ended, or removed): not an input error
    except PermissionError as exc:
        raise InputError(f"cannot read {name}: permission denied; let the hotfolder user read it",
                         path=name) from exc
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}", path=name) from exc
    overrides: dict[str, Any] = {}
    if "overrides" in files:
        overrides = pairing.validate_overrides(_read_small(files["overrides"], name), files["overrides"].name)
    # Precedence: <stem>.json > the preset of the job's top folder > [lipsync].
    _preset, defaults = settings.preset_for(name.rpartition("/")[0])
    params: dict[str, Any] = {**defaults, **overrides}
    if "screen_width" not in params or "screen_height" not in params:
        width, height = info.display_size() if isinstance(info, convert.Inspection) else media.display_size(info)
        params.setdefault("screen_width", width or 1080)
        params.setdefault("screen_height", height or 1920)
    if "text" in files:
        params["text"] = pairing.decode_script(_read_small(files["text"], name), files["text"].name)
        if not params.get("audio_man_id"):
            raise InputError(
                f"{name}: no voice to speak {files['text'].name} with: set [lipsync] audio_man_id in the "
                "config (or in the folder's [presets.NAME]), or \"audio_man_id\" in a <stem>.json sidecar "
                "(`hotfolder voices` lists them)",
                path=name)
    elif "audio" not in converted:   # a converted one was read by ffmpeg above
        audio = files["audio"]
        try:
            with open(audio, "rb") as fh:
                pairing_head = fh.read(media.HEAD_BYTES)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise InputError(f"cannot read {audio.name} (for {name}): {exc.strerror}; let the hotfolder "
                             "user read it", path=audio.name) from exc
        media.sniff_audio(pairing_head, audio.suffix.lower().lstrip("."), name=audio.name)
    return params


def _read_small(path: Path, name: str, limit: int = 1 << 20) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InputError(f"cannot read {path.name} (for {name}): {exc.strerror}", path=path.name) from exc
    if len(data) > limit:
        raise InputError(f"{path.name} is larger than {limit // 1024} KiB: it cannot be a script or "
                         "overrides file; split or fix it", path=path.name)
    return data


def make_preset_folders(settings: Settings) -> None:
    """Each ``[presets.NAME]`` gets its folder in the inbox, so people see where to drop. Only in an
    inbox that is there: a missing (unmounted) inbox is never recreated empty."""
    inbox = settings.folders.inbox
    if not inbox.is_dir():
        return
    for name in settings.presets:
        try:
            (inbox / name).mkdir(exist_ok=True)
        except OSError as exc:
            log.warning("preset_folder_failed", preset=name, folder=str(inbox / name), error=str(exc))


def list_inbox(inbox: Path) -> list[tuple[str, int, int]] | None:
    """Every takeable regular file under ``inbox`` as (inbox-relative path, size, mtime_ns);
    None if the inbox is missing (unmounted or deleted), which must never be taken as "empty"."""
    if not inbox.is_dir():
        return None
    out: list[tuple[str, int, int]] = []
    for dirpath, dirnames, filenames in os.walk(inbox, followlinks=False):
        rel_dir = os.path.relpath(dirpath, inbox)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        dirnames[:] = sorted(d for d in dirnames
                             if pairing.is_ignored(f"{rel_dir}/{d}/x" if rel_dir else f"{d}/x") is None)
        for fname in sorted(filenames):
            rel = f"{rel_dir}/{fname}" if rel_dir else fname
            if pairing.is_ignored(rel) is not None:
                continue
            try:
                st = os.lstat(os.path.join(dirpath, fname))
            except OSError:
                continue   # vanished between listing and stat
            if not _is_regular(st.st_mode):
                continue   # symlinks and devices are never followed or taken
            out.append((rel, st.st_size, st.st_mtime_ns))
    return out


class Intake:
    """Scans the inbox and records jobs. One instance, driven by one thread."""

    def __init__(self, settings: Settings, ledger: Ledger, *, clock: Callable[[], float] = time.time,
                 on_failed: Callable[[int, InputError], None] | None = None,
                 stop: threading.Event | None = None, only: set[str] | None = None,
                 only_first_listing: bool = False) -> None:
        self.settings = settings
        self.ledger = ledger
        self.clock = clock
        self.tracker = pairing.SettleTracker(settings.watch.settle_seconds)
        # Called for a job recorded as failed at intake, to move its inputs (outcomes own that).
        self.on_failed = on_failed
        self.stop = stop   # long hashing yields to SIGTERM
        # `run --once`: restrict to the files present at start. An inbox missing at start (a share
        # not mounted yet) has no files to name: then the files present when it first appears.
        self.only = only
        # `run --once` found no inbox at start: take what is there when it first appears.
        self._only_at_first_listing = only_first_listing
        self._inbox_missing_logged = False

    def reconfigure(self, settings: Settings) -> None:
        """A reloaded config (settle time, lip-sync defaults) for the files taken from now on."""
        self.settings = settings
        self.tracker.settle_seconds = settings.watch.settle_seconds

    @property
    def inbox(self) -> Path:
        return self.settings.folders.inbox

    def list_inbox(self) -> list[tuple[str, int, int]] | None:
        """Every takeable regular file as (inbox-relative path, size, mtime_ns); None if the inbox
        is missing (unmounted or deleted), which must never be taken as "empty"."""
        return list_inbox(self.inbox)

    def scan(self, listing: list[tuple[str, int, int]] | None = None) -> ScanResult:
        """One pass: observe, pair, and record every group that is ready. ``listing`` (from
        :func:`list_inbox`) may be given; by the time it is used it may be stale, which is fine:
        a file that vanished meanwhile is simply gone."""
        result = ScanResult()
        if listing is None:
            listing = self.list_inbox()
        return self._scan(listing, result)

    def _scan(self, listing: list[tuple[str, int, int]] | None, result: ScanResult) -> ScanResult:
        if listing is None:
            result.inbox_ok = False
            if not self._inbox_missing_logged:
                log.warning("inbox_missing", inbox=str(self.inbox),
                            hint="is the share mounted? intake waits and resumes when it is back")
                self._inbox_missing_logged = True
            return result
        if self._inbox_missing_logged:
            log.info("inbox_back", inbox=str(self.inbox))
            self._inbox_missing_logged = False
        if self._only_at_first_listing:
            self._only_at_first_listing = False
            self.only = {rel for rel, _size, _mtime in listing}
        now = self.clock()
        if self.only is not None:
            listing = [entry for entry in listing if entry[0] in self.only]
        present = set()
        for rel, size, mtime_ns in listing:
            self.tracker.observe(rel, size, mtime_ns, now)
            present.add(rel)
        self.tracker.forget_missing(present)
        result.files = sorted(present)
        settled = {rel for rel in present if self.tracker.settled(rel, now)}
        result.unsettled = sorted(present - settled)
        if result.unsettled:
            result.next_check = now + min(self.tracker.remaining(rel, now) for rel in result.unsettled)
        self._cancel_vanished_waiting(present)
        for group in pairing.pair(present).groups:
            members = group_members(group)
            if not all(m in settled for m in members):
                continue
            job_id = self._take(group)
            if job_id is not None:
                result.created.append(job_id)
        return result

    def _cancel_vanished_waiting(self, present: set[str]) -> None:
        for job in self.ledger.jobs([State.WAITING]):
            if job.name not in present and self.only is None:
                if self.ledger.advance(job.id, State.WAITING, State.CANCELLED, event="video_removed",
                                       error="the video was removed from the inbox before its sidecar came"):
                    log.info("waiting_job_dropped", job_id=job.id, job=job.name)

    def _take(self, group: Any) -> int | None:
        video_rel: str | None = getattr(group, "video", None)
        if video_rel is None:
            return None   # a sidecar alone waits for its video
        existing = self.ledger.open_job_for(video_rel)
        rel_dir, _, fname = video_rel.rpartition("/")
        stem = Path(fname).stem
        if isinstance(group, pairing.Waiting):
            if existing is None:
                job_id = self.ledger.add_job(name=video_rel, rel_dir=rel_dir, stem=stem, state=State.WAITING,
                                             files={"video": str(self.inbox / video_rel)}, inputs={}, params={})
                log.info("job_waiting", job_id=job_id, job=video_rel, reason=group.reason)
                return job_id
            return None
        if existing is not None and existing.state != State.WAITING:
            return None   # already being driven
        files = {"video": self.inbox / video_rel}
        error: InputError | None = None
        params: dict[str, Any] = {}
        inputs: dict[str, Any] = {}
        if isinstance(group, pairing.Ambiguous):
            for rel in group.files:
                if rel != video_rel:
                    files[_role(rel)] = self.inbox / rel
            error = InputError(group.reason, path=video_rel)
        else:
            files[group.driver_kind] = self.inbox / group.driver
            if group.overrides:
                files["overrides"] = self.inbox / group.overrides
            try:
                params = build_params(self.settings, files, video_rel)
                inputs = {role: file_facts(path, self.stop) for role, path in files.items()}
            except Interrupted:
                return None   # shutting down: the next start takes it
            except InputError as exc:
                error = exc
            except FileNotFoundError:
                return None   # vanished while we looked: the next scan sees the truth
            except OSError as exc:
                error = InputError(f"cannot read the files of {video_rel}: {exc.strerror}; let the hotfolder "
                                   "user read them", path=video_rel)
        str_files = {role: str(path) for role, path in files.items()}
        if existing is not None:
            # The sidecar arrived for a waiting job.
            if error is None:
                self.ledger.advance(existing.id, State.WAITING, State.QUEUED, event="sidecar_arrived",
                                    files=str_files, inputs=inputs, params=params)
                log.info("job_queued", job_id=existing.id, job=video_rel)
                return existing.id
            self.ledger.update(existing.id, State.WAITING, files=str_files)
            job_id = existing.id
        else:
            job_id = self.ledger.add_job(name=video_rel, rel_dir=rel_dir, stem=stem,
                                         state=State.QUEUED, files=str_files, inputs=inputs, params=params)
            if error is None:
                log.info("job_queued", job_id=job_id, job=video_rel,
                         driver=group.driver_kind, size=inputs["video"]["size"])
                return job_id
        log.warning("job_bad_input", job_id=job_id, job=video_rel, error=str(error))
        if self.on_failed is not None:
            self.on_failed(job_id, error)
        return job_id


def group_members(group: Any) -> list[str]:
    """Every inbox-relative file of a pairing group."""
    names = [getattr(group, a, None) for a in ("video", "driver", "overrides")]
    names += list(getattr(group, "files", []) or [])
    return sorted({n for n in names if n})


def _role(rel: str) -> str:
    kind = pairing.classify(rel)
    return {"text": "text", "audio": "audio", "overrides": "overrides"}.get(kind, f"extra:{Path(rel).name}")


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)
