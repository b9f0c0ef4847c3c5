"""Decoding and checking a TTS script (``<stem>.txt``) before anything is uploaded.

The contract: UTF-8 (with or without BOM), UTF-16 with BOM, or GB18030/GBK; the API receives the
text without BOM, with ``\\n`` line endings and without surrounding whitespace. Empty text, text
over the API's limit and text the API would reject (emoji) are permanent failures, so they are
caught here instead of after an upload.
"""

from __future__ import annotations

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
    try:
        return raw.decode("gb18030")  # a superset of GBK/GB2312: Chinese Windows' "ANSI" text
    except UnicodeDecodeError:
        pos = utf8_error.start
        raise InputError(
            f"the script {name} is not readable text: byte 0x{raw[pos]:02X} at offset {pos} is "
            f"neither UTF-8 nor GB18030/GBK; save it as UTF-8 (e.g. Notepad: Save As → "
            f"Encoding: UTF-8)", path=name) from utf8_error
