"""Pure, stdlib-only sniffing of dropped media: video headers (MP4/MOV, WebM) and audio magic.

Why our own parser: the daemon must reject a bad video *before* uploading it (the contract makes
0-byte files, non-videos and truncated files permanent failures), and it wants the picture size
for ``screen_width``/``screen_height``. Shipping ffprobe for that is heavy; the few boxes we need
are easy to read.

Hostile input is expected (anything can be dropped in the inbox), so:

* only box/element *headers* are read while walking; payloads we skip are skipped by seeking
  (``mdat`` is never read), and every read is capped at :data:`MAX_READ` bytes;
* no recursion: only the fixed paths ``moov/trak/mdia/hdlr`` etc. are descended;
* the number of headers visited is capped (:data:`MAX_ITEMS`), so millions of tiny boxes cannot
  make a probe slow.

Rotation is *clockwise* degrees to turn the coded picture for display (the old ``rotate`` tag's
meaning; an iPhone portrait clip is coded 1920x1080 with rotation 90). Note that ffprobe >= 5
prints the display matrix angle counter-clockwise, i.e. ``rotation: -90`` for the same file.

Layout: this module is the public API; ``iso`` reads MP4/MOV, ``ebml`` reads WebM/Matroska,
``_common`` holds the result type, the errors and the bounded reader.
"""

from __future__ import annotations

import os
from typing import IO

from hotfolder.media._common import (
    HEAD_BYTES,
    MAX_ITEMS,
    MAX_READ,
    BadAudio,
    Container,
    DamagedVideo,
    EmptyFile,
    IncompleteVideo,
    MediaError,
    NoVideoTrack,
    NotAVideo,
    VideoInfo,
    Reader,
)
from hotfolder.media.ebml import EBML_MAGIC, probe_ebml
from hotfolder.media.iso import ISO_FIRST_BOXES, probe_iso

__all__ = [
    "HEAD_BYTES", "MAX_ITEMS", "MAX_READ", "BadAudio", "Container", "DamagedVideo", "EmptyFile",
    "IncompleteVideo", "MediaError", "NoVideoTrack", "NotAVideo", "VideoInfo", "describe_bytes",
    "display_size", "probe_path", "probe_video", "sniff_audio",
]


def display_size(info: VideoInfo) -> tuple[int, int]:
    """(width, height) as shown: swapped for a 90/270 rotation."""
    if info.rotation in (90, 270):
        return info.height, info.width
    return info.width, info.height


def probe_path(path: str | os.PathLike[str]) -> VideoInfo:
    """Open ``path`` and :func:`probe_video` it; an unreadable file is a :class:`MediaError`."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            return probe_video(fp, size, name=name)
    except OSError as exc:
        raise MediaError(
            f"cannot read the video {name}: {exc.strerror or exc}; check that the file is "
            f"readable by the hotfolder user", path=name
        ) from exc


def probe_video(fp: IO[bytes], size: int, *, name: str = "the video") -> VideoInfo:
    """Read the container header of a video of ``size`` bytes from the seekable ``fp``.

    Raises :class:`EmptyFile`, :class:`NotAVideo` (and :class:`DamagedVideo`),
    :class:`IncompleteVideo` or :class:`NoVideoTrack`, all :class:`InputError` subclasses whose
    message says what is wrong and what to do.
    """
    if size <= 0:
        raise EmptyFile(f"{name} is empty (0 bytes): copy the video again", path=name)
    r = Reader(fp, size, name)
    head = r.read_at(0, HEAD_BYTES)
    if head[:4] == EBML_MAGIC:
        return probe_ebml(r)
    if len(head) >= 8 and head[4:8] in ISO_FIRST_BOXES:
        return probe_iso(r)
    raise NotAVideo(
        f"{name} is not a video: it looks like {describe_bytes(head)}. The API takes MP4, MOV "
        f"and WebM videos; export or convert the clip to one of those", path=name
    )


def sniff_audio(head: bytes, ext: str, *, name: str = "the audio") -> None:
    """Light check that the first bytes of an audio sidecar match its extension.

    ``ext`` is ``wav``, ``mp3`` or ``m4a`` (any case, leading dot optional). Returns None if
    plausible, raises :class:`EmptyFile` or :class:`BadAudio` otherwise.
    """
    ext = ext.lower().lstrip(".")
    if not head:
        raise EmptyFile(f"{name} is empty (0 bytes): copy the audio again", path=name)
    if ext == "wav":
        ok = head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE"
    elif ext == "mp3":
        ok = head[:3] == b"ID3" or _mp3_sync(head)
    elif ext == "m4a":
        ok = head[4:8] == b"ftyp"
    else:
        raise ValueError(f"sniff_audio: not an audio extension: {ext!r}")
    if not ok:
        raise BadAudio(
            f"{name} is not {ext.upper()} audio: it looks like {describe_bytes(head)}. "
            f"Rename it to match its real format or re-export it as WAV, MP3 or M4A",
            path=name,
        )


def describe_bytes(head: bytes) -> str:
    """A short human description of what ``head`` (a file's first bytes) looks like."""
    if not head:
        return "nothing (0 bytes)"
    if head[:4] == b"RIFF" and len(head) >= 12:
        kind = {b"WAVE": "WAV audio", b"AVI ": "an AVI video (convert it to MP4)",
                b"WEBP": "a WebP image"}.get(head[8:12])
        if kind:
            return kind
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return f"an ISO media file of brand {head[8:12].decode('latin-1')!r}"
    if head[:3] == b"ID3" or _mp3_sync(head):
        return "MP3 audio"
    if head[0] == 0x47 and len(head) > 188 and head[188] == 0x47:
        return "an MPEG transport stream (convert it to MP4)"
    text = _as_text(head)
    if text is not None:
        stripped = text.lstrip()
        kind = "HTML" if stripped[:1] == "<" else "JSON" if stripped[:1] in "{[" else "text"
        snippet = " ".join(text.split())[:40]
        return f'{kind} ("{snippet}")' if snippet else "blank text"
    return "unknown binary data (starts with " + head[:8].hex(" ") + ")"


# --- internals ------------------------------------------------------------------------------

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"OggS", "an Ogg file"),
    (b"fLaC", "FLAC audio"),
    (b"FLV\x01", "an FLV video (convert it to MP4)"),
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "a WMV/ASF file (convert it to MP4)"),
    (b"\x00\x00\x01\xba", "an MPEG program stream (convert it to MP4)"),
    (b"\xff\xfe", "UTF-16 text"),
    (b"\xfe\xff", "UTF-16 text"),
)

def _mp3_sync(head: bytes) -> bool:
    """An MPEG audio frame header at offset 0, with the reserved field values excluded."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate != 15 and rate != 3


def _as_text(head: bytes) -> str | None:
    """``head`` as text if it plausibly is text (a multi-byte char may be cut at the end)."""
    for codec in ("utf-8", "gb18030"):  # GBK: what a Chinese Windows "ANSI" .txt holds
        for cut in range(4):
            try:
                text = head[: len(head) - cut].decode(codec)
            except UnicodeDecodeError:
                continue
            printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
            return text if text and printable >= 0.9 * len(text) else None
    return None
