"""Shared fixtures: a real sandbox on loopback, real folders, real config files.

Helpers (paths, the voice, write_config, wait_for, FakeClock) are in helpers.py; the sandbox's
and the client's own fixtures are plugins, so no test imports this module.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import FAST_SANDBOX

pytest_plugins = ["sandbox_fixtures", "client_fixtures"]


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
