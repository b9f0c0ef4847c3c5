"""hotfolder.media: real fixtures (tests/media, examples/) and synthetic hostile byte strings."""

from __future__ import annotations

import ast
import io
import random
import struct
import sys
from pathlib import Path

import pytest

import hotfolder.media._common as media_common
from hotfolder.errors import InputError
from hotfolder.media import (
    BadAudio,
    DamagedVideo,
    EmptyFile,
    IncompleteVideo,
    MediaError,
    NoVideoTrack,
    NotAVideo,
    VideoInfo,
    describe_bytes,
    display_size,
    probe_path,
    probe_video,
    sniff_audio,
)

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / "tests" / "media"
EXAMPLES = ROOT / "examples"


class CountingFile(io.BytesIO):
    """BytesIO that records how much was read, and the largest single read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.total = 0
        self.largest = 0

    def read(self, n: int | None = -1) -> bytes:  # type: ignore[override]
        assert n is not None and n >= 0, "probe must never read to the end"
        out = super().read(n)
        self.total += len(out)
        self.largest = max(self.largest, len(out))
        return out


class SparseFile:
    """A huge virtual file: zeros except for the given (offset, bytes) pieces; no allocation."""

    def __init__(self, size: int, pieces: list[tuple[int, bytes]]) -> None:
        self.size, self.pieces, self.pos, self.largest = size, pieces, 0, 0

    def seek(self, pos: int, whence: int = 0) -> int:
        assert whence == 0
        self.pos = pos
        return pos

    def read(self, n: int = -1) -> bytes:
        assert 0 <= n <= 1 << 20, f"unbounded read of {n} bytes"
        n = min(n, self.size - self.pos)
        buf = bytearray(n)
        for off, data in self.pieces:
            lo, hi = max(off, self.pos), min(off + len(data), self.pos + n)
            if lo < hi:
                buf[lo - self.pos:hi - self.pos] = data[lo - off:hi - off]
        self.pos += n
        self.largest = max(self.largest, n)
        return bytes(buf)


def probe_bytes(data: bytes, name: str = "x.mp4") -> VideoInfo:
    return probe_video(io.BytesIO(data), len(data), name=name)


# --- real fixtures --------------------------------------------------------------------------

FIXTURES = [
    # file, container, width, height, rotation, display size, duration
    ("tests/media/portrait.mp4", "mp4", 180, 320, 0, (180, 320), 1.0),
    ("tests/media/landscape.mov", "mov", 320, 180, 0, (320, 180), 1.0),
    ("tests/media/clip.webm", "webm", 160, 120, 0, (160, 120), 1.0),
    ("tests/media/rotated.mp4", "mp4", 320, 180, 90, (180, 320), 1.0),
    ("tests/media/faststart.mp4", "mp4", 320, 180, 0, (320, 180), 2.0),
    ("examples/presenter.mp4", "mp4", 360, 640, 0, (360, 640), 2.0),
    ("examples/interview.mp4", "mp4", 640, 360, 0, (640, 360), 3.0),
]


@pytest.mark.parametrize("rel, container, width, height, rotation, shown, duration", FIXTURES)
def test_fixture_probe(
    rel: str, container: str, width: int, height: int, rotation: int,
    shown: tuple[int, int], duration: float,
) -> None:
    data = (ROOT / rel).read_bytes()
    fp = CountingFile(data)
    info = probe_video(fp, len(data), name=rel)
    assert (info.container, info.width, info.height, info.rotation) == \
        (container, width, height, rotation)
    assert info.duration_s == pytest.approx(duration)
    assert display_size(info) == shown
    # Headers only: never more than a few KB read, never one big read.
    assert fp.largest <= media_common.MAX_READ
    assert fp.total < 8192


@pytest.mark.parametrize("rel", [f[0] for f in FIXTURES])
def test_probe_path_matches_probe_video(rel: str) -> None:
    assert probe_path(ROOT / rel) == probe_bytes((ROOT / rel).read_bytes())


def test_fixture_sizes_and_readme() -> None:
    readme = (MEDIA / "README.md").read_text(encoding="utf-8")
    for path in MEDIA.iterdir():
        if path.name != "README.md":
            assert path.stat().st_size < 50_000, path
            assert f"`{path.name}`" in readme, f"{path.name} is not documented"
    for name in ("presenter.mp4", "presenter.txt", "interview.mp4", "interview.wav"):
        assert (EXAMPLES / name).stat().st_size < 100_000


def test_truncated_fixture_is_incomplete() -> None:
    with pytest.raises(IncompleteVideo) as exc:
        probe_path(MEDIA / "truncated.mp4")
    msg = str(exc.value)
    assert "still being copied" in msg and "moov" in msg and "faststart" in msg
    assert exc.value.path == str(MEDIA / "truncated.mp4")
    assert exc.value.code == "bad_input"


@pytest.mark.parametrize("rel", ["tests/media/faststart.mp4", "tests/media/portrait.mp4"])
def test_faststart_cut_after_moov_is_still_incomplete(rel: str) -> None:
    """moov is intact but mdat is cut: the copy is unfinished even though the index is there."""
    data = (ROOT / rel).read_bytes()
    with pytest.raises(IncompleteVideo, match="'mdat' box needs"):
        probe_bytes(data[: int(len(data) * 0.8)])


@pytest.mark.parametrize("rel, kind, words", [
    ("tests/media/speech.m4a", NoVideoTrack, "soun"),
    ("tests/media/speech.mp3", NotAVideo, "MP3 audio"),
    ("tests/media/speech.wav", NotAVideo, "WAV audio"),
])
def test_audio_files_are_not_videos(rel: str, kind: type[MediaError], words: str) -> None:
    with pytest.raises(kind, match=words):
        probe_path(ROOT / rel)


@pytest.mark.parametrize("rel", [f[0] for f in FIXTURES[:5]] + ["tests/media/speech.m4a"])
def test_every_prefix_raises_only_media_errors(rel: str) -> None:
    data = (ROOT / rel).read_bytes()
    for cut in list(range(0, 80)) + list(range(80, len(data), 97)):
        try:
            probe_bytes(data[:cut])
        except MediaError:
            pass


@pytest.mark.parametrize("rel", [f[0] for f in FIXTURES[:5]])
def test_random_corruption_raises_only_media_errors(rel: str) -> None:
    data = (ROOT / rel).read_bytes()
    rng = random.Random(rel)
    for _ in range(150):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            # Corrupt mostly the header region, where the parser looks.
            mutated[rng.randrange(min(len(data), 3000))] = rng.randrange(256)
        if rel.endswith("landscape.mov") or rel.endswith("rotated.mp4"):  # moov at the end
            mutated[-rng.randrange(1, 1200)] = rng.randrange(256)
        try:
            probe_bytes(bytes(mutated))
        except MediaError:
            pass


# --- synthetic MP4 ---------------------------------------------------------------------------

IDENTITY = (1, 0, 0, 1)


def box(typ: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + typ + body


def matrix(a: float, b: float, c: float, d: float) -> bytes:
    fx = lambda v: int(v * 65536)  # noqa: E731
    return struct.pack(">9i", fx(a), fx(b), 0, fx(c), fx(d), 0, 0, 0, 1 << 30)


def tkhd(w: float, h: float, m: tuple[float, ...] = IDENTITY, version: int = 0,
         enabled: bool = True) -> bytes:
    head = bytes([version, 0, 0, 3 if enabled else 2])
    if version:  # creation, modification, track id, reserved, duration
        times = struct.pack(">QQIIQ", 0, 0, 1, 0, 0)
    else:
        times = struct.pack(">IIIII", 0, 0, 1, 0, 0)
    fixed = bytes(8) + struct.pack(">hhhh", 0, 0, 0, 0)
    return box(b"tkhd", head, times, fixed, matrix(*m), struct.pack(">II", int(w * 65536),
                                                                   int(h * 65536)))


def mvhd(timescale: int, duration: int, version: int = 0,
         m: tuple[float, ...] = IDENTITY) -> bytes:
    if version:
        times = struct.pack(">QQIQ", 0, 0, timescale, duration)
    else:
        times = struct.pack(">IIII", 0, 0, timescale, duration)
    return box(b"mvhd", bytes([version, 0, 0, 0]), times, struct.pack(">ih", 0x10000, 0x100),
               bytes(10), matrix(*m), bytes(24), struct.pack(">I", 2))


def hdlr(handler: bytes) -> bytes:
    return box(b"hdlr", bytes(8), handler, bytes(12), b"VideoHandler\0")


def stsd(w: int, h: int) -> bytes:
    entry = box(b"avc1", bytes(6), struct.pack(">H", 1), bytes(16), struct.pack(">HH", w, h),
                bytes(50))
    return box(b"stsd", bytes(4), struct.pack(">I", 1), entry)


def trak(handler: bytes = b"vide", w: float = 640, h: float = 360,
         m: tuple[float, ...] = IDENTITY, *, version: int = 0, enabled: bool = True,
         coded: tuple[int, int] = (0, 0)) -> bytes:
    minf = box(b"minf", box(b"stbl", stsd(*coded))) if coded != (0, 0) else b""
    return box(b"trak", tkhd(w, h, m, version, enabled), box(b"mdia", hdlr(handler), minf))


def mp4(*traks: bytes, brand: bytes = b"isom", mvhd_box: bytes | None = None,
        mdat: bytes | None = None, moov_last: bool = False) -> bytes:
    ftyp = box(b"ftyp", brand, bytes(4), brand) if brand else b""
    moov = box(b"moov", mvhd_box if mvhd_box is not None else mvhd(1000, 2500), *traks)
    media = mdat if mdat is not None else box(b"mdat", bytes(100))
    return ftyp + (media + moov if moov_last else moov + media)


@pytest.mark.parametrize("m, rotation, shown", [
    (IDENTITY, 0, (640, 360)),
    ((0, 1, -1, 0), 90, (360, 640)),  # iPhone portrait
    ((-1, 0, 0, -1), 180, (640, 360)),
    ((0, -1, 1, 0), 270, (360, 640)),
    ((2, 0, 0, 2), 0, (640, 360)),  # a scale is not a rotation
    ((0.7071, 0.7071, -0.7071, 0.7071), 0, (640, 360)),  # 45°: rounds to 0 (ties to even)
    ((0.5, 0.866, -0.866, 0.5), 90, (360, 640)),  # 60° rounds to 90
    ((0, 0, 0, 0), 0, (640, 360)),  # degenerate
])
def test_rotation_from_matrix(m: tuple[float, ...], rotation: int, shown: tuple[int, int]) -> None:
    info = probe_bytes(mp4(trak(m=m)))
    assert info.rotation == rotation
    assert display_size(info) == shown


def test_movie_matrix_composes_with_track_matrix() -> None:
    data = mp4(trak(m=(0, 1, -1, 0)), mvhd_box=mvhd(1000, 1000, m=(-1, 0, 0, -1)))
    assert probe_bytes(data).rotation == 270


@pytest.mark.parametrize("version", [0, 1])
def test_header_versions(version: int) -> None:
    data = mp4(trak(w=1920.5, h=1080, version=version),
               mvhd_box=mvhd(90000, 90000 * 3 + 45000, version=version))
    info = probe_bytes(data)
    assert (info.width, info.height, info.duration_s) == (1920, 1080, 3.5)


@pytest.mark.parametrize("timescale, duration", [(1000, 0), (0, 5), (1000, 0xFFFFFFFF)])
def test_unknown_duration_is_none(timescale: int, duration: int) -> None:
    assert probe_bytes(mp4(trak(), mvhd_box=mvhd(timescale, duration))).duration_s is None


def test_brand_decides_mp4_or_mov() -> None:
    assert probe_bytes(mp4(trak(), brand=b"qt  ")).container == "mov"
    assert probe_bytes(mp4(trak(), brand=b"mp42")).container == "mp4"
    assert probe_bytes(mp4(trak(), brand=b"")).container == "mov"  # old QuickTime: no ftyp


def test_video_track_chosen_by_handler_and_enabled_flag() -> None:
    data = mp4(trak(b"soun", 0, 0), trak(b"vide", 100, 50, enabled=False),
               trak(b"vide", 640, 360), trak(b"vide", 1, 1))
    assert probe_bytes(data).width == 640
    assert probe_bytes(mp4(trak(b"vide", 100, 50, enabled=False))).width == 100


def test_zero_tkhd_size_falls_back_to_sample_entry() -> None:
    assert display_size(probe_bytes(mp4(trak(w=0, h=0, coded=(720, 1280))))) == (720, 1280)
    with pytest.raises(DamagedVideo, match="picture size"):
        probe_bytes(mp4(trak(w=0, h=0)))


def test_no_video_track() -> None:
    with pytest.raises(NoVideoTrack, match=r"tracks: soun\).*m4a"):
        probe_bytes(mp4(trak(b"soun", 0, 0), brand=b"M4A "))
    with pytest.raises(NoVideoTrack, match="no tracks at all"):
        probe_bytes(mp4())


def test_largesize_and_size_zero() -> None:
    mdat64 = struct.pack(">I4sQ", 1, b"mdat", 16 + 50) + bytes(50)
    assert probe_bytes(mp4(trak(), mdat=mdat64, moov_last=True)).width == 640
    to_end = struct.pack(">I4s", 0, b"mdat") + bytes(77)  # size 0: runs to the end of the file
    assert probe_bytes(mp4(trak(), mdat=to_end)).width == 640


def test_seeks_past_a_huge_mdat_without_reading_it() -> None:
    """A 1 TiB mdat (largesize) before the moov: only headers are read."""
    head = box(b"ftyp", b"isom", bytes(4), b"isom")
    size = 1 << 40
    moov = box(b"moov", mvhd(1000, 1000), trak())
    mdat_header = struct.pack(">I4sQ", 1, b"mdat", size)
    total = len(head) + size + len(moov)
    fp = SparseFile(total, [(0, head + mdat_header), (len(head) + size, moov)])
    info = probe_video(fp, total)  # type: ignore[arg-type]
    assert (info.width, info.height) == (640, 360)
    assert fp.largest <= media_common.MAX_READ


@pytest.mark.parametrize("data, error, words", [
    (b"", EmptyFile, "empty"),
    # size 1 but the file ends before the 64-bit largesize
    (box(b"ftyp", b"isom", bytes(8)) + struct.pack(">I4s", 1, b"mdat") + b"\0\0", IncompleteVideo,
     "inside the header"),
    # largesize smaller than its own header
    (box(b"ftyp", b"isom", bytes(8)) + struct.pack(">I4sQ", 1, b"mdat", 8), DamagedVideo,
     "impossible size 8"),
    # 32-bit size smaller than a header
    (box(b"ftyp", b"isom", bytes(8)) + struct.pack(">I4s", 4, b"mdat") + bytes(8), DamagedVideo,
     "impossible size 4"),
    # a box claiming 4 GiB in a tiny file
    (box(b"ftyp", b"isom", bytes(8)) + struct.pack(">I4s", 0xFFFFFFFF, b"mdat") + bytes(10),
     IncompleteVideo, "more bytes than the file has"),
    # largesize claiming 2**64-1 bytes
    (box(b"ftyp", b"isom", bytes(8)) + struct.pack(">I4sQ", 1, b"moov", 2**64 - 1),
     IncompleteVideo, "'moov' box needs"),
    # no moov at all
    (box(b"ftyp", b"isom", bytes(8)) + box(b"free", bytes(20)) + box(b"mdat", bytes(40)),
     IncompleteVideo, "no 'moov' box"),
    # a child running past its parent
    (box(b"ftyp", b"isom", bytes(8)) + box(b"moov", struct.pack(">I4s", 500, b"trak")),
     DamagedVideo, "past the end of its parent"),
    # garbage where the second box should be
    (box(b"ftyp", b"isom", bytes(8)) + b"\x00\x00\x00\x10\x01\x02\x03\x04" + bytes(8),
     DamagedVideo, "unexpected bytes"),
])
def test_hostile_mp4(data: bytes, error: type[MediaError], words: str) -> None:
    with pytest.raises(error, match=words):
        probe_bytes(data)


def test_trailing_junk_after_a_complete_file_is_tolerated() -> None:
    data = mp4(trak()) + b"\x00\x00\x00\x00\xde\xad\xbe\xef" + bytes(5)
    assert probe_bytes(data).width == 640


def test_deep_nesting_does_not_recurse() -> None:
    inner = box(b"trak", box(b"trak", trak()))  # traks inside traks are not descended
    for _ in range(5000):
        inner = box(b"moov", inner)
    with pytest.raises(NoVideoTrack):
        probe_bytes(box(b"ftyp", b"isom", bytes(8)) + inner)


def test_millions_of_tiny_boxes_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_common, "MAX_ITEMS", 1000)
    data = box(b"ftyp", b"isom", bytes(8)) + box(b"moov", box(b"free") * 5000)
    with pytest.raises(DamagedVideo, match="more than 1000 parts"):
        probe_bytes(data)


def test_many_top_level_boxes_after_moov_are_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long fragmented MP4 has thousands of moof/mdat pairs after the moov: not an error."""
    monkeypatch.setattr(media_common, "MAX_ITEMS", 1000)
    data = mp4(trak()) + (box(b"moof", bytes(8)) + box(b"mdat", bytes(8))) * 2000
    assert probe_bytes(data).width == 640


# --- synthetic WebM --------------------------------------------------------------------------

def vsize(n: int, length: int | None = None) -> bytes:
    length = length or next(k for k in range(1, 9) if n < (1 << (7 * k)) - 1)
    return ((1 << (7 * length)) | n).to_bytes(length, "big")


UNKNOWN = b"\x01\xff\xff\xff\xff\xff\xff\xff"


def el(eid: int, *payload: bytes, unknown: bool = False) -> bytes:
    body = b"".join(payload)
    ident = eid.to_bytes((eid.bit_length() + 7) // 8, "big")
    return ident + (UNKNOWN if unknown else vsize(len(body))) + body


def uint(eid: int, value: int) -> bytes:
    return el(eid, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def track(ttype: int = 1, w: int = 640, h: int = 360) -> bytes:
    video = el(0xE0, uint(0xB0, w), uint(0xBA, h)) if ttype == 1 else b""
    return el(0xAE, uint(0xD7, 1), uint(0x83, ttype), video)


def webm(*tracks: bytes, doctype: bytes = b"webm", segment_unknown: bool = False,
         cluster_first: bool = False, cluster_unknown: bool = False,
         duration: float | None = 2500.0, extra: bytes = b"") -> bytes:
    header = el(0x1A45DFA3, uint(0x4286, 1), el(0x4282, doctype), uint(0x4287, 4))
    info = el(0x1549A966, uint(0x2AD7B1, 1_000_000),
              el(0x4489, struct.pack(">d", duration)) if duration is not None else b"")
    cluster = el(0x1F43B675, uint(0xE7, 0), el(0xA3, bytes(30)), unknown=cluster_unknown)
    tracks_el = el(0x1654AE6B, *(tracks or (track(),)))
    body = info + (cluster + tracks_el if cluster_first else tracks_el + cluster) + extra
    return header + el(0x18538067, body, unknown=segment_unknown)


def test_webm_synthetic_basics() -> None:
    info = probe_bytes(webm(), "x.webm")
    assert info == VideoInfo("webm", 640, 360, 0, 2.5)
    assert probe_bytes(webm(duration=None)).duration_s is None
    assert probe_bytes(webm(doctype=b"matroska")).container == "webm"  # .mkv-in-.webm: accepted


def test_webm_picks_the_video_track() -> None:
    assert probe_bytes(webm(track(2), track(1, 1280, 720))).width == 1280


def test_webm_unknown_sizes() -> None:
    """Live/streamed WebM: Segment and Cluster of unknown size, even a cluster before Tracks."""
    assert probe_bytes(webm(segment_unknown=True, cluster_unknown=True)).width == 640
    data = webm(segment_unknown=True, cluster_unknown=True, cluster_first=True)
    assert probe_bytes(data).height == 360


@pytest.mark.parametrize("data, error, words", [
    (webm(doctype=b"mka-ish"), NotAVideo, "EBML file of type 'mka-ish'"),
    (webm(track(2)), NoVideoTrack, "tracks: audio"),
    (webm()[:-20], IncompleteVideo, "more bytes than the file has"),
    (webm()[:30], IncompleteVideo, "incomplete"),
    (webm(track(1, 0, 0)), DamagedVideo, "picture size"),
    # header of unknown size
    (b"\x1a\x45\xdf\xa3" + UNKNOWN + b"\x42\x82\x84webm", DamagedVideo, "EBML header"),
    # header claiming a huge size
    (b"\x1a\x45\xdf\xa3" + vsize(10**9, 8) + b"\x42\x82\x84webm", DamagedVideo, "EBML header"),
    # a zero byte where an element ID starts (varint longer than 8 bytes)
    (el(0x1A45DFA3, el(0x4282, b"webm")) + b"\x00" * 16, DamagedVideo, "not valid EBML"),
    # an ID 5 bytes long
    (el(0x1A45DFA3, el(0x4282, b"webm")) + b"\x08\x01\x02\x03\x04\x81\x00", DamagedVideo,
     "ID at offset"),
    # an integer 9 bytes long
    (webm(el(0xAE, el(0x83, bytes(9)))), DamagedVideo, "longer than 8 bytes"),
    # no Segment
    (el(0x1A45DFA3, el(0x4282, b"webm")) + el(0xEC, bytes(4)), IncompleteVideo, "no Segment"),
    # no Tracks
    (el(0x1A45DFA3, el(0x4282, b"webm")) + el(0x18538067, el(0x1549A966)), DamagedVideo,
     "no track list"),
    # unknown-size element inside an unknown-size element
    (el(0x1A45DFA3, el(0x4282, b"webm")) + el(0x18538067, el(
        0x1F43B675, el(0xA0, b"x", unknown=True), unknown=True), unknown=True), DamagedVideo,
     "nested elements of unknown size"),
])
def test_hostile_webm(data: bytes, error: type[MediaError], words: str) -> None:
    with pytest.raises(error, match=words):
        probe_bytes(data, "x.webm")


def test_webm_huge_cluster_is_skipped_not_read() -> None:
    """A 1 TiB cluster before Tracks is skipped by its size."""
    header = el(0x1A45DFA3, el(0x4282, b"webm"))
    huge = 1 << 40
    cluster_hdr = (0x1F43B675).to_bytes(4, "big") + vsize(huge, 8)
    tracks = el(0x1654AE6B, track())
    seg_len = len(cluster_hdr) + huge + len(tracks)
    seg_hdr = (0x18538067).to_bytes(4, "big") + vsize(seg_len, 8)
    total = len(header) + len(seg_hdr) + seg_len
    pieces = [(0, header + seg_hdr + cluster_hdr), (total - len(tracks), tracks)]
    info = probe_video(SparseFile(total, pieces), total)  # type: ignore[arg-type]
    assert (info.width, info.height) == (640, 360)


def test_ebml_element_count_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_common, "MAX_ITEMS", 500)
    many_voids = el(0xEC) * 2000
    header = el(0x1A45DFA3, el(0x4282, b"webm"))
    with pytest.raises(DamagedVideo, match="more than 500 parts"):
        probe_bytes(header + el(0x18538067, many_voids, el(0x1654AE6B, track())))


# --- not a video at all ----------------------------------------------------------------------

@pytest.mark.parametrize("data, words", [
    (b"Hello, this is my script, not a video.\n", 'text ("Hello, this is my script'),
    ("大家好，这是文稿".encode(), 'text ("大家好'),
    ("大家好，这是文稿".encode("gbk"), 'text ("大家好'),
    (b"\x47" + bytes(187) + b"\x47" + bytes(10), "an MPEG transport stream"),
    (b"<!DOCTYPE html><html>", "HTML"),
    (b'{"speed": 1.2}', "JSON"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "a PNG image"),
    (b"%PDF-1.7\n", "a PDF document"),
    (b"PK\x03\x04\x14\x00", "a ZIP archive"),
    (b"RIFF\x00\x00\x00\x00AVI LIST", "an AVI video (convert it to MP4)"),
    (b"ID3\x04\x00", "MP3 audio"),
    (b"\xff\xfb\x90\x64" + bytes(20), "MP3 audio"),
    (b"\x00\x01\x02\x03\x04\x05\x06\x07\x08", "unknown binary data (starts with 00 01 02"),
    (b"\n\n   \n", "blank text"),
])
def test_not_a_video_says_what_it_looks_like(data: bytes, words: str) -> None:
    with pytest.raises(NotAVideo) as exc:
        probe_bytes(data, "clip.mp4")
    assert words in str(exc.value)
    assert "MP4, MOV and WebM" in str(exc.value)
    assert isinstance(exc.value, InputError) and exc.value.path == "clip.mp4"


def test_describe_bytes_ftyp_brand() -> None:
    assert describe_bytes(b"\x00\x00\x00\x18ftypheic") == "an ISO media file of brand 'heic'"
    assert describe_bytes(b"") == "nothing (0 bytes)"


def test_probe_path_unreadable(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="cannot read the video"):
        probe_path(tmp_path / "missing.mp4")
    with pytest.raises(MediaError, match="cannot read the video"):
        probe_path(tmp_path)  # a directory
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(EmptyFile, match=r"empty \(0 bytes\)"):
        probe_path(tmp_path / "empty.mp4")


# --- audio sniffing --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["speech.wav", "speech.mp3", "speech.m4a"])
def test_sniff_audio_fixtures(name: str) -> None:
    head = (MEDIA / name).read_bytes()[:64]
    ext = name.rsplit(".", 1)[1]
    sniff_audio(head, ext)
    sniff_audio(head, "." + ext.upper())  # case and dot do not matter


@pytest.mark.parametrize("head, ext, ok", [
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav", True),
    (b"RF64\xff\xff\xff\xffWAVEds64", "wav", True),
    (b"RIFF\x24\x00\x00\x00AVI LIST", "wav", False),
    (b"\xff\xfb\x90\x64\x00", "mp3", True),  # MPEG-1 layer III frame, no ID3 tag
    (b"\xff\xf3\x48\xc4\x00", "mp3", True),  # MPEG-2 layer III
    (b"\xff\xfb\xf0\x64\x00", "mp3", False),  # bitrate index 15 is invalid
    (b"\xff\xea\x90\x64\x00", "mp3", False),  # MPEG version bits 01: reserved
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "mp3", False),  # a JPEG: FF D8 is not a frame sync
    (b"\x00\x00\x00\x20ftypM4A ", "m4a", True),
    (b"hello world", "m4a", False),
])
def test_sniff_audio_table(head: bytes, ext: str, ok: bool) -> None:
    if ok:
        sniff_audio(head, ext)
    else:
        with pytest.raises(BadAudio, match=f"is not {ext.upper()} audio"):
            sniff_audio(head, ext, name=f"voice.{ext}")


def test_sniff_audio_messages() -> None:
    mp3 = (MEDIA / "speech.mp3").read_bytes()[:64]
    with pytest.raises(BadAudio) as exc:
        sniff_audio(mp3, "wav", name="voice.wav")
    assert "it looks like MP3 audio" in str(exc.value) and "Rename it" in str(exc.value)
    assert exc.value.path == "voice.wav"
    with pytest.raises(EmptyFile):
        sniff_audio(b"", "mp3", name="voice.mp3")
    with pytest.raises(ValueError):
        sniff_audio(b"RIFF", "ogg")


# --- hygiene ---------------------------------------------------------------------------------

@pytest.mark.parametrize("package", ["media", "pairing"])
def test_stdlib_only(package: str) -> None:
    for path in (ROOT / "hotfolder" / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "hotfolder", (path, name)
                assert name in ("hotfolder.errors",) or not name.startswith("hotfolder.") or \
                    name.startswith(f"hotfolder.{package}"), (path, name)
