"""Terminal display width, so tables line up with CJK names (two columns per wide character)."""

from __future__ import annotations

import unicodedata


def char_width(ch: str) -> int:
    """Columns one character takes on a terminal (0 for combining marks, 2 for wide/fullwidth)."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal."""
    return sum(char_width(ch) for ch in text)


def pad(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` columns (never cut)."""
    return text + " " * max(0, width - display_width(text))


def clip_left(text: str, width: int) -> str:
    """The end of ``text`` that fits in ``width`` columns."""
    out: list[str] = []
    used = 0
    for ch in reversed(text):
        w = char_width(ch)
        if used + w > width:
            break
        out.append(ch)
        used += w
    return "".join(reversed(out))
