"""hotfolder.pairing: pure input rules, fed samples (no file system)."""

from __future__ import annotations

import json
import random
import unicodedata

import pytest

from hotfolder.errors import InputError
from hotfolder.pairing import (
    API_AUDIO_EXTS,
    API_VIDEO_EXTS,
    AUDIO_EXTS,
    CONVERTIBLE_AUDIO_EXTS,
    CONVERTIBLE_VIDEO_EXTS,
    LIPSYNC_FIELDS,
    MAX_SIDECAR_BYTES,
    MAX_TEXT_CHARS,
    VIDEO_EXTS,
    Ambiguous,
    Orphan,
    OverrideError,
    PairingResult,
    Ready,
    SettleTracker,
    Waiting,
    api_format_problem,
    classify,
    decode_script,
    find_emoji,
    is_ignored,
    pair,
    split_name,
    validate_lipsync,
    validate_overrides,
)

# --- is_ignored ------------------------------------------------------------------------------

IGNORED = [
    # path, expected words in the reason (None: may be taken)
    ("clip.mp4", None),
    ("sub/dir/clip.mp4", None),
    ("./clip.mp4", None),
    ("My Clip (final) v2.mp4", None),
    ("视频 一/讲解 第1段.txt", None),
    ("tmp/clip.mp4", None),  # a folder called tmp is just a folder
    ("clip.tmp.mp4", None),  # only the last suffix counts
    ("clip.error.json", None),  # decision: not ignored, see pairing/names.py
    ("@eaDir", None),  # a *file* of that name is merely "other"
    (".clip.mp4", "hidden file"),
    ("._clip.mp4", "hidden file"),  # macOS AppleDouble
    (".clip.mp4.a1b2c3", "hidden file"),  # rsync temp
    (".hidden/clip.mp4", "hidden folder (.hidden)"),
    ("a/.git/x.txt", "hidden folder (.git)"),
    (".stversions/clip.mp4", "hidden folder"),
    (".Trash-1000/files/clip.mp4", "hidden folder"),
    (".stfolder", "hidden file"),
    (".DS_Store", "macOS folder settings"),
    ("sub/Thumbs.db", "Windows thumbnail cache"),
    ("THUMBS.DB", "Windows thumbnail cache"),
    ("desktop.ini", "Windows folder settings"),
    ("Icon\r", "macOS folder icon"),
    ("~$script.docx", "Microsoft Office lock file"),
    (".~lock.script.txt#", "LibreOffice lock file"),
    ("~syncthing~clip.mp4.tmp", "Syncthing"),
    (".syncthing.clip.mp4.tmp", "Syncthing"),
    ("clip.mp4.part", "*.part"),
    ("clip.MP4.PART", "*.part"),
    ("clip.partial", "*.partial"),
    ("clip.tmp", "*.tmp"),
    ("clip.temp", "*.temp"),
    ("clip.mp4.crdownload", "*.crdownload"),
    ("clip.mp4.download", "*.download"),
    ("clip.mp4.opdownload", "*.opdownload"),
    ("clip.mp4.!ut", "*.!ut"),
    ("clip.mp4.!qB", "*.!qb"),
    ("clip.mp4.filepart", "*.filepart"),
    ("clip.txt.swp", "*.swp"),
    ("clip.txt~", "editor backup"),
    ("@eaDir/clip.mp4/SYNOFILE_THUMB_M.jpg", "Synology thumbnail folder"),
    ("sub/@eaDir/clip.mp4", "Synology"),
    ("#recycle/clip.mp4", "Synology recycle bin"),
    ("#snapshot/daily/clip.mp4", "Synology snapshot"),
    ("@Recycle/clip.mp4", "QNAP recycle bin"),
    (".@__thumb/clip.mp4", "hidden folder"),
    ("$RECYCLE.BIN/S-1-5/clip.mp4", "Windows recycle bin"),
    ("System Volume Information/x.txt", "Windows system folder"),
    ("lost+found/#1234", "recovery folder"),
    ("../clip.mp4", "outside the inbox"),
    ("", "not a file name"),
]


@pytest.mark.parametrize("path, words", IGNORED)
def test_is_ignored(path: str, words: str | None) -> None:
    reason = is_ignored(path)
    if words is None:
        assert reason is None
    else:
        assert reason is not None and words in reason


@pytest.mark.parametrize("name, kind", [
    ("a.mp4", "video"), ("A.MOV", "video"), ("x.WebM", "video"), ("dir/x.mov", "video"),
    ("x.txt", "text"), ("x.TXT", "text"),
    ("x.wav", "audio"), ("x.Mp3", "audio"), ("x.M4A", "audio"),
    ("x.json", "overrides"), ("x.JSON", "overrides"),
    # formats the API does not take are still video/audio (intake fails them with a message)
    ("x.mkv", "video"), ("x.AVI", "video"), ("x.m4v", "video"), ("x.mpg", "video"),
    ("x.MPEG", "video"), ("x.ts", "video"), ("x.wmv", "video"), ("x.flv", "video"),
    ("x.3gp", "video"),
    ("x.flac", "audio"), ("x.ogg", "audio"), ("x.OPUS", "audio"), ("x.aac", "audio"),
    ("x.wma", "audio"), ("x.amr", "audio"), ("x.aiff", "audio"), ("x.AIF", "audio"),
    ("x.srt", "other"), ("x.mp2", "other"), ("README", "other"), (".mp4", "other"),
    (".ogg", "other"), ("x.tar.gz", "other"), ("dir.mp4/clip", "other"), ("x.mp4.part", "other"),
    ("x.mkv.part", "other"),
])
def test_classify(name: str, kind: str) -> None:
    assert classify(name) == kind


@pytest.mark.parametrize("path, parts", [
    ("a/b/Clip.Final.MP4", ("a/b", "Clip.Final", "mp4")),
    ("clip.mp4", ("", "clip", "mp4")),
    ("README", ("", "README", "")),
    ("a/.profile", ("a", ".profile", "")),
])
def test_split_name(path: str, parts: tuple[str, str, str]) -> None:
    assert split_name(path) == parts


# --- pair ------------------------------------------------------------------------------------

PAIRS = [
    # files, expected ready, waiting videos, ambiguous videos, orphans
    (["clip.mp4", "clip.txt"], [Ready("clip.mp4", "clip.txt", "text")], [], [], []),
    (["CLIP.MP4", "CLIP.txt"], [Ready("CLIP.MP4", "CLIP.txt", "text")], [], [], []),
    (["a.mov", "a.M4A"], [Ready("a.mov", "a.M4A", "audio")], [], [], []),
    (["a.webm", "a.mp3"], [Ready("a.webm", "a.mp3", "audio")], [], [], []),
    (["a.mp4", "a.wav", "a.JSON"], [Ready("a.mp4", "a.wav", "audio", "a.JSON")], [], [], []),
    (["x/c.mp4", "x/c.txt", "y/c.mp4", "y/c.wav"],
     [Ready("x/c.mp4", "x/c.txt", "text"), Ready("y/c.mp4", "y/c.wav", "audio")], [], [], []),
    (["x/clip.mp4", "y/clip.txt"], [], ["x/clip.mp4"], [], ["y/clip.txt"]),  # no cross-folder
    (["X/clip.mp4", "x/clip.txt"], [], ["X/clip.mp4"], [], ["x/clip.txt"]),  # folders exact
    (["clip.mp4"], [], ["clip.mp4"], [], []),
    (["clip.txt"], [], [], [], ["clip.txt"]),
    (["clip.json"], [], [], [], ["clip.json"]),
    (["clip.wav", "clip.json"], [], [], [], ["clip.json", "clip.wav"]),
    (["d.mp4", "d.txt", "d.wav"], [], [], ["d.mp4"], []),
    (["d.mp4", "d.mp3", "d.wav"], [], [], ["d.mp4"], []),
    (["d.mp4", "d.txt", "d.TXT"], [], [], ["d.mp4"], []),
    (["a.mp4", "a.mov", "a.txt"], [], [], ["a.mov"], []),
    (["a.mp4", "a.webm"], [], [], ["a.mp4"], []),
    (["a.mp4", "a.txt", "a.json", "a.JSON"], [], [], ["a.mp4"], []),
    (["My Clip (v2).mp4", "My Clip (v2).txt", "视频 一.webm", "视频 一.mp3"],
     [Ready("My Clip (v2).mp4", "My Clip (v2).txt", "text"),
      Ready("视频 一.webm", "视频 一.mp3", "audio")], [], [], []),
    (["clip.final.mp4", "clip.final.txt"], [Ready("clip.final.mp4", "clip.final.txt", "text")],
     [], [], []),
    (["clip.mp4", "clip.final.txt"], [], ["clip.mp4"], [], ["clip.final.txt"]),
    (["Clip.mp4", "clip.txt"], [], ["Clip.mp4"], [], ["clip.txt"]),  # stems are case-sensitive
    (["a.mp4", "a.txt", "a.error.json"], [Ready("a.mp4", "a.txt", "text")], [], [],
     ["a.error.json"]),
    (["x.error.mp4", "x.error.txt", "x.error.json"],
     [Ready("x.error.mp4", "x.error.txt", "text", "x.error.json")], [], [], []),
    ([".clip.txt", "clip.mp4", "clip.txt.part", "@eaDir/clip.txt"], [], ["clip.mp4"], [], []),
    (["clip.mp4", "clip.txt", "clip.mp4", "clip.txt"], [Ready("clip.mp4", "clip.txt", "text")],
     [], [], []),
    # formats to convert pair like the native ones (intake then fails them, loudly)
    (["clip.mp4", "clip.ogg"], [Ready("clip.mp4", "clip.ogg", "audio")], [], [], []),
    (["clip.mkv", "clip.txt"], [Ready("clip.mkv", "clip.txt", "text")], [], [], []),
    (["c.AVI", "c.FLAC", "c.json"], [Ready("c.AVI", "c.FLAC", "audio", "c.json")], [], [], []),
    (["clip.mkv"], [], ["clip.mkv"], [], []),
    (["clip.opus"], [], [], [], ["clip.opus"]),
    (["clip.mp4", "clip.mkv", "clip.txt"], [], [], ["clip.mkv"], []),
    (["clip.mp4", "clip.wav", "clip.flac"], [], [], ["clip.mp4"], []),
]


@pytest.mark.parametrize("files, ready, waiting, ambiguous, orphans", PAIRS)
def test_pair(files: list[str], ready: list[Ready], waiting: list[str], ambiguous: list[str],
              orphans: list[str]) -> None:
    result = pair(files)
    assert list(result.ready) == ready
    assert [w.video for w in result.waiting] == waiting
    assert [a.video for a in result.ambiguous] == ambiguous
    assert [o.driver for o in result.orphans] == orphans
    shuffled = list(files)
    random.Random(0).shuffle(shuffled)
    assert pair(shuffled) == result  # order of the listing does not matter


def test_pair_nfd_and_nfc_names_pair() -> None:
    video = unicodedata.normalize("NFC", "café.mp4")
    text = unicodedata.normalize("NFD", "café.txt")
    assert video != text[:-4] + ".mp4"
    assert pair([video, text]).ready == (Ready(video, text, "text"),)


def test_ambiguous_reasons_name_the_files_and_what_to_do() -> None:
    two_drivers = pair(["s/d.mp4", "s/d.txt", "s/d.wav", "s/d.json"]).ambiguous[0]
    assert two_drivers.files == ("s/d.json", "s/d.mp4", "s/d.txt", "s/d.wav")
    assert two_drivers.reason == (
        "s/d.mp4 has 2 driver files: s/d.txt and s/d.wav; a job takes exactly one: keep either "
        "the .txt (text to speak) or one audio file (speech) and remove or rename the others")
    ogg = pair(["d.mp4", "d.wav", "d.ogg"]).ambiguous[0]
    assert "d.ogg and d.wav" in ogg.reason and ".m4a" not in ogg.reason  # no list to go stale
    two_videos = pair(["a.mp4", "a.mov"]).ambiguous[0]
    assert "a.mov and a.mp4" in two_videos.reason and "rename" in two_videos.reason
    three = pair(["e.mp4", "e.txt", "e.wav", "e.mp3"]).ambiguous[0]
    assert "e.mp3, e.txt and e.wav" in three.reason
    for group in (two_drivers, ogg, two_videos, three):
        assert "ambiguous" not in group.reason.lower()  # explain prints the verdict before it


def test_waiting_and_orphan_reasons() -> None:
    result = pair(["Clip.mp4", "clip.txt", "n.mp4", "n.json", "z.json", "q.error.json"])
    by_video = {w.video: w for w in result.waiting}
    assert by_video["Clip.mp4"].reason.startswith("no script or audio yet: drop Clip.txt")
    assert "clip.txt differs only in letter case: rename it to Clip.txt" in \
        by_video["Clip.mp4"].reason
    assert by_video["n.mp4"].overrides == "n.json"
    assert by_video["n.mp4"].reason == ("no script or audio yet: drop n.txt (text to speak) or "
                                        "n.wav, .mp3 or .m4a (speech) next to it")
    orphans = {o.driver: o.reason for o in result.orphans}
    assert "Clip.mp4 differs only in letter case" in orphans["clip.txt"]
    assert orphans["z.json"] == "no video of that name yet: drop z.mp4, .mov or .webm next to it"
    assert "error report" in orphans["q.error.json"]


def test_reasons_do_not_repeat_the_verdict() -> None:
    """`hotfolder explain` prints "<file>: <verdict>: <reason>": "waiting: waiting for…" and
    "orphan: … orphan" read badly, so reasons start with what is missing."""
    result = pair(["w.mp4", "w.json", "o.txt", "o.json", "sub/x.wav", "W.wav"])
    lines = [f"{w.video}: waiting: {w.reason}" for w in result.waiting]
    lines += [f"{o.driver}: orphan: {o.reason}" for o in result.orphans]
    assert len(lines) == 5  # w.mp4 (with w.json) waits; the other four are orphans
    for line in lines:
        verdict, reason = line.split(": ", 2)[1:]
        assert verdict not in reason.lower() and not reason.startswith("waiting"), line
        assert "drop" in reason or "rename" in reason  # says what to do


def test_reasons_of_convertible_files_are_the_usual_ones() -> None:
    # Intake converts such files (or fails the job at once without ffmpeg): pairing stays pure and
    # says only what is missing.
    result = pair(["team/v.mkv", "team/v.json", "a.ogg"])
    (waiting,) = result.waiting
    assert waiting.reason == "no script or audio yet: drop v.txt (text to speak) or v.wav, .mp3 or .m4a (speech) next to it"
    (orphan,) = result.orphans
    assert orphan.reason.startswith("no video of that name yet: drop a.mp4, .mov or .webm")
    assert "Chanjing" not in waiting.reason + orphan.reason


# --- formats the API takes -------------------------------------------------------------------

def test_format_constants() -> None:
    assert API_VIDEO_EXTS == {"mp4", "mov", "webm"}
    assert API_AUDIO_EXTS == {"wav", "mp3", "m4a"}
    assert CONVERTIBLE_VIDEO_EXTS == {"mkv", "avi", "m4v", "mpg", "mpeg", "ts", "wmv", "flv",
                                      "3gp"}
    assert CONVERTIBLE_AUDIO_EXTS == {"flac", "ogg", "opus", "aac", "wma", "amr", "aiff", "aif"}
    assert VIDEO_EXTS == API_VIDEO_EXTS | CONVERTIBLE_VIDEO_EXTS
    assert AUDIO_EXTS == API_AUDIO_EXTS | CONVERTIBLE_AUDIO_EXTS
    assert not VIDEO_EXTS & AUDIO_EXTS


@pytest.mark.parametrize("name", ["clip.mp4", "CLIP.MOV", "a/b.webm", "x.wav", "x.MP3", "x.m4a",
                                  "x.txt", "x.json", "x.srt", "README", ".ogg", "dir.mkv/x"])
def test_api_format_problem_none(name: str) -> None:
    assert api_format_problem(name) is None


def test_api_format_problem_message() -> None:
    assert api_format_problem("clip.ogg") == (
        "clip.ogg is Ogg audio, which the Chanjing API does not take (it takes audio .wav, .mp3, "
        ".m4a and video .mp4, .mov, .webm): convert it, e.g. `ffmpeg -i clip.ogg clip.wav`")
    assert api_format_problem("team/a/Clip.MKV") == (
        "team/a/Clip.MKV is Matroska video, which the Chanjing API does not take (it takes audio "
        ".wav, .mp3, .m4a and video .mp4, .mov, .webm): convert it, e.g. "
        "`ffmpeg -i Clip.MKV Clip.mp4`")
    # a name a shell would split is quoted, so the command can be pasted
    assert '`ffmpeg -i "My Clip (v2).flac" "My Clip (v2).wav"`' in \
        (api_format_problem("in/My Clip (v2).flac") or "")
    assert "`ffmpeg -i 讲解.amr 讲解.wav`" in (api_format_problem("讲解.amr") or "")


@pytest.mark.parametrize("ext", sorted(CONVERTIBLE_VIDEO_EXTS | CONVERTIBLE_AUDIO_EXTS))
def test_api_format_problem_every_convertible(ext: str) -> None:
    message = api_format_problem(f"sub/clip.{ext}")
    assert message is not None
    kind = "video" if ext in CONVERTIBLE_VIDEO_EXTS else "audio"
    target = "mp4" if kind == "video" else "wav"
    assert message.startswith(f"sub/clip.{ext} is ") and f" {kind}, which the" in message
    assert f"`ffmpeg -i clip.{ext} clip.{target}`" in message
    assert api_format_problem(f"clip.{ext.upper()}") is not None


def test_groups_lists_every_outcome_in_path_order() -> None:
    result = pair(["b.mp4", "b.txt", "a.mp4", "c.txt", "d.mp4", "d.mov", "e.json", "x.pdf"])
    assert [type(g).__name__ for g in result.groups] == \
        ["Waiting", "Ready", "Orphan", "Ambiguous", "Orphan"]
    assert pair([]).groups == ()


def test_pair_reports_ignored_and_others() -> None:
    result = pair(["clip.mp4", "clip.srt", "notes.docx", ".DS_Store", "clip.txt.part"])
    assert result.others == ("clip.srt", "notes.docx")
    assert [p for p, _ in result.ignored] == [".DS_Store", "clip.txt.part"]
    assert pair([]) == PairingResult()


def test_ready_inputs() -> None:
    assert Ready("a.mp4", "a.txt", "text").inputs == ("a.mp4", "a.txt")
    assert Ready("a.mp4", "a.txt", "text", "a.json").inputs == ("a.mp4", "a.txt", "a.json")
    assert isinstance(pair(["a.mp4"]).waiting[0], Waiting)
    assert isinstance(pair(["a.mp4", "a.mov"]).ambiguous[0], Ambiguous)
    assert isinstance(pair(["a.txt"]).orphans[0], Orphan)


# --- settling --------------------------------------------------------------------------------

SETTLE = [
    # settle_seconds, observations (now, size, mtime), expected settled() after each
    (5, [(0, 10, 1), (3, 10, 1), (5, 10, 1)], [False, False, True]),
    (5, [(0, 10, 1), (2, 20, 2), (4, 30, 3), (6, 30, 3), (8, 30, 3), (9, 30, 3)],
     [False, False, False, False, False, True]),
    (5, [(0, 10, 1), (5, 10, 2), (9, 10, 2), (10, 10, 2)], [False, False, False, True]),  # mtime
    (5, [(0, 10, 1), (5, 11, 1), (10, 11, 1)], [False, False, True]),  # size only
    (5, [(0, 10, 1), (6, 10, 1), (7, 12, 1)], [False, True, False]),  # changed after settling
    # the clock went back: start again
    (5, [(10, 10, 1), (16, 10, 1), (3, 10, 1), (9, 10, 1)], [False, True, False, True]),
    (0, [(0, 0, 0)], [True]),
    (2.5, [(0.0, 5, 5), (2.4, 5, 5), (2.5, 5, 5)], [False, False, True]),
]


@pytest.mark.parametrize("seconds, observations, expected", SETTLE)
def test_settle_sequences(seconds: float, observations: list[tuple[float, int, int]],
                          expected: list[bool]) -> None:
    tracker = SettleTracker(seconds)
    got = []
    for now, size, mtime in observations:
        tracker.observe("clip.mp4", size, mtime, now)
        got.append(tracker.settled("clip.mp4", now))
    assert got == expected


def test_settle_needs_a_second_look() -> None:
    """Time passing is not evidence: without a new observation the file is not settled."""
    tracker = SettleTracker(5)
    tracker.observe("a", 10, 1, now=0)
    assert not tracker.settled("a", now=100)
    assert tracker.remaining("a", now=100) == 0
    tracker.observe("a", 10, 1, now=100)
    assert tracker.settled("a", now=100)
    assert not tracker.settled("a", now=99)  # a verdict from the future is not trusted


def test_settle_forget_retain_and_bookkeeping() -> None:
    tracker = SettleTracker(5)
    for path in ("a", "b", "c"):
        tracker.observe(path, 1, 1, now=0)
    tracker.observe("a", 1, 1, now=6)
    assert tracker.settled("a", 6) and not tracker.settled("b", 6)
    tracker.forget("a")
    assert "a" not in tracker and not tracker.settled("a", 7)
    tracker.observe("a", 1, 1, now=7)  # came back: starts afresh
    assert not tracker.settled("a", 7) and tracker.remaining("a", 7) == 5
    tracker.forget_missing(["a", "b"])
    assert "c" not in tracker and len(tracker) == 2
    assert tracker.remaining("zzz", 0) is None
    tracker.forget("zzz")  # unknown: no error
    assert tracker.next_due(8) == 0  # b could be settled now (needs a look)
    tracker.observe("b", 1, 1, now=8)
    assert tracker.next_due(8) == 4  # only a is left, due at 12
    tracker.observe("a", 1, 1, now=12)
    assert tracker.next_due(12) is None
    with pytest.raises(ValueError):
        SettleTracker(-1)


# --- decode_script ---------------------------------------------------------------------------

CHINESE = "大家好，欢迎观看我们的产品演示。"
DECODE_OK = [
    ("ascii", b"hello world", "hello world"),
    ("utf-8", "Hello 你好".encode(), "Hello 你好"),
    ("utf-8 BOM", b"\xef\xbb\xbf" + CHINESE.encode(), CHINESE),
    ("utf-8 double BOM", b"\xef\xbb\xbf\xef\xbb\xbfhi", "hi"),
    ("utf-16 LE BOM", b"\xff\xfe" + "你好 world\r\n".encode("utf-16-le"), "你好 world"),
    ("utf-16 BE BOM", b"\xfe\xff" + "你好 world".encode("utf-16-be"), "你好 world"),
    ("utf-16 via codec", "第一行\r\n第二行".encode("utf-16"), "第一行\n第二行"),
    ("utf-32 LE BOM", b"\xff\xfe\x00\x00" + "你好".encode("utf-32-le"), "你好"),
    ("utf-32 BE BOM", b"\x00\x00\xfe\xff" + "你好".encode("utf-32-be"), "你好"),
    ("GBK", CHINESE.encode("gbk"), CHINESE),
    ("GB2312", "简体中文测试".encode("gb2312"), "简体中文测试"),
    ("GB18030 4-byte", "欢迎ǹ€".encode("gb18030"), "欢迎ǹ€"),
    ("GBK + CRLF", "第一行\r\n第二行\r\n".encode("gbk"), "第一行\n第二行"),
    # Genuine GBK/GB18030 passes the plausibility rule, short scripts included.
    ("GBK short", "你好，世界。".encode("gbk"), "你好，世界。"),
    ("GBK one line of 8", "欢迎使用本产品！".encode("gbk"), "欢迎使用本产品！"),
    ("GBK 7", "今天天气很好。".encode("gbk"), "今天天气很好。"),
    ("GBK two chars", "你好".encode("gbk"), "你好"),
    ("GBK + ASCII", "第1段：iPhone 15 发布会，价格5999元。".encode("gbk"),
     "第1段：iPhone 15 发布会，价格5999元。"),
    ("GBK quotes, book title", "他说：“《红楼梦》是四大名著之一。”".encode("gbk"),
     "他说：“《红楼梦》是四大名著之一。”"),
    ("GBK units", "温度：25℃，湿度：60%。".encode("gbk"), "温度：25℃，湿度：60%。"),
    ("GBK-only char (name)", "朱镕基总理讲话。".encode("gbk"), "朱镕基总理讲话。"),
    ("GBK-only char, 5 chars", "朱镕基讲话".encode("gbk"), "朱镕基讲话"),
    ("GBK Greek letter", "本产品富含β-胡萝卜素，有益健康。".encode("gbk"),
     "本产品富含β-胡萝卜素，有益健康。"),
    ("GBK pinyin", "今天学习拼音：lǜ sè 是绿色。".encode("gbk"), "今天学习拼音：lǜ sè 是绿色。"),
    ("GB18030 Korean (4-byte)", "韩国歌手가수来北京演出。".encode("gb18030"),
     "韩国歌手가수来北京演出。"),
    ("GB18030 euro", "价格：€100，约合人民币780元。".encode("gb18030"),
     "价格：€100，约合人民币780元。"),
    ("GBK long", ("各位观众朋友们，大家好！欢迎收看今天的节目。我们公司成立于2008年，总部位于上海。"
                  "\r\n").encode("gbk") * 20,
     ("各位观众朋友们，大家好！欢迎收看今天的节目。我们公司成立于2008年，总部位于上海。\n" * 20)
     .strip()),
    ("CRLF", b"line1\r\nline2\r\n", "line1\nline2"),
    ("CR", b"line1\rline2\r", "line1\nline2"),
    ("mixed", b"a\r\nb\rc\nd", "a\nb\nc\nd"),
    ("CRCRLF", b"a\r\r\nb", "a\n\nb"),
    ("trim", b"  \n\t hello world \n\n", "hello world"),
    ("ideographic space", "\u3000你好\u3000".encode(), "你好"),
    ("inner space kept", b"a  b\n\n c\td", "a  b\n\n c\td"),
    ("DOS EOF", b"hello\r\n\x1a", "hello"),
    ("not emoji", "你好，世界。「引号」【括号】《书名》——……～、；：？！".encode(),
     "你好，世界。「引号」【括号】《书名》——……～、；：？！"),
    ("symbols", "★☆♪©®™→●○■□▲◆※〒①②③℃¥·±×÷≈∞ＡＢＣ１２３".encode(),
     "★☆♪©®™→●○■□▲◆※〒①②③℃¥·±×÷≈∞ＡＢＣ１２３"),
    ("other scripts", "こんにちは 안녕하세요 Привет مرحبا 𠀀".encode(),
     "こんにちは 안녕하세요 Привет مرحبا 𠀀"),
    ("4000 chars", ("好" * MAX_TEXT_CHARS).encode(), "好" * MAX_TEXT_CHARS),
    ("4000 + whitespace", (" \n" + "a" * MAX_TEXT_CHARS + "\r\n ").encode(),
     "a" * MAX_TEXT_CHARS),
    ("counted after CRLF", b"a\r\n" * 2000, ("a\n" * 2000).strip()),
]


@pytest.mark.parametrize("label, raw, text", DECODE_OK, ids=[c[0] for c in DECODE_OK])
def test_decode_script_ok(label: str, raw: bytes, text: str) -> None:
    assert decode_script(raw, "clip.txt") == text


DECODE_BAD = [
    ("empty", b"", "is empty: write the text to speak"),
    ("blank", b"  \r\n\t\r\n", "is empty"),
    ("BOM only", b"\xef\xbb\xbf", "is empty"),
    ("UTF-16 BOM only", b"\xff\xfe", "is empty"),
    ("BOM + blank", b"\xef\xbb\xbf \r\n" + "\u3000".encode(), "is empty"),
    ("4001 chars", ("好" * (MAX_TEXT_CHARS + 1)).encode(), "has 4001 characters; the API takes at "
     "most 4000"),
    ("huge", b"a" * (MAX_SIDECAR_BYTES + 1), "larger than"),
    ("invalid", b"\xff\xff\xff", "byte 0xFF at offset 0 is neither UTF-8 nor GB18030"),
    ("invalid late", b"abc\x80", "byte 0x80 at offset 3"),
    ("latin-1", "café".encode("latin-1"), "not UTF-8 (byte 0xE9 at offset 3 is not valid UTF-8) "
     'and it looks like Windows-1252/Latin-1 (Western European) text: "café"'),
    ("UTF-16 odd", b"\xff\xfe" + "hi".encode("utf-16-le") + b"\x00", "UTF-16-LE byte-order mark"),
    ("UTF-16 no BOM", "hello".encode("utf-16-le"), "UTF-16 without a byte-order mark"),
    ("NUL", b"abc\x00def", "NUL bytes"),
    ("bell", b"a\x07b", "control character U+0007 at line 1, column 2"),
    ("form feed", b"a\n\x0cb", "U+000C at line 2, column 1"),
    ("emoji", "Hello 😀 world".encode(), "emoji 😀 (U+1F600) at line 1, column 7 (character 7)"),
    ("emoji line 2", "第一行\n第二行👍".encode("utf-8"), "U+1F44D) at line 2, column 4"),
    ("emoji GBK impossible, UTF-16", b"\xff\xfe" + "ok 🎉".encode("utf-16-le"), "U+1F389"),
    ("heart + VS16", "我❤️你".encode(), "emoji ❤️ (U+2764 U+FE0F) at line 1, column 2"),
    ("star emoji", "好⭐".encode(), "U+2B50"),
    ("check mark", "完成✅".encode(), "U+2705"),
    ("flag", "中国🇨🇳".encode(), "U+1F1E8"),
    ("keycap", "第1️⃣名".encode(), "U+0031 U+FE0F"),
    ("ZWJ family", "a👨‍👩‍👧".encode(), "U+1F468"),
    ("skin tone", "👋🏽".encode(), "U+1F44B"),
]


@pytest.mark.parametrize("label, raw, words", DECODE_BAD, ids=[c[0] for c in DECODE_BAD])
def test_decode_script_rejects(label: str, raw: bytes, words: str) -> None:
    with pytest.raises(InputError) as exc:
        decode_script(raw, "in/clip.txt")
    assert words in str(exc.value)
    assert "in/clip.txt" in str(exc.value) and exc.value.path == "in/clip.txt"
    assert exc.value.code == "bad_input"


# Scripts in other legacy encodings: GB18030 would decode most of them into Chinese nonsense
# (naïve → na飗e) that would be spoken and billed; each must be refused with a useful guess.
WESTERN = "Windows-1252/Latin-1 (Western European) text"
JAPANESE = "Shift-JIS (Japanese) text"
BIG5 = "Big5 (Traditional Chinese) text"
FOREIGN = [
    ("cp1252", "naïve über café", WESTERN),
    ("cp1252", "Bonjour à tous, bienvenue à notre présentation. Le café est prêt.", WESTERN),
    ("cp1252", "Herr Müller erklärt heute die Änderungen für unsere Kunden.", WESTERN),
    ("cp1252", "Grüß Gott! Die Straße ist für Fußgänger gesperrt.", WESTERN),
    ("cp1252", "“Willkommen” – sagte er … es kostet 5 €", WESTERN),
    ("cp1252", "Situação", WESTERN),  # reads as GB2312 "Situa玢o": one plausible hanzi
    ("cp1252", "¡Hola! ¿Cómo estás? Mañana vamos a la reunión.", WESTERN),
    ("latin-1", "Schöne Grüße aus München, wir freuen uns auf Ihren Besuch.", WESTERN),
    ("latin-1", "Ça coûte très cher, n'est-ce pas ? Élève, garçon, déjà vu.", WESTERN),
    ("latin-1", "Smörgåsbord är en svensk måltid.", WESTERN),
    ("shift_jis", "こんにちは、世界。今日はいい天気ですね。", JAPANESE),
    ("shift_jis", "本日は新製品のご紹介をいたします。", JAPANESE),
    ("shift_jis", "コーヒーを飲みましょう。", JAPANESE),
    ("shift_jis", "ありがとう", JAPANESE),
    ("cp932", "明日の会議は午後三時からです。よろしくお願いします。", JAPANESE),
    ("big5", "大家好，歡迎觀看我們的產品演示。", BIG5),
    ("big5", "今天天氣很好，我們一起去公園散步吧。", BIG5),
    ("big5", "感謝您的支持與鼓勵，我們會繼續努力。", BIG5),
    ("big5", "歡迎光臨", BIG5),
    ("big5", "臺灣", BIG5),  # its cp1252 reading "»OÆW" must not win
    ("cp950", "本店營業時間為上午十點至晚上九點。", BIG5),
]


@pytest.mark.parametrize("codec, text, label", FOREIGN,
                         ids=[f"{c}-{t[:12]}" for c, t, _ in FOREIGN])
def test_decode_script_refuses_other_encodings(codec: str, text: str, label: str) -> None:
    raw = text.encode(codec)
    with pytest.raises(InputError) as exc:
        decode_script(raw, "in/clip.txt")
    message = str(exc.value)
    assert message.startswith("the script in/clip.txt is not UTF-8 (byte 0x")
    assert f"it looks like {label}: " in message
    assert "save it as UTF-8" in message and exc.value.path == "in/clip.txt"
    # The excerpt is the text read the guessed way: the user recognises their script.
    assert text[:20] in message


def test_decode_script_damaged_utf8() -> None:
    raw = "大家好，欢迎观看我们的产品演示。".encode()[:-2]  # cut inside the last character
    with pytest.raises(InputError, match="looks like UTF-8 damaged in one place") as exc:
        decode_script(raw, "clip.txt")
    assert "byte 0xE3 at offset 45" in str(exc.value) and "产品演示\ufffd" in str(exc.value)
    # UTF-8 with a Windows-1252 word pasted in
    mixed = "大家好，欢迎来到咖啡馆（".encode() + "café".encode("cp1252") + "）。".encode()
    with pytest.raises(InputError, match="UTF-8 damaged in one place"):
        decode_script(mixed, "clip.txt")


def test_decode_script_unlikely_gb_without_a_guess() -> None:
    # Kanji-only Shift-JIS: no kana, so not recognisably Japanese; as GB it is GBK-only hanzi.
    with pytest.raises(InputError) as exc:
        decode_script("東京".encode("shift_jis"), "clip.txt")
    assert 'read as GB18030/GBK it gives unlikely characters: "搶嫗"' in str(exc.value)
    assert "save it as UTF-8" in str(exc.value)
    # Private-use characters (GBK user-defined areas, e.g. a font-editor glyph for a rare
    # name) are never accepted: with otherwise good Chinese, the message names the character.
    raw = "第一行\n大家好，欢迎观看我们的产品演示。".encode("gbk")
    with pytest.raises(InputError) as exc:
        decode_script(raw[:-2] + b"\xaa\xa1" + raw[-2:], "clip.txt")
    assert "reads as GB18030/GBK Chinese but contains the private-use character U+E000 at " \
        "line 2, column 16" in str(exc.value)


def test_decode_script_judges_a_large_file_quickly() -> None:
    raw = ("大家好，欢迎观看我们的产品演示。" * 40000).encode("gbk")
    with pytest.raises(InputError, match="the API takes at most 4000"):
        decode_script(raw, "clip.txt")  # decoded as GBK (then too long), not refused as foreign


def test_find_emoji() -> None:
    assert find_emoji("plain text，中文。") is None
    assert find_emoji("ab😀") == (2, "😀")
    assert find_emoji("☺️") == (0, "☺️")
    assert find_emoji("☺") is None  # text presentation by default


# --- overrides / [lipsync] -------------------------------------------------------------------

def test_lipsync_fields_cover_the_contract() -> None:
    assert set(LIPSYNC_FIELDS) == {"model", "audio_man_id", "speed", "pitch", "volume",
                                   "backway", "drive_mode", "screen_width", "screen_height"}


OVERRIDES_OK = [
    (b"{}", {}),
    (b'\xef\xbb\xbf{"speed": 1}', {"speed": 1.0}),
    (json.dumps({"model": 1, "audio_man_id": " C-123 ", "speed": 0.5, "pitch": 2, "volume": 1,
                 "backway": 2, "drive_mode": "random", "screen_width": 1080,
                 "screen_height": 8192}).encode(),
     {"model": 1, "audio_man_id": "C-123", "speed": 0.5, "pitch": 2.0, "volume": 1,
      "backway": 2, "drive_mode": "random", "screen_width": 1080, "screen_height": 8192}),
    (b'{"model": 2, "volume": 100, "speed": 2.0, "drive_mode": "", "screen_width": 1}',
     {"model": 2, "volume": 100, "speed": 2.0, "drive_mode": "", "screen_width": 1}),
]


@pytest.mark.parametrize("raw, expected", OVERRIDES_OK)
def test_validate_overrides_ok(raw: bytes, expected: dict[str, object]) -> None:
    got = validate_overrides(raw, "clip.json")
    assert got == expected
    assert all(type(got[k]) is type(v) for k, v in expected.items())


OVERRIDES_BAD = [
    # JSON text, key at fault, words in the message
    ('{"volume": 0}', "volume", "volume = 0 is not allowed: volume must be a whole number from 1 "
     "to 100"),
    ('{"volume": 101}', "volume", "volume = 101"),
    ('{"volume": 50.5}', "volume", "volume = 50.5 (a number)"),
    ('{"volume": "50"}', "volume", 'volume = "50" (a string)'),
    ('{"volume": true}', "volume", "volume = true (a boolean)"),
    ('{"volume": null}', "volume", "volume = null (null)"),
    ('{"model": 3}', "model", "model must be one of 0, 1 or 2"),
    ('{"model": true}', "model", "model = true (a boolean)"),
    ('{"model": false}', "model", "model = false (a boolean)"),
    ('{"model": 1.0}', "model", "model = 1.0 (a number)"),
    ('{"model": -1}', "model", "model = -1"),
    ('{"speed": 0.49}', "speed", "speed must be a number from 0.5 to 2"),
    ('{"speed": 2.01}', "speed", "speed = 2.01"),
    ('{"speed": "fast"}', "speed", 'speed = "fast" (a string)'),
    ('{"speed": true}', "speed", "(a boolean)"),
    ('{"speed": NaN}', "speed", "speed = NaN"),
    ('{"speed": Infinity}', "speed", "speed = Infinity"),
    ('{"pitch": 0}', "pitch", "pitch must be a number from 0.5 to 2"),
    ('{"pitch": 3}', "pitch", "pitch = 3"),
    ('{"backway": 0}', "backway", "backway must be one of 1 or 2"),
    ('{"backway": 3}', "backway", "backway = 3"),
    ('{"drive_mode": "RANDOM"}', "drive_mode", 'drive_mode must be one of "" or "random"'),
    ('{"drive_mode": 1}', "drive_mode", "drive_mode = 1 (a number)"),
    ('{"audio_man_id": ""}', "audio_man_id", "audio_man_id must be a non-empty string"),
    ('{"audio_man_id": "   "}', "audio_man_id", "non-empty string"),
    ('{"audio_man_id": 123}', "audio_man_id", "audio_man_id = 123 (a number)"),
    ('{"screen_width": 0}', "screen_width", "screen_width must be a whole number from 1 to 8192"),
    ('{"screen_height": 8193}', "screen_height", "screen_height = 8193"),
    ('{"screen_width": 1080.0}', "screen_width", "(a number)"),
    ('{"screen_width": [1080]}', "screen_width", "screen_width = [1080] (a list)"),
    ('{"volumn": 50}', "volumn", "unknown key 'volumn' (did you mean 'volume'?)"),
    ('{"callback": "http://x"}', "callback", "unknown key 'callback'; the keys are model,"),
    ('{"speed": 1, "speed": 1.5}', "speed", "the key 'speed' appears twice"),
    ("[1, 2]", None, "must be a JSON object like"),
    ('"speed"', None, "not a string"),
    ("5", None, "not a number"),
    ("null", None, "not null"),
    ('{"speed": 1,}', None, "is not valid JSON: Expecting property name enclosed in double "
     "quotes at line 1, column 13"),
    ("{\n  'speed': 1\n}", None, "at line 2, column 3"),
    ("", None, "is empty: write a JSON object"),
    ("  \n", None, "is empty"),
]


@pytest.mark.parametrize("text, key, words", OVERRIDES_BAD)
def test_validate_overrides_rejects(text: str, key: str | None, words: str) -> None:
    with pytest.raises(OverrideError) as exc:
        validate_overrides(text.encode(), "sub/clip.json")
    assert words in str(exc.value)
    assert str(exc.value).startswith("sub/clip.json")
    assert exc.value.key == key and exc.value.path == "sub/clip.json"
    assert isinstance(exc.value, InputError) and exc.value.code == "bad_input"


def test_validate_overrides_bytes_problems() -> None:
    with pytest.raises(OverrideError, match="not UTF-8"):
        validate_overrides(b'{"audio_man_id": "\xff"}', "c.json")
    with pytest.raises(OverrideError, match="larger than"):
        validate_overrides(b" " * (MAX_SIDECAR_BYTES + 1), "c.json")


def test_validate_lipsync_for_the_config() -> None:
    assert validate_lipsync({"speed": 1, "volume": 80}, "config [lipsync]") == \
        {"speed": 1.0, "volume": 80}
    with pytest.raises(OverrideError) as exc:
        validate_lipsync({"volume": 0}, "config [lipsync]")
    assert str(exc.value).startswith("config [lipsync]: volume = 0 is not allowed")
    assert exc.value.key == "volume" and exc.value.path is None


@pytest.mark.parametrize("key, rule", list(LIPSYNC_FIELDS.items()))
def test_every_rule_describes_itself(key: str, rule: object) -> None:
    text = LIPSYNC_FIELDS[key].describe()
    assert text and ("from" in text or "one of" in text or "string" in text)
