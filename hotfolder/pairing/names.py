"""Which inbox names are inputs at all, and what kind each one is.

Pure string rules (no file-system calls) so they are trivially testable and identical on every
platform. Paths are inbox-relative with ``/`` between folders.

Decision on ``<stem>.error.json`` (hotfolder's own failure report, normally only in ``failed/``):
it is **not** ignored here. A user retrying a job often moves everything back from ``failed/``
including the report; as a ``.json`` it only pairs with a video whose stem is literally
``<stem>.error``, so it can never be mistaken for the overrides of ``<stem>.mp4``. Ignoring the
name would instead silently drop the real overrides of a video called ``x.error.mp4``.
:func:`hotfolder.pairing.pair` reports a stray report as an :class:`Orphan` with a reason saying
what it is, and the daemon leaves it alone.

**Media formats.** The Chanjing API takes video ``.mp4/.mov/.webm`` and audio ``.wav/.mp3/.m4a``
(:data:`API_VIDEO_EXTS`, :data:`API_AUDIO_EXTS`). Common other formats
(:data:`CONVERTIBLE_VIDEO_EXTS`, :data:`CONVERTIBLE_AUDIO_EXTS`) are still *recognised* as video
or audio and pair like the native ones: if they were "other", ``clip.mp4`` + ``clip.ogg`` would
wait for a driver forever and ``clip.mkv`` would be ignored, both silently. Recognised, they form
a job whose files are converted in the upload stage (:mod:`hotfolder.convert`), or that
intake fails at once, saying how to install ffmpeg, when it is missing.
"""

from __future__ import annotations

import re
from typing import Literal

Kind = Literal["video", "text", "audio", "overrides", "other"]

API_VIDEO_EXTS = frozenset({"mp4", "mov", "webm"})  # what the API takes (chanjing-api.md)
API_AUDIO_EXTS = frozenset({"wav", "mp3", "m4a"})
# Recognised so they fail loudly with a "convert it" message instead of waiting or being ignored
# silently. The description names the format in that message.
CONVERTIBLE_VIDEO: dict[str, str] = {
    "mkv": "Matroska video",
    "avi": "AVI video",
    "m4v": "M4V (iTunes MPEG-4) video",
    "mpg": "MPEG video",
    "mpeg": "MPEG video",
    "ts": "MPEG transport stream video",
    "wmv": "Windows Media video",
    "flv": "Flash video",
    "3gp": "3GP (mobile phone) video",
}
CONVERTIBLE_AUDIO: dict[str, str] = {
    "flac": "FLAC audio",
    "ogg": "Ogg audio",
    "opus": "Opus audio",
    "aac": "raw AAC audio",
    "wma": "Windows Media audio",
    "amr": "AMR (voice recorder) audio",
    "aiff": "AIFF audio",
    "aif": "AIFF audio",
}
CONVERTIBLE_VIDEO_EXTS = frozenset(CONVERTIBLE_VIDEO)
CONVERTIBLE_AUDIO_EXTS = frozenset(CONVERTIBLE_AUDIO)
# Everything classified "video"/"audio": what the API takes plus what must be converted first.
VIDEO_EXTS = API_VIDEO_EXTS | CONVERTIBLE_VIDEO_EXTS
AUDIO_EXTS = API_AUDIO_EXTS | CONVERTIBLE_AUDIO_EXTS
TEXT_EXTS = frozenset({"txt"})
OVERRIDES_EXTS = frozenset({"json"})

# Folders that NAS boxes, OSes and sync tools create; compared case-insensitively because the
# Windows ones are spelled inconsistently.
LITTER_DIRS: dict[str, str] = {
    "@eadir": "Synology thumbnail folder",
    "#recycle": "Synology recycle bin",
    "#snapshot": "Synology snapshot folder",
    "@recycle": "QNAP recycle bin",
    "@recently-snapshot": "QNAP snapshot folder",
    "@__thumb": "QNAP thumbnail folder",
    "$recycle.bin": "Windows recycle bin",
    "recycler": "Windows recycle bin",
    "system volume information": "Windows system folder",
    "lost+found": "file-system recovery folder",
    "network trash folder": "macOS (AFP) trash folder",
    "temporary items": "macOS (AFP) temporary folder",
}
LITTER_FILES: dict[str, str] = {
    ".ds_store": "macOS folder settings",
    "thumbs.db": "Windows thumbnail cache",
    "ehthumbs.db": "Windows thumbnail cache",
    "ehthumbs_vista.db": "Windows thumbnail cache",
    "desktop.ini": "Windows folder settings",
    "icon\r": "macOS folder icon",
    ".directory": "KDE folder settings",
}
# Names a file has while it is still being written by a browser, a download or copy tool.
TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download",
                 ".opdownload", ".!ut", ".!qb", ".filepart", ".crswap", ".swp", ".swo", ".swx")


def split_name(relpath: str) -> tuple[str, str, str]:
    """(folder, stem, lower-case extension without dot) of an inbox-relative path.

    ``"a/b/Clip.Final.MP4"`` → ``("a/b", "Clip.Final", "mp4")``; no extension → ``""``.
    """
    folder, _, name = relpath.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:  # "README" or ".profile": no extension
        return folder, name, ""
    return folder, stem, ext.lower()


def classify(name: str) -> Kind:
    """The role of a file by its extension, case-insensitively (``CLIP.MP4`` is a video).

    Formats the API does not take but that can be converted (``.mkv``, ``.ogg``...) are
    "video"/"audio" too; :func:`api_format_problem` says which ones need converting.
    """
    ext = split_name(name)[2]
    if ext in VIDEO_EXTS:
        return "video"
    if ext in TEXT_EXTS:
        return "text"
    if ext in AUDIO_EXTS:
        return "audio"
    if ext in OVERRIDES_EXTS:
        return "overrides"
    return "other"


def api_format_problem(relpath: str) -> str | None:
    """Why the Chanjing API cannot take this video or audio file, and how to convert it; None for
    the formats it takes and for anything that is not a recognised video/audio file.

    ``"a/clip.ogg"`` → ``"a/clip.ogg is Ogg audio, which the Chanjing API does not take (it takes
    audio .wav, .mp3, .m4a and video .mp4, .mov, .webm): convert it, e.g.
    `ffmpeg -i clip.ogg clip.wav`"``. Pure: it judges the name, not the bytes.
    """
    _, stem, ext = split_name(relpath)
    if ext in CONVERTIBLE_VIDEO:
        what, target = CONVERTIBLE_VIDEO[ext], "mp4"
    elif ext in CONVERTIBLE_AUDIO:
        # WAV: lossless and taken everywhere, so converting loses nothing more.
        what, target = CONVERTIBLE_AUDIO[ext], "wav"
    else:
        return None
    name = relpath.rpartition("/")[2]  # the command runs in the file's folder
    command = f"ffmpeg -i {_shell_word(name)} {_shell_word(f'{stem}.{target}')}"
    return (f"{relpath} is {what}, which the Chanjing API does not take (it takes audio "
            f"{_exts(API_AUDIO_EXTS)} and video {_exts(API_VIDEO_EXTS)}): convert it, e.g. "
            f"`{command}`")


def _exts(exts: frozenset[str]) -> str:
    order = ("mp4", "mov", "webm", "wav", "mp3", "m4a")  # the API documentation's order
    return ", ".join(f".{e}" for e in sorted(exts, key=lambda e: (order.index(e), e)))


def _shell_word(name: str) -> str:
    """``name`` as one word for a shell command users copy (POSIX shells and cmd.exe alike)."""
    if re.fullmatch(r"[\w.,+@%=:/-]+", name):
        return name
    return f"'{name}'" if '"' in name else f'"{name}"'


def is_ignored(relpath: str) -> str | None:
    """Why ``relpath`` is never taken as an input, or None if it may be (once settled).

    Never taken: hidden files/folders (any component starting with ``.``), office lock files,
    temporary/partial-download names, NAS/OS/sync-tool litter and anything inside their folders.
    """
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if not parts:
        return "not a file name"
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        low = part.lower()
        if part == "..":
            return "outside the inbox"
        if not last and low in LITTER_DIRS:
            return f"inside a {LITTER_DIRS[low]} ({part})"
        if not last and part.startswith("."):
            return f"inside a hidden folder ({part})"
    name = parts[-1]
    low = name.lower()
    if low in LITTER_FILES:
        return f"{LITTER_FILES[low]} ({name})"
    if name.startswith("~$"):
        return "Microsoft Office lock file"
    if low.startswith(".~lock.") and low.endswith("#"):
        return "LibreOffice lock file"
    if low.startswith("~syncthing~") or low.startswith(".syncthing."):
        return "Syncthing temporary file"
    if name.startswith("."):
        return "hidden file"
    for suffix in TEMP_SUFFIXES:
        if low.endswith(suffix):
            return f"temporary or partial file (*{suffix}): still being written or downloaded"
    if name.endswith("~"):
        return "editor backup file (*~)"
    return None
