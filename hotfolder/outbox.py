"""Atomic placement of outputs and no-clobber moves of inputs.

Nothing here ever overwrites or deletes a user's file: a name already taken gets a ``-2``,
``-3``… suffix, a file appears under its final name only when complete (hard link of a finished
temp file, or a rename after an existence check where the filesystem has no hard links), and a
move across filesystems copies, fsyncs, places, and only then removes the source. Every step can
be re-run after a crash: a move whose source is gone and whose target exists is already done.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from hotfolder.errors import InputError
from hotfolder.fsutil import fsync_dir, write_json_atomic

CHUNK = 1 << 20


def safe_join(root: Path, rel: str) -> Path:
    """``root / rel``, refusing any ``rel`` that could leave ``root`` (``..``, absolute paths)."""
    pure = PurePosixPath(rel.replace("\\", "/"))
    if pure.is_absolute() or any(part in ("..", "") for part in pure.parts if part != "."):
        raise InputError(f"refusing the path {rel!r}: it would leave {root}", path=rel)
    out = root.joinpath(*[p for p in pure.parts if p != "."])
    if root not in out.parents and out != root:
        raise InputError(f"refusing the path {rel!r}: it would leave {root}", path=rel)
    return out


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def free_stem(folder: Path, stem: str, suffixes: list[str]) -> str:
    """The first of ``stem``, ``stem-2``, ``stem-3``… under which no ``suffixes`` file exists.

    A group (video, script, overrides) keeps one stem so it still pairs where it lands.
    """
    n = 1
    while True:
        candidate = stem if n == 1 else f"{stem}-{n}"
        if not any((folder / f"{candidate}{sfx}").exists() or (folder / f"{candidate}{sfx}").is_symlink()
                   for sfx in suffixes):
            return candidate
        n += 1


def place(tmp: Path, final: Path) -> None:
    """Put the finished file ``tmp`` at ``final`` without ever replacing an existing file.

    Idempotent: if ``tmp`` is gone and ``final`` exists, it was placed before a crash.
    """
    if not tmp.exists():
        if final.exists():
            return
        raise FileNotFoundError(errno.ENOENT, "nothing to place", str(tmp))
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(tmp, final)
    except FileExistsError:
        if final.exists() and os.path.samefile(tmp, final):
            pass  # linked before a crash; only the unlink is left
        else:
            raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # No hard links here (some SMB/FAT mounts): a rename after a check is the best we have.
        if final.exists():
            raise FileExistsError(errno.EEXIST, "target exists", str(final)) from exc
        os.rename(tmp, final)
        fsync_dir(final.parent)
        return
    os.unlink(tmp)
    fsync_dir(final.parent)


def move(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` (never replacing ``dst``), across filesystems if need be.

    Idempotent: a move already done (source gone, target present) is a no-op.
    """
    if not src.exists() and not src.is_symlink():
        if dst.exists():
            return
        raise FileNotFoundError(errno.ENOENT, "input vanished before it could be moved", str(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if os.path.samefile(src, dst):
            os.unlink(src)  # hard-linked before a crash
            return
        raise FileExistsError(errno.EEXIST, "target exists", str(dst))
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if exc.errno == errno.EXDEV:
            _copy_then_place(src, dst)
        else:
            os.rename(src, dst)
            fsync_dir(dst.parent)
            return
    os.unlink(src)
    fsync_dir(dst.parent)
    fsync_dir(src.parent)


def _copy_then_place(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.hotfolder-copy")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, CHUNK)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copystat(src, tmp)
    place(tmp, dst)


def plan_group_move(files: Mapping[str, str], dest_dir: Path, stem: str) -> dict[str, str]:
    """Where each of a job's input files will go in ``dest_dir``: one free stem for the group."""
    suffixes = [Path(p).suffix for p in files.values()] + [".error.json"]
    new_stem = free_stem(dest_dir, stem, suffixes)
    return {role: str(dest_dir / f"{new_stem}{Path(path).suffix}") for role, path in files.items()}


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write a small JSON file atomically (temp file, fsync, rename)."""
    write_json_atomic(path, data)
