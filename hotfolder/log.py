"""The one place logging is configured.

structlog renders for a person on a terminal and as JSON lines otherwise (journald, files). The
job id and name are bound with contextvars (:func:`job_context`) so every line about a job carries
them. A last processor scrubs secrets: any value registered with :func:`register_secret` is
replaced wherever it appears, and keys that name secrets are masked.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import structlog

_SECRET_KEYS = {"secret_key", "access_token", "token", "authorization", "password"}
_secrets: set[str] = set()
_lock = threading.Lock()
MASK = "***"


def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line (it is replaced by ``***``)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def scrub(text: str) -> str:
    """``text`` with every registered secret masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _scrub_processor(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event.items()):
        if key.lower() in _SECRET_KEYS:
            event[key] = MASK
        elif isinstance(value, str):
            event[key] = scrub(value)
        elif isinstance(value, BaseException):
            event[key] = scrub(repr(value))
    return event


def configure(level: str = "info", json_lines: bool | None = None, stream: Any = None) -> None:
    """Configure structlog (and stdlib logging for libraries) once, at process start."""
    stream = stream or sys.stderr
    if json_lines is None:
        json_lines = not stream.isatty()
    renderer: Any = structlog.processors.JSONRenderer(ensure_ascii=False) if json_lines \
        else structlog.dev.ConsoleRenderer(colors=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # httpx logs full URLs (signed URLs, ids) at INFO: keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; ``name`` becomes the ``logger`` field."""
    return structlog.get_logger(name) if name else structlog.get_logger()


@contextlib.contextmanager
def job_context(job_id: int, name: str) -> Iterator[None]:
    """Bind ``job_id`` and ``job`` (its name) to every log line inside the block (this thread)."""
    with structlog.contextvars.bound_contextvars(job_id=job_id, job=name):
        yield
