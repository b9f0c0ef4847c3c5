"""Where the access token lives between calls.

Issuing a token invalidates the previous one, so every user of one app_id must share a token and
refresh it under one lock. :class:`MemoryTokenStore` does that for the threads of one process;
the ledger provides a store shared by processes (``hotfolder.ledger.LedgerTokenStore``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from hotfolder.chanjing.models import Token


@runtime_checkable
class TokenStore(Protocol):
    """Keeps one token per app_id; ``refresh`` is the only way a new one is fetched."""

    def load(self, app_id: str) -> Token | None:
        """The stored token, or None."""
        ...

    def refresh(self, app_id: str, stale: Token | None, fetch: Callable[[], Token]) -> Token:
        """Under a lock shared by every user of this store: if the stored token is not ``stale``
        (someone else refreshed already) return it, else call ``fetch()``, save and return it."""
        ...


class MemoryTokenStore:
    """A :class:`TokenStore` for one process: a dict under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, Token] = {}

    def load(self, app_id: str) -> Token | None:
        """The stored token, or None."""
        with self._lock:
            return self._tokens.get(app_id)

    def refresh(self, app_id: str, stale: Token | None, fetch: Callable[[], Token]) -> Token:
        """Fetch a new token unless another thread already replaced ``stale``.

        The lock is held across ``fetch()`` on purpose: two concurrent fetches would invalidate
        each other's token.
        """
        with self._lock:
            current = self._tokens.get(app_id)
            if current is not None and current != stale:
                return current
            token = fetch()
            self._tokens[app_id] = token
            return token
