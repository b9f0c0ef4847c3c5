"""Locks beside the ledger: one daemon per ledger, and one access token shared by every process.

Both are advisory ``flock`` locks on small files next to the ledger, released by the kernel when
a process dies, so a SIGKILLed daemon never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from hotfolder.errors import LedgerError, LedgerLockedError
from hotfolder.ledger import Ledger


class DaemonLock:
    """An exclusive advisory lock beside the ledger, so two daemons never drive the same jobs."""

    def __init__(self, ledger_path: Path) -> None:
        self.path = Path(str(ledger_path) + ".lock")
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`LedgerLockedError` naming the holder's pid."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
        except OSError as exc:
            raise LedgerError(f"cannot create the lock file {self.path}: {exc.strerror}; fix [ledger] path "
                              "or its folder's permissions") from exc
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise LedgerLockedError(
                f"another hotfolder daemon (pid {holder}) is already using the ledger {self.path.name[:-5]}: "
                "stop it first, or give this one its own [ledger] path"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "DaemonLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LedgerTokenStore:
    """The client's access token kept in the ledger, refreshed under a cross-process file lock.

    Issuing a token invalidates the previous one, so every process using these credentials must
    share one token: the CLI and the daemon both read it from here.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._lock_path = Path(str(ledger.path) + ".token.lock")
        self._thread_lock = threading.Lock()

    def _key(self, app_id: str) -> str:
        return f"token:{app_id}"

    def load(self, app_id: str) -> Any:
        from hotfolder.chanjing import Token

        raw = self.ledger.get_value(self._key(app_id))
        if not raw:
            return None
        data = json.loads(raw)
        return Token(value=data["value"], expires_at=float(data["expires_at"]))

    def refresh(self, app_id: str, stale: Any, fetch: Callable[[], Any]) -> Any:
        with self._thread_lock, open(self._lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                current = self.load(app_id)
                if current is not None and current != stale:
                    return current  # another process refreshed while we waited
                token = fetch()
                self.ledger.set_value(self._key(app_id),
                                      json.dumps({"value": token.value, "expires_at": token.expires_at}))
                return token
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
