"""The request journal: an in-memory, thread-safe record of every API and storage request."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable

# Old entries are forgotten past this many so a long-running demo does not grow without bound.
MAX_ENTRIES = 100_000


class Journal:
    """Append-only list of request records, each with an increasing ``seq`` (from 1).

    An entry has ``seq``, ``time`` (unix, when the request arrived), ``method``, ``path``
    (never the query string: it may hold signatures), ``endpoint``, ``code`` (envelope code,
    or ``None``), ``http_status`` (``None`` when no answer was sent), ``fault`` and
    ``processed`` (whether the request reached the service, i.e. had its effect).
    Secrets (secret_key, token values, URL signatures) are never recorded.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=MAX_ENTRIES)
        self._seq = 0

    def record(
        self,
        *,
        method: str,
        path: str,
        endpoint: str,
        code: int | None,
        http_status: int | None,
        fault: str | None,
        processed: bool,
        time: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Append one entry and return it (a copy is kept)."""
        with self._lock:
            self._seq += 1
            entry = {
                "seq": self._seq,
                "time": self._clock() if time is None else time,
                "method": method,
                "path": path,
                "endpoint": endpoint,
                "code": code,
                "http_status": http_status,
                "fault": fault,
                "processed": processed,
                **extra,
            }
            self._entries.append(entry)
            return dict(entry)

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        """Entries with ``seq`` greater than ``seq``, oldest first."""
        with self._lock:
            return [dict(e) for e in self._entries if e["seq"] > seq]
