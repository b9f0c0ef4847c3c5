"""Helpers shared by the tests, defined once: paths, the voice, config files, waiting, clocks.

Fixtures live in conftest.py; the fixture modules for the sandbox and the client are loaded with
``pytest_plugins`` there, so test modules import helpers from here, never from conftest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO / "tests" / "media"
EXAMPLES = REPO / "examples"
VOICE = "C-f2429d07554749839849497589199916"

# Fast timings and generous limits: pacing is the subject of its own tests only.
FAST_SANDBOX = dict(file_ready_delay=0.2, queue_seconds=0.2, generate_seconds=0.6,
                    creates_per_minute=600, file_calls_per_minute=6000, queries_per_second=200)


def write_config(root: Path, base_url: str, **sections: dict[str, Any]) -> Path:
    """Write a hotfolder.toml under ``root`` with fast timings; ``sections`` override keys."""
    data: dict[str, dict[str, Any]] = {
        "api": {"base_url": base_url, "app_id": "sandbox", "secret_key": "sandbox", "timeout_seconds": 3},
        "folders": {"inbox": "inbox", "outbox": "outbox", "archive": "archive", "failed": "failed"},
        "ledger": {"path": "state/ledger.db"},
        "watch": {"settle_seconds": 0.3, "poll_interval": 0.2, "rescan_seconds": 2},
        "limits": {"creates_per_minute": 600, "file_calls_per_minute": 6000, "queries_per_second": 200},
        "retry": {"file_ready_timeout": 30},
        "lipsync": {"audio_man_id": VOICE},
        # Off unless a test is about it: parallel runs must not fight over the default port.
        "server": {"listen": ""},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    lines = []
    for name, values in data.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            else:
                lines.append(f"{key} = {value}")
        lines.append("")
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    path = root / "hotfolder.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
             message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class FakeClock:
    """A clock that only moves when something sleeps or the test moves it (thread-safe)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the caller binds it soon after)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def all_jobs(ledger: Any) -> list[Any]:
    """Every job of a (small, test) ledger, oldest first. The daemon never needs this."""
    from hotfolder.ledger import reports

    return [ledger.get(row["id"]) for row in reports.iter_summaries(ledger)]
