"""WebM/Matroska (EBML) header probing: EBML header → Segment → Info/Tracks; clusters (the
media data) are never read. Handles EBML varints and unknown-size elements."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator

from hotfolder.media._common import MAX_READ, NoVideoTrack, NotAVideo, Reader, VideoInfo

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_DOCTYPE, _SEGMENT, _INFO, _TRACKS, _CLUSTER = 0x4282, 0x18538067, 0x1549A966, 0x1654AE6B, \
    0x1F43B675
_TIMESCALE, _DURATION = 0x2AD7B1, 0x4489
_TRACK_ENTRY, _TRACK_TYPE, _FLAG_ENABLED, _VIDEO, _PIXEL_W, _PIXEL_H = \
    0xAE, 0x83, 0xB9, 0xE0, 0xB0, 0xBA
# Top-level (segment child) IDs: one of them ends an element of unknown size.
_LEVEL1 = frozenset({0x114D9B74, _INFO, _TRACKS, _CLUSTER, 0x1C53BB6B, 0x1043A770, 0x1254C367,
                     0x1941A469, _SEGMENT, 0x1A45DFA3})
_TRACK_TYPES = {1: "video", 2: "audio", 3: "complex", 0x10: "logo", 0x11: "subtitle",
                0x12: "buttons", 0x20: "control", 0x21: "metadata"}


def _element(r: Reader, pos: int) -> tuple[int, int, int | None]:
    """(id, data start, data end or None for unknown size) of the element at ``pos``."""
    buf = r.read_at(pos, 12)  # an ID is at most 4 bytes, a size at most 8
    eid, idlen, _ = _vint(r, buf, 0, marker=True)
    if idlen > 4:
        raise r.damaged(f"an element ID at offset {pos} is {idlen} bytes long")
    size, slen, unknown = _vint(r, buf, idlen, marker=False)
    data = pos + idlen + slen
    return eid, data, None if unknown else data + size


def _vint(r: Reader, buf: bytes, i: int, *, marker: bool) -> tuple[int, int, bool]:
    """EBML variable-length integer at ``buf[i]``: (value, length, all value bits set)."""
    if i >= len(buf):
        raise r.incomplete("the file ends inside an element header")
    if buf[i] == 0:
        raise r.damaged("an element header is not valid EBML")
    length = 9 - buf[i].bit_length()  # leading zero bits + 1
    if i + length > len(buf):
        raise r.incomplete("the file ends inside an element header")
    raw = int.from_bytes(buf[i:i + length], "big")
    value = raw & ((1 << (7 * length)) - 1)
    return raw if marker else value, length, value == (1 << (7 * length)) - 1


def _walk(r: Reader, start: int, end: int) -> Iterator[tuple[int, int, int | None]]:
    """Elements in [start, end). Unknown sizes are yielded as None and resolved (by scanning
    for the next top-level ID) only if the caller asks for the next sibling."""
    pos = start
    while pos < end:
        r.tick()
        eid, data, dend = _element(r, pos)
        if dend is not None and dend > end:
            if dend > r.size:
                raise r.incomplete(f"an element needs {dend - r.size} more bytes than the "
                                   f"file has")
            raise r.damaged(f"an element at offset {pos} runs past the end of its parent")
        yield eid, data, dend
        pos = _unknown_end(r, data, end) if dend is None else dend


def _unknown_end(r: Reader, pos: int, end: int) -> int:
    """End of an unknown-size element: the next top-level ID (or ``end``)."""
    while pos < end:
        r.tick()
        eid, data, dend = _element(r, pos)
        if eid in _LEVEL1:
            return pos
        if dend is None:
            raise r.damaged("nested elements of unknown size")
        pos = dend
    return end


def _uint(r: Reader, data: int, end: int) -> int:
    if end - data > 8:
        raise r.damaged("an integer field is longer than 8 bytes")
    return int.from_bytes(r.read_at(data, end - data), "big")


def probe_ebml(r: Reader) -> VideoInfo:
    _, data, end = _element(r, 0)
    if end is None or end - data > MAX_READ:
        raise r.damaged("the EBML header has no sensible size")
    if end > r.size:
        raise r.incomplete("the file ends inside its header")
    doctype = "matroska"  # the EBML default when DocType is absent
    for eid, cdata, cend in _walk(r, data, end):
        if eid == _DOCTYPE and cend is not None:
            doctype = r.read_at(cdata, min(cend - cdata, 32)).rstrip(b"\0").decode("latin-1")
    if doctype not in ("webm", "matroska"):
        raise NotAVideo(f"{r.name} is not a video: it is an EBML file of type {doctype!r}, not "
                        f"WebM; export the clip as MP4, MOV or WebM", path=r.name)
    segment = next(((d, e) for i, d, e in _walk(r, end, r.size) if i == _SEGMENT), None)
    if segment is None:
        raise r.incomplete("it has no Segment (the part holding the tracks)")
    seg_data, seg_end = segment[0], r.size if segment[1] is None else segment[1]
    scale, duration, tracks = 1_000_000, None, None
    for eid, edata, eend in _walk(r, seg_data, seg_end):
        if eid == _CLUSTER and tracks is not None:
            break  # the headers we need come before the media data
        if eend is None:
            eend = _unknown_end(r, edata, seg_end)
        if eid == _INFO:
            for cid, cdata, cend in _walk(r, edata, eend):
                if cid == _TIMESCALE and cend is not None:
                    scale = _uint(r, cdata, cend) or scale
                elif cid == _DURATION and cend is not None and cend - cdata in (4, 8):
                    raw = r.read_at(cdata, cend - cdata)
                    duration = struct.unpack(">f" if len(raw) == 4 else ">d", raw)[0]
        elif eid == _TRACKS and tracks is None:
            tracks = _ebml_tracks(r, edata, eend)
    if tracks is None:
        raise r.damaged("it has no track list")
    videos = [t for t in tracks if t[0] == 1]
    if not videos:
        kinds = ", ".join(sorted({_TRACK_TYPES.get(t[0], str(t[0])) for t in tracks}))
        raise NoVideoTrack(f"{r.name} has no video track (tracks: {kinds or 'none'}): drop a "
                           f"clip with a picture", path=r.name)
    _, _, width, height = next((t for t in videos if t[1]), videos[0])
    if not (0 < width <= 65535 and 0 < height <= 65535):
        raise r.damaged(f"its video track has no usable picture size ({width}x{height})")
    seconds = None
    if duration is not None and math.isfinite(duration) and duration > 0:
        seconds = duration * scale / 1e9
    return VideoInfo("webm", width, height, 0, seconds)


def _ebml_tracks(r: Reader, start: int, end: int) -> list[tuple[int, bool, int, int]]:
    """[(track type, enabled, pixel width, pixel height)] of a Tracks element."""
    found: list[tuple[int, bool, int, int]] = []
    for eid, data, dend in _walk(r, start, end):
        if eid != _TRACK_ENTRY:
            continue
        dend = _unknown_end(r, data, end) if dend is None else dend
        ttype, enabled, width, height = 0, True, 0, 0  # FlagEnabled defaults to 1
        for cid, cdata, cend in _walk(r, data, dend):
            cend = _unknown_end(r, cdata, dend) if cend is None else cend
            if cid == _TRACK_TYPE:
                ttype = _uint(r, cdata, cend)
            elif cid == _FLAG_ENABLED:
                enabled = bool(_uint(r, cdata, cend))
            elif cid == _VIDEO:
                for vid, vdata, vend in _walk(r, cdata, cend):
                    if vid == _PIXEL_W and vend is not None:
                        width = _uint(r, vdata, vend)
                    elif vid == _PIXEL_H and vend is not None:
                        height = _uint(r, vdata, vend)
        found.append((ttype, enabled, width, height))
    return found
