"""Run-time settings of the sandbox: timings, limits and fault rates.

Every field can be set at construction, changed later with ``Sandbox.update(**kw)``, through the
control endpoint ``POST /_sandbox/settings`` and as a ``--kebab-case`` CLI flag. All three go
through :func:`settings_from_mapping`, so a value is checked the same way wherever it comes from.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

BALANCE_MODES = ("refuse", "fail_task", "quota")


@dataclass
class SandboxSettings:
    """Knobs of the emulator. All faults are off by default (see the package docstring)."""

    seed: int = 0
    file_ready_delay: float = 3.0
    queue_seconds: float = 2.0
    generate_seconds: float = 8.0
    token_ttl: float = 86400.0
    upload_url_ttl: float = 900.0
    result_url_ttl: float = 3600.0
    creates_per_minute: int = 10
    file_calls_per_minute: int = 30
    queries_per_second: int = 10
    error_rate: float = 0.0
    drop_rate: float = 0.0
    gateway_error_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 0.0
    truncate_rate: float = 0.0
    corrupt_result_rate: float = 0.0
    fail_task_rate: float = 0.0
    reject_file_rate: float = 0.0
    balance_creates: int | None = None
    balance_mode: str = "refuse"
    emit_callbacks: bool = True

    def as_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)


# One line of help per field; used by the CLI (``--help``) and kept next to the fields so the
# two cannot drift apart unnoticed (a test checks every field has help).
SETTING_HELP: dict[str, str] = {
    "seed": "seed of the random generator behind every fault decision",
    "file_ready_delay": "seconds after a PUT completes before file_detail reports status 1",
    "queue_seconds": "seconds a new task stays in status 0 (queued)",
    "generate_seconds": "seconds a task spends in status 10 (generating) before it ends",
    "token_ttl": "lifetime of an access token, seconds",
    "upload_url_ttl": "lifetime of a signed upload URL, seconds (1 s resolution)",
    "result_url_ttl": "lifetime of signed result URLs (video_url, preview_url), seconds",
    "creates_per_minute": "sliding-window limit on create per app_id (0 = unlimited)",
    "file_calls_per_minute": "limit on create_upload_url + file_detail per minute (0 = unlimited)",
    "queries_per_second": "limit on detail + list per second (0 = unlimited)",
    "error_rate": "fraction of API calls answered code 50000",
    "drop_rate": "fraction of API/storage requests whose connection is closed with no answer",
    "gateway_error_rate": "fraction of API calls answered HTTP 502/503/504 with an HTML page",
    "slow_rate": "fraction of API/storage requests delayed by slow_seconds",
    "slow_seconds": "delay applied to slow requests, seconds",
    "truncate_rate": "fraction of downloads that close part-way through the body",
    "corrupt_result_rate": "fraction of result downloads that arrive whole but broken (a video cut at 60 %, "
                           "a cover that is not a JPEG)",
    "fail_task_rate": "fraction of tasks that end in status 30",
    "reject_file_rate": "fraction of uploaded files that end in status 98",
    "balance_creates": "creates left before the account is out of balance (unset = unlimited)",
    "balance_mode": "out of balance: 'refuse' (create answers 50000), 'fail_task' (task ends 30) or 'quota' "
                    "(create answers 40002, the duration quota is used up)",
    "emit_callbacks": "POST the task to its callback URL when it ends",
}

_RATES = {
    "error_rate", "drop_rate", "gateway_error_rate", "slow_rate", "truncate_rate", "corrupt_result_rate",
    "fail_task_rate", "reject_file_rate",
}
_LIMITS = {"creates_per_minute", "file_calls_per_minute", "queries_per_second"}


def _field_types() -> dict[str, str]:
    # With ``from __future__ import annotations`` the types are strings; that is all we need.
    return {f.name: str(f.type) for f in fields(SandboxSettings)}


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    raise ValueError(f"{name}: expected true or false, got {value!r}")


def _to_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{name}: expected an integer, got {value!r}")


def _to_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise ValueError(f"{name}: expected a number, got {value!r}") from None
    else:
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if not math.isfinite(result):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return result


def _coerce(name: str, type_name: str, value: Any) -> Any:
    """Convert one raw value (JSON or CLI string) to the field's type and check its range."""
    if type_name == "bool":
        return _to_bool(name, value)
    if type_name == "int | None":
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        number = _to_int(name, value)
        if number < 0:
            raise ValueError(f"{name}: must be >= 0 or null, got {number}")
        return number
    if type_name == "int":
        number = _to_int(name, value)
        if name in _LIMITS and number < 0:
            raise ValueError(f"{name}: must be >= 0 (0 = unlimited), got {number}")
        return number
    if type_name == "float":
        number = _to_float(name, value)
        if name in _RATES and not 0.0 <= number <= 1.0:
            raise ValueError(f"{name}: must be between 0 and 1, got {number}")
        if number < 0:
            raise ValueError(f"{name}: must be >= 0, got {number}")
        return number
    if type_name == "str":
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {value!r}")
        if name == "balance_mode" and value not in BALANCE_MODES:
            raise ValueError(f"{name}: must be one of {', '.join(BALANCE_MODES)}, got {value!r}")
        return value
    raise AssertionError(f"unhandled settings type {type_name} for {name}")  # pragma: no cover


def settings_from_mapping(
    mapping: Mapping[str, Any], base: SandboxSettings | None = None
) -> SandboxSettings:
    """Return ``base`` (default: the defaults) with the fields in ``mapping`` changed.

    Values may be native (JSON) or strings (CLI); keys may use ``-`` or ``_``. Raises
    ``ValueError`` naming the field for an unknown key or a bad value; ``base`` is not modified.
    """
    types = _field_types()
    changes: dict[str, Any] = {}
    for raw_key, value in mapping.items():
        key = str(raw_key).replace("-", "_")
        if key not in types:
            raise ValueError(f"unknown sandbox setting {raw_key!r}")
        changes[key] = _coerce(key, types[key], value)
    return dataclasses.replace(base or SandboxSettings(), **changes)


def cli_options() -> list[dict[str, Any]]:
    """Describe every setting as a CLI option, for the ``hotfolder sandbox`` command.

    Each item: ``name`` (field), ``flag`` (``--kebab-case``), ``type`` (``int``/``float``/
    ``str``/``bool``), ``default``, ``help``. Booleans are meant as ``--flag/--no-flag`` pairs;
    ``balance_creates`` (type ``int``) has default ``None`` (unlimited). Pass the parsed values
    (only the ones the user gave) to :func:`settings_from_mapping`.
    """
    defaults = SandboxSettings()
    out: list[dict[str, Any]] = []
    for f in fields(SandboxSettings):
        type_name = str(f.type)
        py_type = {"bool": bool, "int": int, "int | None": int, "float": float, "str": str}[type_name]
        out.append(
            {
                "name": f.name,
                "flag": "--" + f.name.replace("_", "-"),
                "type": py_type,
                "default": getattr(defaults, f.name),
                "help": SETTING_HELP[f.name],
            }
        )
    return out
