"""The dashboard's upload writer: a video and its script or audio land in the inbox as a pair.

Intake must never see half a file, nor half a pair, and nothing already in the inbox may be
overwritten or paired by accident:

1. The target folder is the inbox itself or a preset's folder (``inbox/<preset>``), and only a
   preset of the config: a name from the browser never becomes a path of its own.
2. File names are cleaned (:func:`clean_name`): only the last path component, NFC, no control or
   Windows-reserved characters, no leading dots, at most 200 bytes, not a name intake ignores;
   the video must be a format the API takes, the driver a ``.txt`` or API audio file.
3. Each file streams to a hidden temporary name in the target folder
   (``.hotfolder-upload-<random>-<role>``, created with ``O_EXCL``): hidden names are never taken
   (:func:`hotfolder.pairing.is_ignored`), and being in the same folder makes the final step a
   link within one filesystem. Nothing is held in memory beyond one chunk.
4. Commit: both files are fsynced, a stem is chosen that no input file in the folder has yet
   (``clip``, ``clip-2``…, so an upload never pairs with a stray ``clip.txt``), the driver is
   hard-linked to its final name first, then the video (``os.link`` refuses to overwrite; a
   name taken meanwhile makes it try the next stem), then the temporary names are removed and
   the folder is fsynced. The driver alone is an orphan intake leaves alone; the pair is
   complete the instant the video appears.

Every function here blocks (disk): the listener runs them on its file thread.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
import unicodedata
from pathlib import Path
from typing import Any

from hotfolder import pairing
from hotfolder.config import Settings
from hotfolder.fsutil import fsync_dir
from hotfolder.pairing.names import API_AUDIO_EXTS, API_VIDEO_EXTS, AUDIO_EXTS, TEXT_EXTS, VIDEO_EXTS, split_name

TEMP_PREFIX = ".hotfolder-upload-"
STALE_TEMP_S = 86400.0             # a temp this old is a leftover of a crash: removed by the sweep
MAX_NAME_BYTES = 200               # most filesystems allow 255; room for "-2" and friends
INPUT_EXTS = VIDEO_EXTS | AUDIO_EXTS | TEXT_EXTS | {"json"}
_RESERVED = set('<>:"/\\|?*')      # not allowed on SMB shares (Windows clients)
_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS)


class UploadError(Exception):
    """An upload refused, with a message for the person who sent it and the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# -- names --------------------------------------------------------------------------------------
def clean_name(raw: str) -> str:
    """A browser's file name as a safe file name in one folder, or :class:`UploadError`."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join("_" if c in _RESERVED or unicodedata.category(c).startswith("C") else c for c in name)
    name = name.strip().lstrip(".").strip()   # a leading dot would hide it from intake for ever
    stem, dot, ext = name.rpartition(".")
    if dot and stem:
        stem = stem.rstrip(" .")
        while len(f"{stem}.{ext}".encode()) > MAX_NAME_BYTES and stem:
            stem = stem[:-1]
        name = f"{stem}.{ext}" if stem else ""
    if not name or name in (".", ".."):
        raise UploadError(f"{raw!r} is not a usable file name: rename the file and try again")
    reason = pairing.is_ignored(name)
    if reason is not None:
        raise UploadError(f"{name}: intake never takes such a file ({reason}): rename it and try again")
    return name


def video_name(raw: str) -> str:
    """The cleaned name of an uploaded video, refused unless the API takes its format."""
    name = clean_name(raw)
    ext = split_name(name)[2]
    if ext not in API_VIDEO_EXTS:
        problem = pairing.api_format_problem(name)
        raise UploadError(problem or f"{name} is not a video the API takes: use .mp4, .mov or .webm")
    return name


def driver_ext(raw: str) -> str:
    """The extension (as given) of an uploaded script or audio, refused unless usable."""
    name = clean_name(raw)
    ext = split_name(name)[2]
    if ext in TEXT_EXTS or ext in API_AUDIO_EXTS:
        return name.rpartition(".")[2]
    problem = pairing.api_format_problem(name)
    raise UploadError(problem or f"{name} is neither a script (.txt) nor speech the API takes "
                      "(.wav, .mp3, .m4a)")


def target_folder(settings: Settings, preset: str) -> Path:
    """The inbox (``preset`` empty) or a configured preset's folder, created if it is missing.
    Refuses anything else, and a missing inbox (an unmounted share is never recreated)."""
    inbox = settings.folders.inbox
    if not inbox.is_dir():
        raise UploadError(f"the inbox {inbox} is missing (a share not mounted?): nothing can be added now",
                          status=503)
    if not preset:
        return inbox
    if preset not in settings.presets:
        known = ", ".join(sorted(settings.presets)) or "none are configured"
        raise UploadError(f"unknown preset {preset!r} (the presets are: {known})")
    folder = inbox / preset   # a preset's name is a plain folder name: checked when the config loads
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise UploadError(f"cannot create the preset folder {folder}: {exc.strerror or exc}", status=500) from exc
    if folder.is_symlink() or not folder.is_dir():
        raise UploadError(f"{folder} is not a folder: fix the inbox", status=500)
    return folder


# -- staged files -------------------------------------------------------------------------------
class StagedFile:
    """One file being received under a hidden temporary name in its target folder."""

    def __init__(self, folder: Path, role: str) -> None:
        self.path = folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}-{role}"
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                                       0o644)
        self.size = 0

    def write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(data)

    def finish(self) -> None:
        """Flush it to the disk and close it (the commit links only durable bytes)."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class PairUpload:
    """One upload: its folder, its staged files, and the commit that places them as a pair."""

    def __init__(self, settings: Settings, preset: str) -> None:
        self.settings = settings
        self.preset = preset
        self.folder = target_folder(settings, preset)
        self.video_name: str | None = None
        self.driver_ext: str | None = None
        self.staged: dict[str, StagedFile] = {}

    def check_space(self, incoming: int) -> None:
        """Refuse an upload that would leave the inbox's disk under ``[disk] min_free_mb``."""
        try:
            st = os.statvfs(self.folder)
            free = st.f_bavail * st.f_frsize
        except OSError:
            return
        keep = self.settings.disk.min_free_mb * 1024 * 1024
        if incoming + keep > free:
            raise UploadError(f"not enough space in the inbox for {incoming / 2**20:.0f} MiB "
                              f"({free / 2**20:.0f} MiB free, {self.settings.disk.min_free_mb} MiB kept free)",
                              status=507)

    def open_video(self, filename: str) -> StagedFile:
        if "video" in self.staged:
            raise UploadError("one video per upload")
        self.video_name = video_name(filename)
        return self._stage("video")

    def open_driver(self, filename: str) -> StagedFile:
        if "driver" in self.staged:
            raise UploadError("one script or audio per upload: drop either a .txt or one audio file")
        self.driver_ext = driver_ext(filename)
        return self._stage("driver")

    def set_script(self, text: str) -> None:
        """A script typed into the page: it becomes ``<stem>.txt`` (UTF-8)."""
        from hotfolder.pairing import MAX_TEXT_CHARS

        if "driver" in self.staged:
            raise UploadError("give either a script file, an audio file or a typed script, not several")
        stripped = text.strip()
        if not stripped:
            raise UploadError("the script is empty: type what the presenter should say")
        if len(stripped) > MAX_TEXT_CHARS:
            raise UploadError(f"the script has {len(stripped)} characters; the API speaks at most "
                              f"{MAX_TEXT_CHARS}: split it into several videos")
        self.driver_ext = "txt"
        staged = self._stage("driver")
        staged.write(stripped.replace("\r\n", "\n").encode("utf-8") + b"\n")

    def _stage(self, role: str) -> StagedFile:
        try:
            staged = StagedFile(self.folder, role)
        except OSError as exc:
            raise UploadError(f"cannot write into {self.folder}: {exc.strerror or exc}", status=500) from exc
        self.staged[role] = staged
        return staged

    def commit(self) -> dict[str, Any]:
        """Place the pair (see the module doc); returns where it landed, inbox-relative."""
        if "video" not in self.staged or self.video_name is None:
            raise UploadError("no video in the upload: add an .mp4, .mov or .webm file")
        if "driver" not in self.staged or self.driver_ext is None:
            raise UploadError("no script or audio: type the script, or add a .txt, .wav, .mp3 or .m4a file")
        video, driver = self.staged["video"], self.staged["driver"]
        if video.size == 0:
            raise UploadError(f"{self.video_name} is empty (0 bytes)")
        if driver.size == 0:
            raise UploadError(f"the {'script' if self.driver_ext.lower() == 'txt' else 'audio'} file is empty (0 bytes)")
        for staged in (video, driver):
            staged.finish()
        _, stem, _ = split_name(self.video_name)
        vext = self.video_name.rpartition(".")[2]
        for attempt in range(20):
            candidate = _free_stem(self.folder, stem)
            finals = [(driver.path, self.folder / f"{candidate}.{self.driver_ext}"),
                      (video.path, self.folder / f"{candidate}.{vext}")]   # the driver first
            placed: list[tuple[Path, Path, bool]] = []
            try:
                for tmp, final in finals:
                    placed.append((tmp, final, _link_no_clobber(tmp, final)))
            except FileExistsError:
                for tmp, final, linked in placed:   # ours, just placed: take it back, try the next stem
                    if linked:
                        final.unlink(missing_ok=True)
                    else:
                        os.rename(final, tmp)
                continue
            for staged in (video, driver):
                staged.discard()
            fsync_dir(self.folder)
            rel = self.folder.relative_to(self.settings.folders.inbox).as_posix()
            prefix = "" if rel == "." else f"{rel}/"
            return {"video": f"{prefix}{finals[1][1].name}", "driver": f"{prefix}{finals[0][1].name}",
                    "renamed": candidate != stem, "preset": self.preset or None,
                    "bytes": video.size + driver.size}
        raise UploadError(f"could not find a free name for {stem} in {self.folder}", status=409)

    def discard(self) -> None:
        """Remove whatever was staged (an upload refused, cut off or failed)."""
        for staged in self.staged.values():
            try:
                staged.discard()
            except OSError:
                pass
        self.staged.clear()


def _free_stem(folder: Path, stem: str) -> str:
    """``stem``, ``stem-2``… : the first that no input file in ``folder`` uses. Stems compare
    exactly (after NFC) and extensions case-insensitively, as pairing does."""
    used: set[str] = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            if pairing.is_ignored(entry.name) is None:
                _, other, ext = split_name(entry.name)
                if ext in INPUT_EXTS:
                    used.add(unicodedata.normalize("NFC", other))
    n = 1
    while True:
        candidate = stem if n == 1 else f"{stem}-{n}"
        if unicodedata.normalize("NFC", candidate) not in used:
            return candidate
        n += 1


def _link_no_clobber(tmp: Path, final: Path) -> bool:
    """``final`` becomes ``tmp``'s file; FileExistsError if the name is taken (never replaced).
    True when hard-linked (``tmp`` stays until discarded), False when renamed."""
    try:
        os.link(tmp, final)
        return True
    except OSError as exc:
        if isinstance(exc, FileExistsError) or exc.errno not in _NO_LINKS:
            raise
        # No hard links here (some SMB/FAT mounts): a copy under the final name would be visible
        # while incomplete, so rename after a check: the best such a filesystem allows.
        if final.exists() or final.is_symlink():
            raise FileExistsError(errno.EEXIST, "name taken", str(final)) from exc
        os.rename(tmp, final)
        return False


def sweep_stale(settings: Settings, now: float | None = None) -> int:
    """Remove upload temps left by a crash (older than :data:`STALE_TEMP_S`) from the inbox and
    the preset folders; returns how many."""
    now = time.time() if now is None else now
    inbox = settings.folders.inbox
    removed = 0
    for folder in [inbox, *(inbox / p for p in settings.presets)]:
        try:
            with os.scandir(folder) as entries:
                stale = [Path(e.path) for e in entries if e.name.startswith(TEMP_PREFIX)
                         and e.is_file(follow_symlinks=False)
                         and now - e.stat(follow_symlinks=False).st_mtime > STALE_TEMP_S]
        except OSError:
            continue
        for path in stale:
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
    return removed
