"""Durability helpers shared by every writer of files (outbox, downloads, error reports).

One definition of "make this rename survive a power cut": fsync the file, rename, fsync the
folder. Pure plumbing: no policy about where files go (that is :mod:`hotfolder.outbox`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where the filesystem cannot fsync folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (SMB, FAT) do not fsync directories; the rename still happened
    finally:
        os.close(fd)


def fsync_replace(tmp: Path, dest: Path) -> None:
    """fsync ``tmp``, rename it over ``dest``, fsync the folder."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write a small JSON file atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=2)
        fh.write("\n")
    fsync_replace(tmp, path)
