"""The [lipsync] keys: one rule table shared by the config file and ``<stem>.json`` overrides.

Strict on purpose: a typo in an override (``"volumn": 50``) or a wrong type (``"model": true``)
would otherwise be ignored or sent to the API, which fails the task only after an upload and a
billed generation attempt. Every error names the key, the value, what is allowed and the file.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hotfolder.errors import InputError
from hotfolder.pairing.script import MAX_SIDECAR_BYTES


class OverrideError(InputError):
    """An invalid [lipsync] value. ``key`` names the key at fault (None: the whole file)."""

    def __init__(self, message: str, path: str | None = None, key: str | None = None) -> None:
        super().__init__(message, path=path)
        self.key = key


@dataclass(frozen=True)
class FieldRule:
    """What one [lipsync] key accepts. ``kind`` "int" excludes booleans and floats like 1.0;
    "number" takes ints and floats (returned as float)."""

    kind: Literal["int", "number", "str"]
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    meaning: str = ""

    def describe(self) -> str:
        """The allowed values in words, e.g. "a whole number from 1 to 100"."""
        if self.choices is not None:
            shown = [json.dumps(c) for c in self.choices]
            text = "one of " + ", ".join(shown[:-1]) + " or " + shown[-1]
        else:
            noun = {"int": "a whole number", "number": "a number", "str": "a non-empty string"}
            text = noun[self.kind]
        if self.minimum is not None and self.maximum is not None:
            text += f" from {_num(self.minimum)} to {_num(self.maximum)}"
        return text + (f" ({self.meaning})" if self.meaning else "")

    def check(self, value: Any) -> Any | None:
        """The normalised value, or None if ``value`` is not allowed."""
        if self.kind == "str":
            if not isinstance(value, str):
                return None
            value = value.strip()
            if self.choices is None and not value:
                return None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # bool is an int subclass in Python; true/false is never a number here
        elif self.kind == "int" and not isinstance(value, int):
            return None
        elif isinstance(value, float) and not math.isfinite(value):
            return None
        if self.choices is not None and value not in self.choices:
            return None
        if self.minimum is not None and value < self.minimum:
            return None
        if self.maximum is not None and value > self.maximum:
            return None
        return float(value) if self.kind == "number" else value


LIPSYNC_FIELDS: dict[str, FieldRule] = {
    "model": FieldRule("int", choices=(0, 1, 2), meaning="0 basic, 1 high quality, 2 cartoon"),
    "audio_man_id": FieldRule("str", meaning="a voice id from `hotfolder voices`"),
    "speed": FieldRule("number", 0.5, 2),
    "pitch": FieldRule("number", 0.5, 2),
    "volume": FieldRule("int", 1, 100),
    "backway": FieldRule("int", choices=(1, 2), meaning="1 loops the video, 2 plays it back "
                                                        "and forth"),
    "drive_mode": FieldRule("str", choices=("", "random")),
    "screen_width": FieldRule("int", 1, 8192, meaning="pixels"),
    "screen_height": FieldRule("int", 1, 8192, meaning="pixels"),
}


def validate_lipsync(
    mapping: Mapping[str, Any], where: str, *, path: str | None = None
) -> dict[str, Any]:
    """Check every key/value of ``mapping`` against :data:`LIPSYNC_FIELDS`; return the
    normalised values (numbers as float, strings stripped). ``where`` prefixes messages (a file
    name, or ``config [lipsync]``); ``path`` is the file at fault, if any.

    Raises :class:`OverrideError` (an :class:`InputError` with ``key``) on the first problem.
    """
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        rule = LIPSYNC_FIELDS.get(key)
        if rule is None:
            close = difflib.get_close_matches(str(key), LIPSYNC_FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise OverrideError(f"{where}: unknown key {key!r}{hint}; the keys are "
                                f"{', '.join(LIPSYNC_FIELDS)}", path=path, key=str(key))
        checked = rule.check(value)
        if checked is None:
            shown = _show(value)
            if not _type_fits(rule, value):  # say why "true" or "50" (quoted) is refused
                shown += f" ({_json_type(value)})"
            raise OverrideError(f"{where}: {key} = {shown} is not allowed: {key} must be "
                                f"{rule.describe()}", path=path, key=key)
        out[key] = checked
    return out


def validate_overrides(raw: bytes, path: str) -> dict[str, Any]:
    """Parse and check the bytes of a ``<stem>.json`` overrides sidecar.

    It must be a UTF-8 JSON object whose keys are [lipsync] keys; raises :class:`OverrideError`
    naming the file (and the key) otherwise.
    """
    if len(raw) > MAX_SIDECAR_BYTES:
        raise OverrideError(f"{path} is larger than {MAX_SIDECAR_BYTES} bytes: it should be a "
                            f"small JSON object like {{\"speed\": 1.2}}", path=path)
    try:
        text = raw.decode("utf-8-sig")  # Notepad may add a BOM
    except UnicodeDecodeError as exc:
        raise OverrideError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8",
                            path=path) from exc
    if not text.strip():
        raise OverrideError(f"{path} is empty: write a JSON object like {{\"speed\": 1.2}} or "
                            f"delete the file", path=path)
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise OverrideError(f"{path}: the key {exc.key!r} appears twice; keep one",
                            path=path, key=exc.key) from None
    except json.JSONDecodeError as exc:
        raise OverrideError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column "
                            f"{exc.colno}", path=path) from exc
    if not isinstance(data, dict):
        raise OverrideError(f"{path} must be a JSON object like {{\"speed\": 1.2}}, not "
                            f"{_json_type(data)}", path=path)
    return validate_lipsync(data, path, path=path)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _type_fits(rule: FieldRule, value: Any) -> bool:
    if rule.kind == "str":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if rule.kind == "int" else isinstance(value, (int, float))


def _show(value: Any) -> str:
    try:
        shown = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        shown = repr(value)  # e.g. a TOML date
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
