"""The one place logging is configured.

structlog renders for a person on a terminal and as JSON lines otherwise (journald, files). The
job id and name are bound with contextvars (:func:`job_context`) so every line about a job carries
them, and every module logger carries its name (``logger=hotfolder.daemon``). Secrets are scrubbed:
any value registered with :func:`register_secret` is replaced wherever it appears (exception text
included), and keys that name secrets are masked.

Logging never breaks a job. Lines go through a guarded writer: when the stream's consumer is gone
(``hotfolder run 2>&1 | head``, journald restarting, a full disk under a log file) the line is
dropped and counted (:func:`dropped_lines`) instead of raising inside the code that logged, and a
value whose ``repr`` raises is rendered as a placeholder. A CLI that catches ``BrokenPipeError`` on
its own output calls :func:`quiet_broken_pipe` once, deliberately.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from io import StringIO
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, ExcInfo, Processor, WrappedLogger

__all__ = ["MASK", "configure", "dropped_lines", "get_logger", "job_context", "quiet_broken_pipe",
           "register_secret", "scrub"]

from hotfolder.logwriter import (_count_dropped, _GuardedLogger, _GuardedLoggerFactory,  # noqa: E402,F401
                                 _writer_for, dropped_lines, quiet_broken_pipe)

MASK = "***"
_SECRET_KEYS = frozenset({"secret_key", "access_token", "token", "authorization", "password",
                          "webhook_secret"})

# Secrets are kept as an immutable tuple, longest first, swapped whole under the lock: scrub() runs
# on every line from many threads and must never see a set change size mid-iteration, and a secret
# that contains another must be masked whole, not left with a visible tail.
_secrets: tuple[str, ...] = ()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line (it is replaced by ``***``).

    Values shorter than 4 characters are ignored: masking "ab" everywhere would mangle lines
    without protecting anything.
    """
    global _secrets
    if value and len(value) >= 4:
        with _lock:
            if value not in _secrets:
                _secrets = tuple(sorted((*_secrets, value), key=len, reverse=True))


def scrub(text: str) -> str:
    """``text`` with every registered secret masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


# -- a wrapper class whose log calls never raise --------------------------------------------------
_LOG_METHODS = ("debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "msg",
                "log")


def _emergency_line(bound: Any, exc: BaseException) -> None:
    """A log call failed inside the logging layer: count its line, and say so if possible.

    The note is a JSON line (readable by people too) naming only the exception type: its message
    could be the very text that failed to render.
    """
    _count_dropped()
    wrapped = getattr(bound, "_logger", None)
    if isinstance(wrapped, _GuardedLogger):
        wrapped.msg(f'{{"event": "log_call_failed", "error": "{type(exc).__name__}"}}')


def _never_raise(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` with any exception contained (counted, and noted on the stream if possible).

    Covers what the renderer guard cannot: ``log.info("%s", obj)`` interpolation with an ``obj``
    whose ``__str__`` raises, a misbehaving processor, a wrapped logger that raises.
    """
    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        async def aguarded(self: Any, *args: Any, **kw: Any) -> Any:
            try:
                return await method(self, *args, **kw)
            except Exception as exc:
                _emergency_line(self, exc)
                return None
        return aguarded

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kw: Any) -> Any:
        try:
            return method(self, *args, **kw)
        except Exception as exc:
            _emergency_line(self, exc)
            return None
    return guarded


@functools.cache
def _wrapper_class(level: int) -> type:
    """structlog's filtering bound logger for ``level``, with every log method guarded."""
    base = structlog.make_filtering_bound_logger(level)
    names = [*_LOG_METHODS, *(f"a{name}" for name in _LOG_METHODS)]
    methods = {name: _never_raise(getattr(base, name)) for name in names if hasattr(base, name)}
    return type(f"Guarded{base.__name__}", (base,), methods)


# -- processors -----------------------------------------------------------------------------------
def _add_logger_name(logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """``logger=<name>`` on every line of a named logger (a value bound explicitly wins)."""
    name = getattr(logger, "name", None)
    if name and isinstance(name, str):
        event.setdefault("logger", name)
    return event


def _scrub_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, BaseException):
        return scrub(repr(value))
    if depth < 8:  # structured tracebacks are nested dicts and lists; stop at silly depths
        if isinstance(value, dict):
            return {k: MASK if isinstance(k, str) and k.lower() in _SECRET_KEYS
                    else _scrub_value(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [_scrub_value(v, depth + 1) for v in value]
        if isinstance(value, tuple):
            return tuple(_scrub_value(v, depth + 1) for v in value)
    return value


def _scrub_processor(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Mask secret-named keys and registered secrets in values (nested ones too)."""
    for key, value in list(event.items()):
        if isinstance(key, str) and key.lower() in _SECRET_KEYS:
            event[key] = MASK
        elif key == "exc_info":
            # Left for the console renderer, which formats it with _scrubbed_traceback; turning it
            # into a string here would make structlog render sys.exc_info() instead.
            continue
        else:
            event[key] = _scrub_value(value)
    return event


_TIME_KEYS = frozenset({"until", "deadline", "expires", "since"})
_TIME_SUFFIXES = ("_at", "_until", "_deadline")
# Named like times but not times: the download resume offset is a byte count (chanjing client).
_NOT_TIME_KEYS = frozenset({"resumed_at"})
# 2001-09-09 .. 2100-01-01: a seconds epoch. Bigger numbers (milliseconds, byte counts) stay as is.
_EPOCH_MIN, _EPOCH_MAX = 1e9, 4102444800.0


def _is_time_key(key: Any) -> bool:
    return (isinstance(key, str) and key not in _NOT_TIME_KEYS
            and (key in _TIME_KEYS or key.endswith(_TIME_SUFFIXES)))


def _iso_utc(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    spec = "seconds" if float(epoch).is_integer() else "milliseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _epochs_processor(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Render Unix times under time-like keys (``until``, ``*_at``, ...) as ISO 8601 UTC."""
    for key, value in event.items():
        if (isinstance(value, int | float) and not isinstance(value, bool) and _is_time_key(key)
                and _EPOCH_MIN < value < _EPOCH_MAX):
            event[key] = _iso_utc(value)
    return event


def _scrubbed_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    """ConsoleRenderer's exception formatter: structlog's plain traceback, secrets masked.

    Plain on purpose: a colouring formatter (Rich) may split a secret with escape codes, and then
    the text no longer contains it to be masked.
    """
    buffer = StringIO()
    structlog.dev.plain_traceback(buffer, exc_info)
    sio.write(scrub(buffer.getvalue()))


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _safe_value(value: Any, depth: int = 0) -> Any:
    """``value`` reduced to things any renderer can print without calling user code."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if depth < 4 and isinstance(value, dict):
        return {_safe_repr(k) if not isinstance(k, str) else k: _safe_value(v, depth + 1)
                for k, v in value.items()}
    if depth < 4 and isinstance(value, list | tuple):
        return [_safe_value(v, depth + 1) for v in value]
    return _safe_repr(value)


def _safe_exception_text(exc_info: Any) -> str:
    """The traceback ``exc_info`` stands for (an exception, a triple, or True), or a placeholder."""
    if isinstance(exc_info, BaseException):
        exc: BaseException | None = exc_info
    elif isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc = exc_info[1] if isinstance(exc_info[1], BaseException) else None
    else:
        exc = sys.exception()  # exc_info=True: the exception being handled, if any
    if exc is None:
        return _safe_repr(exc_info)
    try:
        return "".join(traceback.format_exception(exc))
    except Exception:
        return f"<unformattable {type(exc).__name__}>"


class _SafeRenderer:
    """Wraps the final renderer: its output is scrubbed, and it cannot raise.

    A value whose ``repr`` raises (or a dict that contains itself) makes the renderer fail; then
    the line is rendered again from placeholders (``<unrepresentable Foo>``) with
    ``log_render_error`` naming what went wrong, so the event still shows up.
    """

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> str:
        try:
            # A copy: ConsoleRenderer pops keys, and the fallback needs the original.
            return scrub(str(self._renderer(logger, name, dict(event))))
        except Exception as exc:
            error = type(exc).__name__  # `exc` itself is unbound once the except block ends
        safe = {key: _safe_value(value) for key, value in event.items() if key != "exc_info"}
        if event.get("exc_info"):
            safe["exception"] = _safe_exception_text(event["exc_info"])
        safe["log_render_error"] = error
        try:
            return scrub(str(self._renderer(logger, name, _scrub_processor(logger, name, safe))))
        except Exception:
            # Even placeholders failed (a str subclass with a raising __repr__...): the bare event.
            return scrub(f"{_safe_value(event.get('event'))} log_render_error={error}")


# -- configuration --------------------------------------------------------------------------------
def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # no isatty, or a closed file (ValueError)
        return False


def _colors_wanted(stream: Any) -> bool:
    """Colours only for a person at a terminal who has not asked for none (https://no-color.org)."""
    return _isatty(stream) and not os.environ.get("NO_COLOR")


def configure(level: str = "info", json_lines: bool | None = None, stream: Any = None) -> None:
    """Configure structlog (and stdlib logging for libraries) once, at process start.

    ``stream`` defaults to ``sys.stderr``. ``json_lines`` None means console lines on a terminal
    and JSON lines otherwise; console lines are coloured only on a terminal without ``NO_COLOR``,
    even when forced with ``json_lines=False``. Writing never raises (see :func:`dropped_lines`).
    """
    stream = sys.stderr if stream is None else stream
    if json_lines is None:
        json_lines = not _isatty(stream)
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _epochs_processor,
    ]
    renderer: Processor
    if json_lines:
        # Structured traceback as the `exception` field, before scrubbing so its text is masked.
        # No locals: they would put tokens and request bodies into the logs.
        processors.append(structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)))
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    else:
        # ConsoleRenderer formats exc_info itself (format_exc_info before it makes it warn).
        renderer = structlog.dev.ConsoleRenderer(colors=_colors_wanted(stream),
                                                 exception_formatter=_scrubbed_traceback)
    processors += [_scrub_processor, _SafeRenderer(renderer)]
    structlog.configure(
        processors=processors,
        wrapper_class=_wrapper_class(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=_GuardedLoggerFactory(_writer_for(stream)),
        cache_logger_on_first_use=False,
    )
    # httpx logs full URLs (signed URLs, ids) at INFO: keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger whose lines carry ``logger=<name>`` (default: the caller's module).

    Module loggers are made at import time, before :func:`configure` runs. structlog returns a
    lazy proxy that keeps ``name`` as the logger factory's argument and builds the real logger
    from the configuration current at each call; the configured factory names its logger after
    it and a processor adds the field. (Binding ``logger=`` as an initial value is not possible:
    ``logger`` is a parameter of ``structlog.wrap_logger``.)
    """
    if name is None:
        with contextlib.suppress(Exception):
            name = sys._getframe(1).f_globals.get("__name__")
    return structlog.get_logger(name) if name else structlog.get_logger()


@contextlib.contextmanager
def job_context(job_id: int, name: str) -> Iterator[None]:
    """Bind ``job_id`` and ``job`` (its name) to every log line inside the block (this thread)."""
    with structlog.contextvars.bound_contextvars(job_id=job_id, job=name):
        yield
