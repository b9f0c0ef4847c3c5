"""Pure input rules: which inbox files form a job, and whether their contents are acceptable.

Nothing here touches the file system: the daemon lists/stats/reads and feeds the results in, so
every rule is testable with plain strings and bytes.

* :mod:`.names` — :func:`is_ignored`, :func:`classify`, :func:`api_format_problem`
* :mod:`.settle` — :class:`SettleTracker`
* :mod:`.script` — :func:`decode_script`, :data:`MAX_TEXT_CHARS`
* :mod:`.overrides` — :data:`LIPSYNC_FIELDS`, :func:`validate_lipsync`, :func:`validate_overrides`
* here — :func:`pair` and its result types

**Stems compare exactly (case-sensitively); extensions case-insensitively.** The contract says
"the same stem" and "extensions match case-insensitively". NAS file systems (ext4, btrfs, ZFS)
are case-sensitive, so ``Clip.mp4`` and ``clip.mp4`` can both exist and are different jobs with
different outputs; folding case would merge them or pair a driver with the wrong video. Since a
case slip is a likely user mistake (Windows hides it), a driver whose stem differs from a video's
only in case is named in the :class:`Waiting`/:class:`Orphan` reason with the rename to do.
Stems and folders are compared after Unicode NFC normalisation: macOS clients may write
decomposed (NFD) names, and ``café`` must pair with ``café`` however its accent was encoded.

**Reasons say what to do.** ``hotfolder explain`` prints ``<file>: <verdict>: <reason>``, so a
reason never repeats its verdict ("waiting for…"): it starts with what is missing or wrong and
ends with the action. Video/audio the API does not take (``clip.mkv``, ``clip.ogg``) pairs like
the native formats: intake converts them (:mod:`hotfolder.convert`), or fails the job at
once when no ffmpeg is installed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from hotfolder.pairing.names import (
    API_AUDIO_EXTS,
    API_VIDEO_EXTS,
    AUDIO_EXTS,
    CONVERTIBLE_AUDIO_EXTS,
    CONVERTIBLE_VIDEO_EXTS,
    TEXT_EXTS,
    VIDEO_EXTS,
    Kind,
    api_format_problem,
    classify,
    is_ignored,
    split_name,
)
from hotfolder.pairing.overrides import (
    LIPSYNC_FIELDS,
    FieldRule,
    OverrideError,
    validate_lipsync,
    validate_overrides,
)
from hotfolder.pairing.script import MAX_SIDECAR_BYTES, MAX_TEXT_CHARS, decode_script, find_emoji
from hotfolder.pairing.settle import SettleTracker

__all__ = [
    "API_AUDIO_EXTS", "API_VIDEO_EXTS", "AUDIO_EXTS", "CONVERTIBLE_AUDIO_EXTS",
    "CONVERTIBLE_VIDEO_EXTS", "LIPSYNC_FIELDS", "MAX_SIDECAR_BYTES", "MAX_TEXT_CHARS",
    "TEXT_EXTS", "VIDEO_EXTS", "Ambiguous", "FieldRule", "Kind", "Orphan", "OverrideError",
    "PairingResult", "Ready", "SettleTracker", "Waiting", "api_format_problem", "classify",
    "decode_script", "find_emoji", "is_ignored", "pair", "split_name", "validate_lipsync",
    "validate_overrides",
]


@dataclass(frozen=True)
class Ready:
    """A video with exactly one driver (and at most one overrides file): a job can start."""

    video: str
    driver: str
    driver_kind: Literal["text", "audio"]
    overrides: str | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every input file of the job (they move to archive/ or failed/ together)."""
        return (self.video, self.driver) + ((self.overrides,) if self.overrides else ())


@dataclass(frozen=True)
class Waiting:
    """A video with no driver yet: never a failure, it waits. ``reason`` starts with what is
    missing and says what to drop (never "waiting for…": the verdict already says that)."""

    video: str
    reason: str
    overrides: str | None = None


@dataclass(frozen=True)
class Ambiguous:
    """A group that cannot be a job as it stands. ``video`` is its first video (sorted);
    ``files`` lists every input of the group; ``reason`` names them and says what to do."""

    video: str
    files: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Orphan:
    """A driver or overrides file with no video of its stem (yet). Not a failure either;
    ``reason`` says what to drop or rename."""

    driver: str
    reason: str


@dataclass(frozen=True)
class PairingResult:
    """Everything :func:`pair` made of a listing, each part sorted by path."""

    ready: tuple[Ready, ...] = ()
    waiting: tuple[Waiting, ...] = ()
    ambiguous: tuple[Ambiguous, ...] = ()
    orphans: tuple[Orphan, ...] = ()
    others: tuple[str, ...] = ()  # not inputs (unknown extensions): left alone
    ignored: tuple[tuple[str, str], ...] = ()  # (path, reason from is_ignored)

    @property
    def groups(self) -> tuple[Ready | Waiting | Ambiguous | Orphan, ...]:
        """Every outcome in one sequence, ordered by its first path (video, else driver)."""
        every: list[Ready | Waiting | Ambiguous | Orphan] = [
            *self.ready, *self.waiting, *self.ambiguous, *self.orphans]
        return tuple(sorted(every, key=lambda g: g.driver if isinstance(g, Orphan) else g.video))


def pair(files: Iterable[str]) -> PairingResult:
    """Group inbox-relative paths into jobs by (folder, stem); see the module doc for how names
    compare. Ignored names (:func:`is_ignored`) are reported, never paired."""
    ignored: list[tuple[str, str]] = []
    others: list[str] = []
    groups: dict[tuple[str, str], list[str]] = {}
    for path in sorted(set(files)):
        reason = is_ignored(path)
        if reason is not None:
            ignored.append((path, reason))
        elif classify(path) == "other":
            others.append(path)
        else:
            folder, stem, _ = split_name(path)
            groups.setdefault((_nfc(folder), _nfc(stem)), []).append(path)
    # (folder, casefolded stem) -> groups: to point out drivers that differ only in case.
    folded: dict[tuple[str, str], list[list[str]]] = {}
    for (folder, stem), paths in groups.items():
        folded.setdefault((folder, stem.casefold()), []).append(paths)

    ready: list[Ready] = []
    waiting: list[Waiting] = []
    ambiguous: list[Ambiguous] = []
    orphans: list[Orphan] = []
    for (folder, stem), paths in sorted(groups.items()):
        videos = [p for p in paths if classify(p) == "video"]
        drivers = [p for p in paths if classify(p) in ("text", "audio")]
        jsons = [p for p in paths if classify(p) == "overrides"]
        near = [q for g in folded[(folder, stem.casefold())] if g is not paths for q in g]
        if not videos:
            for path in drivers + jsons:
                orphans.append(Orphan(path, _orphan_reason(path, near)))
        elif len(videos) > 1:
            ambiguous.append(Ambiguous(videos[0], tuple(paths), (
                f"{len(videos)} videos share the name {_name(stem)!r}: {_list(videos)}; a driver "
                f"can drive only one of them: rename all but one (each video needs its own "
                f"name and its own .txt or audio file)")))
        elif len(drivers) > 1:
            ambiguous.append(Ambiguous(videos[0], tuple(paths), (
                f"{videos[0]} has {len(drivers)} driver files: {_list(drivers)}; a job takes "
                f"exactly one: keep either the .txt (text to speak) or one audio file "
                f"(speech) and remove or rename the others")))
        elif len(jsons) > 1:
            ambiguous.append(Ambiguous(videos[0], tuple(paths), (
                f"{videos[0]} has {len(jsons)} overrides files: {_list(jsons)}; keep one")))
        elif not drivers:
            waiting.append(Waiting(videos[0], _waiting_reason(videos[0], near),
                                   jsons[0] if jsons else None))
        else:
            kind: Literal["text", "audio"] = "text" if classify(drivers[0]) == "text" else "audio"
            ready.append(Ready(videos[0], drivers[0], kind, jsons[0] if jsons else None))
    return PairingResult(tuple(ready), tuple(waiting), tuple(ambiguous),
                         tuple(sorted(orphans, key=lambda o: o.driver)), tuple(others),
                         tuple(ignored))


def _waiting_reason(video: str, near: list[str]) -> str:
    # Suggest only the audio formats the API takes: others would need converting first.
    stem = _name(split_name(video)[1])
    reason = (f"no script or audio yet: drop {stem}.txt (text to speak) or {stem}.wav, .mp3 or "
              f".m4a (speech) next to it")
    drivers = [q for q in near if classify(q) in ("text", "audio")]
    if drivers:
        reason += (f"; {_list(drivers)} differs only in letter case: rename it to "
                   f"{stem}.{split_name(drivers[0])[2]}")
    return reason


def _orphan_reason(path: str, near: list[str]) -> str:
    folder, stem, ext = split_name(path)
    if ext == "json" and stem.endswith(".error"):
        return ("a hotfolder error report (moved back from failed/?), not an input: it is left "
                "alone; delete it once the job is fixed")
    reason = f"no video of that name yet: drop {_name(stem)}.mp4, .mov or .webm next to it"
    videos = [q for q in near if classify(q) == "video"]
    if videos:
        reason += f"; {_list(videos)} differs only in letter case: rename {path} to match it"
    return reason


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _name(stem: str) -> str:
    return stem.rpartition("/")[2]


def _list(paths: list[str]) -> str:
    return " and ".join(paths) if len(paths) <= 2 else ", ".join(paths[:-1]) + " and " + paths[-1]
