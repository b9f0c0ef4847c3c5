"""The length of an MP4/MOV the sandbox returns as a result, from its ``moov/mvhd`` box.

The sandbox's own reader (it shares nothing with hotfolder's client side but the wire format):
the ``duration`` a finished task reports must be the length of the video it hands back, as the
real service's is. Reads box headers only; gives up (None) on anything unexpected.
"""

from __future__ import annotations

import struct
from pathlib import Path

_MAX_BOXES = 4096


def duration_ms(path: Path) -> int | None:
    """The movie's duration in milliseconds, or None if it cannot be read."""
    try:
        with open(path, "rb") as fh:
            size = path.stat().st_size
            moov = _find(fh, 0, size, b"moov")
            if moov is None:
                return None
            mvhd = _find(fh, moov[0], moov[1], b"mvhd")
            if mvhd is None:
                return None
            fh.seek(mvhd[0])
            head = fh.read(32)
    except OSError:
        return None
    if len(head) < 20:
        return None
    version = head[0]
    if version == 1 and len(head) >= 32:
        timescale, duration = struct.unpack(">IQ", head[20:32])
    else:
        timescale, duration = struct.unpack(">II", head[12:20])
    if not timescale or duration in (0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
        return None
    return int(duration * 1000 / timescale)


def _find(fh: object, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    """(payload start, payload end) of the first box ``kind`` between ``start`` and ``end``."""
    pos = start
    for _ in range(_MAX_BOXES):
        if pos + 8 > end:
            return None
        fh.seek(pos)  # type: ignore[attr-defined]
        header = fh.read(16)  # type: ignore[attr-defined]
        if len(header) < 8:
            return None
        box_size, box_kind = struct.unpack(">I4s", header[:8])
        offset = 8
        if box_size == 1 and len(header) >= 16:
            box_size = struct.unpack(">Q", header[8:16])[0]
            offset = 16
        elif box_size == 0:
            box_size = end - pos
        if box_size < offset:
            return None
        if box_kind == kind:
            return pos + offset, min(end, pos + box_size)
        pos += box_size
    return None
