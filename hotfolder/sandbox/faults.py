"""Fault decisions: which request gets dropped, delayed, refused by the gateway or truncated.

Every decision comes from one ``random.Random(seed)``. Each request consumes exactly four draws
whatever the settings are, so a given seed and request order always give the same faults even
when the rates change in between.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from hotfolder.sandbox.settings import SandboxSettings

# Where a request lands decides which faults can hit it.
API = "api"            # /open/v1/...: drop, gateway, error, slow
UPLOAD = "upload"      # PUT of a signed upload URL: drop, slow
DOWNLOAD = "download"  # GET of results/files: drop, slow, truncate


@dataclass(frozen=True)
class Decision:
    """What to do to one request. ``kind`` is ``None``, ``"drop"``, ``"gateway"`` or ``"error"``.

    ``before`` says whether a drop or gateway fault intercepts the request before the service
    processes it (no side effect) or after (the work is done, the answer is lost).
    ``truncate_fraction`` (downloads only) is the share of the body sent before closing.
    """

    slow: bool = False
    kind: str | None = None
    before: bool = True
    gateway_status: int = 502
    truncate_fraction: float | None = None

    @property
    def name(self) -> str | None:
        """The fault's name for the journal (``slow`` only when nothing worse happened)."""
        if self.kind is not None:
            return self.kind
        if self.truncate_fraction is not None:
            return "truncate"
        return "slow" if self.slow else None


NO_FAULT = Decision()


class Faults:
    """Thread-safe, seeded source of fault decisions and of the sandbox's other coin flips."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        """Restart the sequence of decisions from ``seed``."""
        with self._lock:
            self._rng = random.Random(seed)

    def chance(self, rate: float) -> bool:
        """One coin flip that comes up True with probability ``rate`` (always one draw)."""
        with self._lock:
            draw = self._rng.random()
        return draw < rate

    def decide(self, settings: SandboxSettings, surface: str) -> Decision:
        """Decide the faults for one request arriving on ``surface`` (API/UPLOAD/DOWNLOAD)."""
        with self._lock:
            u_slow, u_kind, u_sub, u_trunc = (self._rng.random() for _ in range(4))
        slow = u_slow < settings.slow_rate and settings.slow_seconds > 0
        kind: str | None = None
        before = True
        status = 502
        # Exclusive outcomes share one draw: [0, drop) drop, then gateway, then error.
        drop = settings.drop_rate
        gateway = settings.gateway_error_rate if surface == API else 0.0
        error = settings.error_rate if surface == API else 0.0
        if u_kind < drop:
            kind = "drop"
            # A download has no side effect to lose, so it is always dropped up front.
            before = surface == DOWNLOAD or u_sub < 0.5
        elif u_kind < drop + gateway:
            kind = "gateway"
            # 502/503: the gateway never reached the service; 504: it gave up waiting for it.
            status = 502 if u_sub < 1 / 3 else 503 if u_sub < 2 / 3 else 504
            before = status != 504
        elif u_kind < drop + gateway + error:
            kind = "error"
        truncate: float | None = None
        if kind is None and surface == DOWNLOAD and u_trunc < settings.truncate_rate:
            truncate = u_sub  # how much of the body gets through
        return Decision(slow, kind, before, status, truncate)


_REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


def gateway_html(status: int) -> bytes:
    """The HTML page an nginx gateway shows for ``status``."""
    title = f"{status} {_REASONS.get(status, 'Error')}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
