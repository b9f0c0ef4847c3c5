"""Shared fixtures: a real sandbox on loopback, real folders, real config files."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO / "tests" / "media"
EXAMPLES = REPO / "examples"
VOICE = "C-f2429d07554749839849497589199916"

# Fast timings and generous limits: pacing is the subject of its own tests only.
FAST_SANDBOX = dict(file_ready_delay=0.2, queue_seconds=0.2, generate_seconds=0.6,
                    creates_per_minute=600, file_calls_per_minute=6000, queries_per_second=200)


@pytest.fixture
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A started sandbox with fast timings, stopped (threads joined) after the test."""
    from hotfolder.sandbox import Sandbox, SandboxSettings

    sb = Sandbox(tmp_path_factory.mktemp("sandbox"), settings=SandboxSettings(**FAST_SANDBOX))
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


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
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must stop the threads it started (sandbox, daemon, watchers)."""
    before = set(threading.enumerate())
    yield
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()
                  and (not t.daemon or t.name.startswith("hotfolder-"))]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"leaked threads: {[t.name for t in leaked]}")


@pytest.fixture(autouse=True)
def fresh_structlog() -> Iterator[None]:
    """Commands configure structlog globally; each test starts from the defaults."""
    import structlog

    yield
    structlog.reset_defaults()
