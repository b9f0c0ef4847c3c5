"""MP4/MOV (ISO base media / QuickTime) header probing: only box headers and tiny payloads
(``mvhd``, ``tkhd``, ``hdlr``, ``stsd``) are read; everything else is skipped by seeking."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from hotfolder.media._common import Container, NoVideoTrack, Reader, VideoInfo

# Boxes a real MP4/MOV can start with (old QuickTime files have no ftyp).
ISO_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot",
                             b"uuid", b"styp", b"sidx", b"junk"})


@dataclass(frozen=True)
class _Box:
    type: bytes
    start: int
    data: int  # payload start
    end: int  # may exceed the parent's end (caller decides what that means)

    @property
    def name(self) -> str:
        return self.type.decode("latin-1")


def _boxes(r: Reader, start: int, end: int) -> Iterator[_Box]:
    """Headers of the boxes in [start, end); fewer than 8 trailing bytes are ignored."""
    pos = start
    while pos + 8 <= end:
        r.tick()
        hdr = r.read_at(pos, 16)
        if len(hdr) < 8:
            raise r.incomplete(f"the file ends inside a box header at offset {pos}")
        size, typ = struct.unpack(">I4s", hdr[:8])
        hlen = 8
        if size == 1:  # 64-bit largesize follows the type
            if len(hdr) < 16:
                raise r.incomplete(f"the file ends inside the header of box {typ!r}")
            size, hlen = struct.unpack(">Q", hdr[8:16])[0], 16
        elif size == 0:  # extends to the end of the enclosing box/file
            size = end - pos
        if size < hlen:
            raise r.damaged(f"box {typ.decode('latin-1')!r} at offset {pos} has the impossible "
                            f"size {size}")
        box = _Box(typ, pos, pos + hlen, pos + size)
        yield box
        pos = box.end


def _children(r: Reader, parent: _Box) -> Iterator[_Box]:
    """Children of ``parent``; a child running past its parent means a broken structure."""
    for box in _boxes(r, parent.data, parent.end):
        if box.end > parent.end:
            raise r.damaged(f"box {box.name!r} runs past the end of its parent {parent.name!r}")
        yield box


class _Track(NamedTuple):
    handler: bytes  # b"vide", b"soun", ...
    enabled: bool
    width: int
    height: int
    rotation: int


class _Movie(NamedTuple):
    rotation: int
    duration_s: float | None
    tracks: list[_Track]


def probe_iso(r: Reader) -> VideoInfo:
    """Walk every top-level box (so a box running past the end of the file is noticed even when
    the moov came first) and read the first video track of the first moov."""
    brand: bytes | None = None
    moov: _Movie | None = None
    for box in _boxes(r, 0, r.size):
        if moov is not None and r.nearly_spent():
            break  # enough: we have what we need; do not fail on a very long fragmented file
        if not _printable(box.type):
            if moov is not None:
                break  # padding/junk after a complete structure: harmless
            raise r.damaged(f"unexpected bytes at offset {box.start}")
        if box.end > r.size:
            raise r.incomplete(
                f"its {box.name!r} box needs {box.end - r.size} more bytes than the file has")
        if box.type == b"ftyp" and brand is None:
            brand = r.read_at(box.data, 4)
        elif box.type == b"moov" and moov is None:
            moov = _parse_moov(r, box)
    if moov is None:
        raise r.incomplete("it has no 'moov' box (the index that makes it playable)")
    container: Container = "mov" if brand in (None, b"qt  ") else "mp4"
    videos = [t for t in moov.tracks if t.handler == b"vide"]
    if not videos:
        kinds = ", ".join(sorted({t.handler.decode("latin-1").strip() or "?"
                                  for t in moov.tracks}))
        what = f"tracks: {kinds}" if moov.tracks else "no tracks at all"
        hint = " (an audio file? drop it as <stem>.m4a next to the video)" if kinds == "soun" \
            else ""
        raise NoVideoTrack(
            f"{r.name} has no video track ({what}){hint}: drop a clip with a picture",
            path=r.name)
    track = next((t for t in videos if t.enabled), videos[0])  # skip disabled (alternate) tracks
    if not (0 < track.width <= 65535 and 0 < track.height <= 65535):
        raise r.damaged(f"its video track has no usable picture size ({track.width}x"
                        f"{track.height})")
    rotation = (track.rotation + moov.rotation) % 360  # movie matrix and track matrix compose
    return VideoInfo(container, track.width, track.height, rotation, moov.duration_s)


def _parse_moov(r: Reader, moov: _Box) -> _Movie:
    rotation, duration = 0, None
    tracks: list[_Track] = []
    for box in _children(r, moov):
        if box.type == b"mvhd":
            p = r.read_at(box.data, 108)
            v1 = p[:1] == b"\x01"
            fmt, mat = (">IQ", 48) if v1 else (">II", 36)
            off = 20 if v1 else 12
            if len(p) >= mat + 36:
                timescale, dur = struct.unpack_from(fmt, p, off)
                unknown = dur in (0, 2**32 - 1, 2**64 - 1) or timescale == 0
                duration = None if unknown else dur / timescale
                rotation = _rotation(p, mat)
        elif box.type == b"trak":
            tracks.append(_parse_trak(r, box))
    return _Movie(rotation, duration, tracks)


def _parse_trak(r: Reader, trak: _Box) -> _Track:
    handler, enabled, width, height, rotation = b"", False, 0, 0, 0
    stsd_size = (0, 0)
    for box in _children(r, trak):
        if box.type == b"tkhd":
            p = r.read_at(box.data, 96)
            mat = 52 if p[:1] == b"\x01" else 40
            if len(p) >= mat + 44:
                enabled = bool(p[3] & 1)
                rotation = _rotation(p, mat)
                w, h = struct.unpack_from(">II", p, mat + 36)
                width, height = round(w / 65536), round(h / 65536)
        elif box.type == b"mdia":
            for sub in _children(r, box):
                if sub.type == b"hdlr":
                    handler = r.read_at(sub.data, 12)[8:12]
                elif sub.type == b"minf":
                    stsd_size = _stsd_size(r, sub)
    if (width == 0 or height == 0) and handler == b"vide":
        width, height = stsd_size  # tkhd size left at 0 by some writers: use the coded size
    return _Track(handler, enabled, width, height, rotation)


def _stsd_size(r: Reader, minf: _Box) -> tuple[int, int]:
    """Coded width/height from the first visual sample entry (minf/stbl/stsd)."""
    for stbl in _children(r, minf):
        if stbl.type == b"stbl":
            for stsd in _children(r, stbl):
                if stsd.type == b"stsd":
                    p = r.read_at(stsd.data, 44)
                    if len(p) == 44:
                        w, h = struct.unpack_from(">HH", p, 40)
                        return w, h
    return 0, 0


def _rotation(p: bytes, off: int) -> int:
    """Clockwise rotation of a 3x3 display matrix (a, b, u, c, d, v, x, y, w) at ``off``."""
    a, b = struct.unpack_from(">ii", p, off)
    if a == 0 and b == 0:
        return 0
    # (x, y) -> (a x + c y, b x + d y) with y pointing down: atan2(b, a) is the clockwise angle.
    return round(math.degrees(math.atan2(b, a)) / 90) * 90 % 360


def _printable(typ: bytes) -> bool:
    return all(0x20 <= c <= 0x7E or c == 0xA9 for c in typ)
