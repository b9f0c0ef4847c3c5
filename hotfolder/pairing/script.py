"""Decoding and checking a TTS script (``<stem>.txt``) before anything is uploaded.

The contract: UTF-8 (with or without BOM), UTF-16 with BOM, or GB18030/GBK; the API receives the
text without BOM, with ``\\n`` line endings and without surrounding whitespace. Empty text, text
over the API's limit and text the API would reject (emoji) are permanent failures, so they are
caught here instead of after an upload.

**When GB18030 is believed.** GB18030 decodes almost any byte string, so "it decoded" proves
nothing: ``naïve über`` saved as Windows-1252 decodes to ``na飗e 黚er``, Chinese nonsense that
would be spoken and billed. Bytes that are not UTF-8 are read as GB18030 and every non-ASCII
character is ranked by where it sits in GB18030 (simplified Chinese lives almost entirely in
GB2312; legacy bytes of other languages land elsewhere):

* *common* (weight 0): GB2312 level-1 hanzi (the 3755 everyday characters), GB2312 punctuation,
  full-width forms and numerals (rows 1-3), pinyin/bopomofo (row 8, used to teach Chinese), and
  four-byte GB18030 characters (their bytes alternate with ASCII digits, which no other legacy
  encoding produces: only a real GB18030 encoder writes them);
* *uncommon* (0.5): GB2312 level-2 hanzi (rarer characters; less than 1% of real text), Greek
  and Cyrillic letters (β-胡萝卜素 is real Chinese, but Big5 bytes often read as them too);
* *rare* (1): GBK's extension areas (GBK/3, GBK/4: traditional and rare hanzi; GBK/5 symbols)
  and GB2312's kana and box-drawing rows. Shift-JIS kana land in GBK/3; Windows-1252 accents
  followed by a letter land in GBK/4; Big5 lands in all of these;
* *impossible*: private-use (user-defined areas) or unassigned code points, controls. (If
  the rest is plausible, the message names the private-use character instead: a user-defined
  glyph for a rare name character cannot be spoken, whatever the encoding.)

The text is **accepted** as GB18030 when nothing is impossible and the weights add up to at most
10% of its non-ASCII characters, or at most 25% when no other reading below is plausible either
(so a short script naming 朱镕基, whose 镕 is GBK-only, still passes). Otherwise it is refused with
an :class:`InputError` that names the file, tells to save it as UTF-8 and, when one reading is
plausible, says what it looks like:

* *UTF-8, damaged*: mostly valid multi-byte UTF-8 with a few bad bytes (a cut or mixed file);
* *Windows-1252/Latin-1 (Western European)*: decodes as cp1252; every non-ASCII character is a
  Latin letter or common Western punctuation; accented letters are at most half of the
  letters; no more than 3 non-ASCII characters in a row (Chinese bytes make long runs);
* *Shift-JIS (Japanese)*: decodes as cp932 with kana, at least a fifth kana among kana+kanji,
  hardly any half-width katakana (which is what Chinese bytes become) and nothing private-use;
* *Big5 (Traditional Chinese)*: decodes as cp950 with hanzi, nothing private-use, and level-2
  (rare) characters and reserved areas weighing at most 10%.

Limits: a very short Big5 or Japanese text can be valid, everyday GB2312 by chance (Big5 謝謝
reads as GB 谅谅, half-width ｶﾀｶﾅ as 独杜) and is then taken as GB18030: bytes alone cannot tell,
and GB18030 is what the contract promises. (UTF-8 is tried first and is not judged: GBK 谢谢
happens to be valid UTF-8, "лл".) Traditional Chinese saved as GBK is refused (its characters are in the extension areas,
like mojibake); the message shows the GB reading so the user sees the text and saves as UTF-8.
A ready-made detector (charset-normalizer) was tried and not used: it reads short GBK scripts
such as 今天天气很好。 as Korean (cp949) or UTF-16.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

from hotfolder.errors import InputError

MAX_TEXT_CHARS = 4000  # the vendor's TTS client limit, counted like Python's len(str)
MAX_SIDECAR_BYTES = 1 << 20  # read at most this + 1 bytes of a .txt/.json; more is an error

_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),  # before UTF-16 LE: same first two bytes
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)

# Code points with Emoji_Presentation=Yes in the BMP (Unicode emoji-data): shown as emoji even
# without U+FE0F. Text-style symbols such as ★ ☆ ♪ © ™ and all CJK punctuation are not here.
_BMP_EMOJI = frozenset(
    [0x231A, 0x231B, 0x23F0, 0x23F3, 0x25FD, 0x25FE, 0x2614, 0x2615, 0x267F, 0x2693, 0x26A1,
     0x26AA, 0x26AB, 0x26BD, 0x26BE, 0x26C4, 0x26C5, 0x26CE, 0x26D4, 0x26EA, 0x26F2, 0x26F3,
     0x26F5, 0x26FA, 0x26FD, 0x2705, 0x270A, 0x270B, 0x2728, 0x274C, 0x274E, 0x2753, 0x2754,
     0x2755, 0x2757, 0x2795, 0x2796, 0x2797, 0x27B0, 0x27BF, 0x2B1B, 0x2B1C, 0x2B50, 0x2B55]
    + list(range(0x23E9, 0x23ED)) + list(range(0x2648, 0x2654))
)
# Pictographic planes: emoticons, symbols & pictographs, transport, flags (regional
# indicators), skin tones, supplemental symbols... Plus the emoji tag characters.
_EMOJI_RANGES = ((0x1F000, 0x1FAFF), (0xE0020, 0xE007F))
_VS16 = "\ufe0f"  # "show the previous character as emoji"
# The encoding rules judge at most this many characters: plenty to tell, and a longer text is
# refused for its length anyway, so a 1 MiB sidecar costs milliseconds, not a second.
_JUDGED_CHARS = 5 * MAX_TEXT_CHARS


def decode_script(raw: bytes, path_for_errors: str) -> str:
    """The text to speak from the bytes of a ``.txt`` sidecar, normalised as the API gets it.

    Raises :class:`InputError` (naming the file and what to do) for undecodable bytes, empty
    text, more than :data:`MAX_TEXT_CHARS` characters, control characters or emoji.
    """
    name = path_for_errors
    if len(raw) > MAX_SIDECAR_BYTES:
        raise InputError(f"the script {name} is larger than {MAX_SIDECAR_BYTES} bytes; the "
                         f"API takes at most {MAX_TEXT_CHARS} characters: shorten it", path=name)
    text = _decode(raw, name)
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    text = text.rstrip("\x1a").strip()  # \x1a: the DOS end-of-file mark old editors append
    if not text:
        raise InputError(f"the script {name} is empty: write the text to speak into it "
                         f"(UTF-8), or drop a .wav/.mp3/.m4a with the same name instead",
                         path=name)
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"the script {name} has {len(text)} characters; the API takes at most "
                         f"{MAX_TEXT_CHARS}: shorten it or split it into several videos",
                         path=name)
    bad = find_emoji(text)
    if bad is not None:
        index, found = bad
        codes = " ".join(f"U+{ord(c):04X}" for c in found)
        raise InputError(f"the script {name} contains the emoji {found} ({codes}) at "
                         f"{_where(text, index)}: the API rejects emoji in text to speak; "
                         f"remove it", path=name)
    for index, ch in enumerate(text):
        if ch not in "\n\t" and (ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0):
            raise InputError(f"the script {name} contains the control character U+{ord(ch):04X} "
                             f"at {_where(text, index)}: remove it (save the file as plain "
                             f"text)", path=name)
    return text


def find_emoji(text: str) -> tuple[int, str] | None:
    """(0-based index, the emoji incl. a following U+FE0F) of the first emoji, or None."""
    for index, ch in enumerate(text):
        cp = ord(ch)
        followed = text[index + 1:index + 2] == _VS16
        if cp in _BMP_EMOJI or any(lo <= cp <= hi for lo, hi in _EMOJI_RANGES) or followed \
                or ch == _VS16:
            return index, ch + _VS16 if followed else ch
    return None


def _where(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line}, column {column} (character {index + 1})"


def _decode(raw: bytes, name: str) -> str:
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            try:
                return raw[len(bom):].decode(codec)
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"the script {name} starts with a {codec.upper()} byte-order mark but byte "
                    f"{exc.start + len(bom)} is not valid {codec.upper()} (a damaged or cut "
                    f"file?): save it again as UTF-8", path=name) from exc
    if b"\x00" in raw:
        # Valid UTF-8, but text never contains NUL: this is UTF-16 without a BOM.
        raise InputError(f"the script {name} contains NUL bytes: it looks like UTF-16 without a "
                         f"byte-order mark; save it as UTF-8 (or UTF-16 with BOM)", path=name)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        utf8_error = exc
    gb = _try_decode(raw, "gb18030")  # a superset of GBK/GB2312: Chinese Windows' "ANSI" text
    verdict = _gb_verdict(gb) if gb is not None else "no"
    if gb is not None and verdict == "yes":
        return gb
    # Most specific first: the multi-byte readings check byte structure, the Western one only
    # character classes, so a short Big5 word can also pass as Western ("臺灣" → "»OÆW").
    guess = _damaged_utf8(raw) or _japanese(raw) or _big5(raw) or _western(raw)
    if gb is not None and verdict == "maybe" and guess is None:
        return gb
    pos = utf8_error.start
    where = f"byte 0x{raw[pos]:02X} at offset {pos}"
    fix = "save it as UTF-8 (e.g. Notepad: Save As → Encoding: UTF-8)"
    if guess is not None:
        message = (f"the script {name} is not UTF-8 ({where} is not valid UTF-8) and it looks "
                   f"like {guess.label}: {_preview(guess.text, guess.focus)}; hotfolder reads "
                   f"UTF-8, UTF-16 with BOM or GB18030/GBK Chinese: {fix}")
    elif gb is not None and _gb_verdict(_without_impossible(gb)) == "yes":
        # Chinese text with a user-defined (EUDC) glyph, e.g. a rare name character made with a
        # font editor: saving as UTF-8 would keep it, and no voice can read it.
        index = next(i for i, ch in enumerate(gb) if _impossible(ch))
        message = (f"the script {name} reads as GB18030/GBK Chinese but contains the private-use "
                   f"character U+{ord(gb[index]):04X} at {_where(gb, index)}: a user-defined "
                   f"character (made with a font editor) that the voice cannot read; replace it "
                   f"with a standard character or its pinyin")
    elif gb is not None:
        message = (f"the script {name} is not UTF-8 ({where} is not valid UTF-8) and read as "
                   f"GB18030/GBK it gives unlikely characters: {_preview(gb)}; it seems to be in "
                   f"another encoding: {fix}")
    else:
        message = (f"the script {name} is not readable text: {where} is neither UTF-8 nor "
                   f"GB18030/GBK; {fix}")
    raise InputError(message, path=name) from utf8_error


# --- is a legacy decoding plausible? (the rule is in the module docstring) -------------------

@dataclass(frozen=True)
class _Guess:
    label: str  # e.g. "Shift-JIS (Japanese) text"
    text: str  # the bytes read that way, to show
    focus: int | None = None  # where the excerpt should start (None: the first non-ASCII)


def _try_decode(raw: bytes, codec: str) -> str | None:
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        return None


def _impossible(ch: str) -> bool:
    """Private-use, unassigned, surrogate or control: never in a script someone typed."""
    return unicodedata.category(ch) in ("Co", "Cn", "Cs", "Cc") and ch not in "\t\n\r\x1a"


def _without_impossible(text: str) -> str:
    return "".join(ch for ch in text[:_JUDGED_CHARS] if not _impossible(ch))


def _gb_weight(ch: str) -> float | None:
    """How unlikely a non-ASCII character decoded from GB18030 is in real simplified Chinese
    (0 common, 0.5 uncommon, 1 rare), or None if impossible."""
    if _impossible(ch):
        return None
    code = ch.encode("gb18030")  # round-trips exactly: these are the bytes it came from
    if len(code) == 4:
        return 0.0
    lead, trail = code[0], code[1]
    if lead <= 0xA0 or trail <= 0xA0:
        return 1.0  # GBK/3 (lead 81-A0), GBK/4 and GBK/5 (trail 40-A0)
    if lead <= 0xA3 or lead == 0xA8:
        return 0.0  # punctuation, symbols, full-width forms; pinyin
    if lead in (0xA6, 0xA7):
        return 0.5  # Greek, Cyrillic: β-胡萝卜素 is real, but Big5 bytes often read so too
    if lead <= 0xA9:
        return 1.0  # kana, box drawing: how Big5 bytes often read
    if lead <= 0xD7:
        return 0.0  # GB2312 level 1 (AA-AF is user-defined: private use, caught above)
    return 0.5  # GB2312 level 2


def _gb_verdict(text: str) -> Literal["yes", "maybe", "no"]:
    """"yes" (plausible GB18030 text), "maybe" (only if nothing else fits) or "no"."""
    odd = 0.0
    count = 0
    for ch in text[:_JUDGED_CHARS]:
        if ch.isascii():
            continue
        weight = _gb_weight(ch)
        if weight is None:
            return "no"
        odd += weight
        count += 1
    if odd <= 0.10 * count:
        return "yes"
    return "maybe" if odd <= 0.25 * count else "no"


def _damaged_utf8(raw: bytes) -> _Guess | None:
    """Mostly UTF-8 multi-byte text with a few invalid bytes: cut short, or text pasted in from
    another encoding."""
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd", 0, _JUDGED_CHARS)
    good = sum(1 for ch in text[:_JUDGED_CHARS] if not ch.isascii()) - bad
    if good < 4 or bad * 10 > good:
        return None
    places = "one place" if bad == 1 else f"{bad} places"
    return _Guess(f"UTF-8 damaged in {places} (a cut file, or text pasted from another "
                  f"encoding?), shown as \ufffd", text, text.index("\ufffd"))


# Non-letters a Western European text plausibly holds (cp1252's 0x80-0xBF, ×, ÷).
_WESTERN_SYMBOLS = frozenset("€‚„…†‡‰‹›‘’“”•–—˜™¡¢£¤¥¦§¨©ª«¬\xad®¯°±²³´µ¶·¸¹º»¼½¾¿×÷\xa0ˆ")


def _western(raw: bytes) -> _Guess | None:
    """Windows-1252 (a superset of Latin-1's printable part) that reads as a Western language."""
    text = _try_decode(raw, "cp1252")
    if text is None:
        return None
    ascii_letters = accented = run = longest = 0
    for ch in text[:_JUDGED_CHARS]:
        if ch.isascii():
            ascii_letters += ch.isalpha()
            run = 0
            continue
        if ch.isalpha() and unicodedata.name(ch, "").startswith("LATIN"):
            accented += 1
        elif ch not in _WESTERN_SYMBOLS:
            return None
        run += 1
        longest = max(longest, run)
    if ascii_letters == 0 or accented > ascii_letters or longest > 3:
        return None
    return _Guess("Windows-1252/Latin-1 (Western European) text", text)


def _japanese(raw: bytes) -> _Guess | None:
    """Shift-JIS (as Windows writes it: cp932) with kana, as Japanese sentences have."""
    text = _try_decode(raw, "cp932")
    if text is None:
        return None
    kana = kanji = halfwidth = other = total = 0
    for ch in text[:_JUDGED_CHARS]:
        if ch.isascii():
            continue
        total += 1
        cp = ord(ch)
        if _impossible(ch):
            return None
        if 0x3041 <= cp <= 0x30FF:
            kana += 1
        elif 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF \
                or ch == "々":
            kanji += 1
        elif 0xFF61 <= cp <= 0xFF9F:
            halfwidth += 1  # half-width katakana: what bytes A1-DF of Chinese text become
        elif not (0x3000 <= cp <= 0x303F or 0xFF01 <= cp <= 0xFF60 or 0xFFE0 <= cp <= 0xFFE6
                  or unicodedata.category(ch)[0] in "PS"):
            other += 1
    if kana == 0 or kana * 5 < kana + kanji or (halfwidth + other) * 10 > total:
        return None
    return _Guess("Shift-JIS (Japanese) text", text)


def _big5(raw: bytes) -> _Guess | None:
    """Big5 (as Windows writes it: cp950) whose hanzi are mostly Big5's everyday level 1."""
    text = _try_decode(raw, "cp950")
    if text is None:
        return None
    odd = 0.0
    hanzi = total = 0
    for ch in text[:_JUDGED_CHARS]:
        if ch.isascii():
            continue
        if _impossible(ch):
            return None
        total += 1
        code = ch.encode("cp950")
        if len(code) != 2:
            odd += 1
            continue
        big = code[0] << 8 | code[1]
        if 0xA140 <= big <= 0xA3BF:
            continue  # punctuation and symbols
        if unicodedata.name(ch, "").startswith("CJK UNIFIED"):
            hanzi += 1
        if 0xA440 <= big <= 0xC67E:
            continue  # level 1: the 5401 everyday characters
        odd += 0.5 if 0xC940 <= big <= 0xF9D5 else 1.0  # level 2; reserved/extension areas
    if hanzi == 0 or odd > 0.10 * total:
        return None
    return _Guess("Big5 (Traditional Chinese) text", text)


def _preview(text: str, focus: int | None = None, width: int = 40) -> str:
    """A quoted excerpt of ``text`` from just before ``focus`` (default: its first non-ASCII
    character), on one line, with unprintable characters shown as U+FFFD."""
    if focus is None:
        focus = next((i for i, ch in enumerate(text) if not ch.isascii()), 0)
    start = max(0, focus - 10)
    shown = " ".join(text[start:start + width * 2].split())
    shown = "".join("\ufffd" if _impossible(ch) else ch for ch in shown)
    cut = len(shown) > width or start + width * 2 < len(text)
    return f'"{"…" if start else ""}{shown[:width]}{"…" if cut else ""}"'
