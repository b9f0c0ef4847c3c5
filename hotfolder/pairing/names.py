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
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["video", "text", "audio", "overrides", "other"]

VIDEO_EXTS = frozenset({"mp4", "mov", "webm"})  # what the API takes (chanjing-api.md)
TEXT_EXTS = frozenset({"txt"})
AUDIO_EXTS = frozenset({"wav", "mp3", "m4a"})
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
    """The role of a file by its extension, case-insensitively (``CLIP.MP4`` is a video)."""
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
