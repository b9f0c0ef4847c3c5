"""Request validation that needs no state: JSON bodies, field types and value ranges.

The rules follow /work/shared/chanjing-api.md and are deliberately strict: a lenient fake
would hide client bugs that the real service punishes. Code 400 = the body cannot be read as
the documented types; 40000 = a value is wrong; 50000 = what the real service answers for emoji.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping
from urllib.parse import urlsplit

from hotfolder.sandbox.voices import VOICE_IDS

CODE_OK = 0
CODE_FORMAT = 400
CODE_AUTH = 10400
CODE_PARAM = 40000
CODE_RATE = 40001
CODE_INTERNAL = 50000

MAX_TEXT_CHARS = 4000
MAX_PAGE_SIZE = 50
MAX_SCREEN = 8192


class ApiFailure(Exception):
    """An API-level refusal: becomes the envelope ``{code, msg}`` with HTTP 200."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def format_error(detail: str) -> ApiFailure:
    """Code 400: the request is not in the documented format."""
    return ApiFailure(CODE_FORMAT, f"参数格式错误: {detail}")


def param_error(detail: str) -> ApiFailure:
    """Code 40000: a parameter has a wrong value."""
    return ApiFailure(CODE_PARAM, f"参数错误: {detail}")


def parse_json_object(body: bytes, *, empty_ok: bool = False) -> dict[str, Any]:
    """Decode a request body that must be a JSON object (400 otherwise)."""
    if not body.strip():
        if empty_ok:
            return {}
        raise format_error("request body is empty, expected a JSON object")
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise format_error(f"request body is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise format_error(f"request body must be a JSON object, got {type(value).__name__}")
    return value


# JSON kind -> check. Booleans are not numbers here: the real service is typed (Go structs).
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _is_text(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))


_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "int": _is_int,
    "number": _is_number,
    "object": lambda v: isinstance(v, dict),
    "string or array of strings": _is_text,
}

CREATE_FIELDS: dict[str, str] = {
    "video_file_id": "string",
    "screen_width": "int",
    "screen_height": "int",
    "backway": "int",
    "drive_mode": "string",
    "callback": "string",
    "model": "int",
    "audio_type": "string",
    "tts_config": "object",
    "audio_file_id": "string",
    "volume": "int",
}
TTS_FIELDS: dict[str, str] = {
    "text": "string or array of strings",
    "audio_man_id": "string",
    "speed": "number",
    "pitch": "number",
}
LIST_FIELDS: dict[str, str] = {"page": "int", "page_size": "int"}


def _check_types(obj: Mapping[str, Any], spec: Mapping[str, str], prefix: str = "") -> None:
    """400 for a known field of the wrong JSON type (null included), then 40000 for an
    unknown field, naming it."""
    for name, value in obj.items():
        kind = spec.get(name)
        if kind is not None and not _CHECKS[kind](value):
            raise format_error(
                f"field {prefix}{name} must be {kind}, got {json.dumps(value, ensure_ascii=False)[:60]}"
            )
    for name in obj:
        if name not in spec:
            raise param_error(f"unknown field {prefix + name!r}")


def contains_emoji(text: str) -> bool:
    """True if ``text`` has a character the real service refuses as emoji.

    That service stores text as 3-byte UTF-8, so anything beyond the BMP fails, plus the BMP's
    dingbats/misc-symbol emoji and the emoji variation selector.
    """
    for ch in text:
        cp = ord(ch)
        if cp > 0xFFFF or 0x2600 <= cp <= 0x27BF or cp in (0xFE0F, 0x200D, 0x20E3):
            return True
    return False


def _check_choice(obj: Mapping[str, Any], name: str, allowed: tuple[Any, ...], default: Any) -> Any:
    value = obj.get(name, default)
    if value not in allowed:
        raise param_error(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _check_range(obj: Mapping[str, Any], name: str, low: float, high: float, default: Any) -> Any:
    value = obj.get(name, default)
    if not low <= value <= high:
        raise param_error(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return value


def _check_callback(url: str) -> str:
    if url == "":
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise param_error(f"callback must be an http(s) URL, got {url!r}")
    return url


def _check_tts(config: Mapping[str, Any]) -> dict[str, Any]:
    _check_types(config, TTS_FIELDS, "tts_config.")
    if "text" not in config:
        raise param_error("tts_config.text is required when audio_type is tts")
    raw = config["text"]
    parts = [raw] if isinstance(raw, str) else list(raw)
    joined = "".join(parts)
    if not joined.strip():
        raise param_error("tts_config.text is empty")
    if len(joined) > MAX_TEXT_CHARS:
        raise param_error(f"tts_config.text is {len(joined)} characters, the limit is {MAX_TEXT_CHARS}")
    if contains_emoji(joined):
        raise ApiFailure(CODE_INTERNAL, "文本中包含不支持的字符(emoji),请修改后重试")
    voice = config.get("audio_man_id")
    if not voice:
        raise param_error("tts_config.audio_man_id is required when audio_type is tts")
    if voice not in VOICE_IDS:
        raise param_error(f"tts_config.audio_man_id {voice!r} is not a known voice")
    speed = _check_range(config, "speed", 0.5, 2.0, 1)
    pitch = _check_range(config, "pitch", 0.5, 2.0, 1)
    return {"text": parts, "audio_man_id": voice, "speed": speed, "pitch": pitch}


def validate_create(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Check a create body; return it normalised with every default filled in.

    File ids are only checked for presence here; whether they exist and are ready is the
    state's business. ``tts_config.text`` comes back as a list of strings.
    """
    _check_types(obj, CREATE_FIELDS)
    if not obj.get("video_file_id"):
        raise param_error("video_file_id is required")
    audio_type = _check_choice(obj, "audio_type", ("tts", "audio"), "tts")
    tts: dict[str, Any] | None = None
    if "tts_config" in obj:
        # Checked even when audio_type is audio: a malformed object is a client bug either way.
        tts_cfg = obj["tts_config"]
        if audio_type == "tts":
            tts = _check_tts(tts_cfg)
        else:
            _check_types(tts_cfg, TTS_FIELDS, "tts_config.")
    if audio_type == "tts" and tts is None:
        raise param_error("tts_config is required when audio_type is tts")
    if audio_type == "audio" and not obj.get("audio_file_id"):
        raise param_error("audio_file_id is required when audio_type is audio")
    return {
        "video_file_id": obj["video_file_id"],
        "screen_width": _check_range(obj, "screen_width", 1, MAX_SCREEN, 1080),
        "screen_height": _check_range(obj, "screen_height", 1, MAX_SCREEN, 1920),
        "backway": _check_choice(obj, "backway", (1, 2), 1),
        "drive_mode": _check_choice(obj, "drive_mode", ("", "random"), ""),
        "callback": _check_callback(obj.get("callback", "")),
        "model": _check_choice(obj, "model", (0, 1, 2), 0),
        "audio_type": audio_type,
        "tts_config": tts,
        "audio_file_id": obj.get("audio_file_id", "") if audio_type == "audio" else "",
        "volume": _check_range(obj, "volume", 1, 100, 100),
    }


def validate_list(obj: Mapping[str, Any]) -> tuple[int, int]:
    """Check a task-list body; return ``(page, page_size)`` (defaults 1 and 10)."""
    _check_types(obj, LIST_FIELDS)
    page = obj.get("page", 1)
    size = obj.get("page_size", 10)
    if page < 1:
        raise param_error(f"page must be >= 1, got {page}")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise param_error(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {size}")
    return page, size


def query_page(query: Mapping[str, str], size_key: str) -> tuple[int, int]:
    """``page`` and ``size_key`` from a query string (defaults 1 and 10)."""
    values = []
    for key, default in (("page", 1), (size_key, 10)):
        raw = query.get(key, "")
        if raw == "":
            values.append(default)
            continue
        try:
            values.append(int(raw))
        except ValueError:
            raise format_error(f"{key} must be an integer, got {raw!r}") from None
    page, size = values
    if page < 1:
        raise param_error(f"page must be >= 1, got {page}")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise param_error(f"{size_key} must be between 1 and {MAX_PAGE_SIZE}, got {size}")
    return page, size


def validate_token_request(obj: Mapping[str, Any]) -> tuple[str, str]:
    """Check an access_token body; return ``(app_id, secret_key)``."""
    for name in ("app_id", "secret_key"):
        if name in obj and not isinstance(obj[name], str):
            raise format_error(f"field {name} must be string")
        if not obj.get(name):
            raise param_error(f"{name} is required")
    return obj["app_id"], obj["secret_key"]


def page_info(page: int, size: int, total: int) -> dict[str, int]:
    """The ``page_info`` object of a paginated reply."""
    return {"page": page, "size": size, "total_count": total, "total_page": math.ceil(total / size)}
