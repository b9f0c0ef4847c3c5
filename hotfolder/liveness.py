"""The daemon's own view of whether it is alive, for the systemd watchdog and ``GET /healthz``.

Being alive is more than "the process exists": the main loop must keep turning, the worker
threads must not have died, and (optionally) a worker must not sit in one step for hours.
Components report to one thread-safe :class:`Liveness`:

- a loop registers a heartbeat (``register("main_loop", max_silence=90)``) and calls
  ``beat("main_loop")`` every turn; a loop about to block on purpose says for how long
  (``beat("main_loop", expect_wait=60)``) so a long idle wait is not mistaken for a hang;
- a worker pool registers its threads (``register_thread(t)``): a started thread that is no
  longer alive has died; a worker may mark itself busy (``with liveness.busy("upload job 12"):``)
  and counts as stuck only if its registration gave a ``max_busy``;
- anything else is a check function (``add_check``): the ledger's folder not writable, the inbox
  missing, … returning the problems it sees.

``check()`` answers ``(ok, reasons)`` with reasons a person can act on (``/healthz``).
:class:`WatchdogPinger` turns it into ``WATCHDOG=1`` pings: it pings only while healthy, so a
hung or broken daemon stops pinging and systemd restarts it after ``WatchdogSec=``. "Healthy" for
the watchdog leaves out the checks a restart cannot cure (a NAS folder gone, a full disk):
restarting for those would only cut transfers short, again and again, while ``/healthz`` and
``STATUS=`` already say what is wrong. A check opts in with ``add_check(fn, watchdog=True)``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from hotfolder.log import get_logger
from hotfolder.sdnotify import Notifier
from hotfolder.states import ACTIVE, State

log = get_logger(__name__)

# A check returns nothing (all well), one problem, or several. It should be cheap and must not
# block for long: it runs on the watchdog thread (every WatchdogSec/2) and on each /healthz.
CheckResult = str | Iterable[str] | None
CheckFn = Callable[[], CheckResult]


class Problem(NamedTuple):
    """One thing wrong. ``key`` names it without its numbers ("main_loop:silent" rather than
    "... for 95 s"), so a watcher can tell "the same problem, older" from "a new problem"."""

    key: str
    reason: str


class Health(NamedTuple):
    """The answer of :meth:`Liveness.check`: ``ok, reasons = liveness.check()``."""

    ok: bool
    reasons: list[str]

    def as_dict(self) -> dict[str, object]:
        """The JSON body for ``/healthz``."""
        return {"ok": self.ok, "reasons": list(self.reasons)}


@dataclass
class _Heartbeat:
    label: str
    max_silence: float
    last: float
    expect_wait: float = 0.0


@dataclass
class _Worker:
    thread: threading.Thread
    max_busy: float | None
    busy_since: float | None = None
    busy_with: str = ""


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


class Liveness:
    """A thread-safe registry of heartbeats, worker threads and check functions.

    ``clock`` is monotonic seconds (injectable for tests); every time stored or compared here
    comes from it, never from the wall clock, which may jump.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._beats: dict[str, _Heartbeat] = {}
        self._workers: dict[int, _Worker] = {}      # by id(thread): names may repeat
        self._checks: list[tuple[str, CheckFn, bool]] = []

    # -- heartbeats -----------------------------------------------------------------------------

    def register(self, name: str, *, max_silence: float, label: str | None = None) -> None:
        """A component that must call :meth:`beat` at least every ``max_silence`` seconds.

        It counts as having just beaten, so start-up gets the full allowance. ``label`` is how
        reasons name it (default: ``name`` with spaces, "main_loop" → "main loop").
        """
        if max_silence <= 0:
            raise ValueError("max_silence must be greater than 0")
        with self._lock:
            self._beats[name] = _Heartbeat(label or name.replace("_", " "), float(max_silence), self.clock())

    def beat(self, name: str, *, expect_wait: float = 0.0) -> None:
        """``name`` is alive now. ``expect_wait``: it is about to block this long on purpose.

        The allowed silence until the next beat is then ``expect_wait + max_silence``. An
        unregistered name is ignored, so code may beat whether or not anyone watches.
        """
        now = self.clock()
        with self._lock:
            hb = self._beats.get(name)
            if hb is not None:
                hb.last = now
                hb.expect_wait = max(0.0, expect_wait)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._beats.pop(name, None)

    # -- worker threads -------------------------------------------------------------------------

    def register_thread(self, thread: threading.Thread, *, max_busy: float | None = None) -> None:
        """Watch ``thread``: once started, it must stay alive.

        ``max_busy``: if set, a worker inside one :meth:`busy` block for longer than this counts
        as stuck. Leave it None for steps that may legitimately take very long (a big upload on
        a slow line): then only a dead thread is a problem.
        """
        with self._lock:
            self._workers[id(thread)] = _Worker(thread, max_busy)

    def register_threads(self, threads: Iterable[threading.Thread], *, max_busy: float | None = None) -> None:
        for thread in threads:
            self.register_thread(thread, max_busy=max_busy)

    def unregister_thread(self, thread: threading.Thread) -> None:
        """Stop watching ``thread`` (before ending it on purpose, e.g. a pool being resized)."""
        with self._lock:
            self._workers.pop(id(thread), None)

    @contextlib.contextmanager
    def busy(self, what: str) -> Iterator[None]:
        """Mark the calling thread busy with ``what`` for the block. No-op for unwatched threads."""
        me = threading.current_thread()
        now = self.clock()
        with self._lock:
            worker = self._workers.get(id(me))
            if worker is not None and worker.thread is me:
                worker.busy_since, worker.busy_with = now, what
            else:
                worker = None
        try:
            yield
        finally:
            if worker is not None:
                with self._lock:
                    worker.busy_since, worker.busy_with = None, ""

    # -- extra checks ---------------------------------------------------------------------------

    def add_check(self, fn: CheckFn, *, name: str | None = None, watchdog: bool = False) -> None:
        """Add a check: ``fn()`` returns None/"" when all is well, else a reason or a list of them.

        Reasons should be stable text (no ages or counters) so a change of reasons means a
        change of problem. An exception in ``fn`` is itself reported as a reason.
        ``watchdog``: its problems also stop the watchdog pings, i.e. a restart may cure them.
        Leave it False for conditions outside the process (a missing or read-only folder).
        """
        with self._lock:
            self._checks.append((name or str(getattr(fn, "__name__", "check")), fn, watchdog))

    # -- the verdict ----------------------------------------------------------------------------

    def check(self, now: float | None = None, *, watchdog_only: bool = False) -> Health:
        """Is the daemon alive? ``(ok, reasons)``; ``now`` defaults to the clock.

        ``watchdog_only``: leave out the checks not added with ``watchdog=True``.
        """
        found = self.problems(now, watchdog_only=watchdog_only)
        return Health(ok=not found, reasons=[p.reason for p in found])

    def problems(self, now: float | None = None, *, watchdog_only: bool = False) -> list[Problem]:
        """Everything wrong now, in a stable order (heartbeats, threads, checks); [] when healthy."""
        now = self.clock() if now is None else now
        problems: list[Problem] = []
        with self._lock:
            beats = list(self._beats.items())
            workers = [(w.thread, w.max_busy, w.busy_since, w.busy_with) for w in self._workers.values()]
            checks = [(name, fn) for name, fn, for_watchdog in self._checks
                      if for_watchdog or not watchdog_only]
        for name, hb in beats:
            silent = now - hb.last
            limit = hb.expect_wait + hb.max_silence
            if silent > limit:
                problems.append(Problem(
                    f"{name}:silent", f"{hb.label} has not turned for {_seconds(silent)} (limit {_seconds(limit)})"))
        for thread, max_busy, since, what in workers:
            tname = thread.name
            # Not yet started (ident None) is not dead: pools may register before start().
            if thread.ident is not None and not thread.is_alive():
                problems.append(Problem(f"thread:{tname}:dead", f"worker {tname} died"))
            elif max_busy is not None and since is not None and now - since > max_busy:
                problems.append(Problem(
                    f"thread:{tname}:stuck",
                    f"worker {tname} stuck in {what} for {_seconds(now - since)} (limit {_seconds(max_busy)})"))
        # Outside the lock: a check may do I/O, and beats must never wait on it.
        for name, fn in checks:
            try:
                result = fn()
            except Exception as exc:   # a broken check is a problem to report, not to crash on
                problems.append(Problem(f"check:{name}:error", f"check {name} failed: {exc!r}"))
                continue
            if not result:
                continue
            for reason in [result] if isinstance(result, str) else list(result):
                if reason:
                    problems.append(Problem(f"check:{name}:{reason}", str(reason)))
        return problems


# -- ready-made checks --------------------------------------------------------------------------

def folder_present(path: Path, what: str) -> CheckFn:
    """A check: ``path`` exists and is a folder (e.g. the inbox, on a NAS that may vanish)."""
    def check() -> str | None:
        if not path.exists():
            return f"{what} {path} is missing"
        if not path.is_dir():
            return f"{what} {path} is not a folder"
        return None
    check.__name__ = f"{what}_present"
    return check


def folder_writable(path: Path, what: str) -> CheckFn:
    """A check: the process may create files in folder ``path`` (e.g. the ledger's folder).

    ``os.access`` also sees a read-only mount (EROFS), e.g. a ReadWritePaths= that lost it.
    """
    def check() -> str | None:
        if not path.is_dir():
            return f"{what} {path} is missing"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{what} {path} is not writable"
        return None
    check.__name__ = f"{what}_writable"
    return check


# -- the STATUS= line --------------------------------------------------------------------------

_ORDER = [State.WAITING, *sorted(ACTIVE, key=list(State).index)]
_ENDED = [State.DONE, State.FAILED, State.CANCELLED]


def status_line(counts: Mapping[str, int], health: Health | None = None) -> str:
    """The one-line summary for ``STATUS=`` from ``ledger.counts()`` (and problems, if any).

    E.g. ``2 queued, 1 generating; 41 done, 2 failed``, ``idle; 41 done``, or with problems
    ``unhealthy: inbox /srv/hotfolder/inbox is missing | idle; 41 done``. Cheap to build every
    turn: :meth:`Notifier.status` only sends it when it changed.
    """
    working = [f"{counts[st]} {st}" for st in _ORDER if counts.get(st)]
    ended = [f"{counts[st]} {st}" for st in _ENDED if counts.get(st)]
    line = f"{', '.join(working) or 'idle'}; {', '.join(ended) or 'nothing finished yet'}"
    if health is not None and not health.ok:
        line = f"unhealthy: {'; '.join(health.reasons)} | {line}"
    return line


# -- the systemd watchdog -----------------------------------------------------------------------

class WatchdogPinger(threading.Thread):
    """Sends ``WATCHDOG=1`` every ``interval`` seconds while ``liveness`` sees no problem.

    When not ok it stops pinging (systemd then kills and restarts the service once
    ``WatchdogSec=`` passes without a ping), logs the reasons once per change of problems and
    puts them in ``STATUS=``; if the problems clear in time, pinging resumes. Only checks added
    with ``watchdog=True`` count here (see the module's docstring). It waits on
    ``stop`` between turns, so setting ``stop`` ends it at once.

    ``interval`` defaults to the notifier's :meth:`~Notifier.watchdog_interval`; with neither,
    :meth:`run` returns at once (no watchdog configured).
    """

    def __init__(self, notifier: Notifier, liveness: Liveness, stop: threading.Event, *,
                 interval: float | None = None, name: str = "hotfolder-watchdog") -> None:
        super().__init__(name=name, daemon=True)
        self.notifier = notifier
        self.liveness = liveness
        self.stop = stop
        self.interval = interval if interval is not None else notifier.watchdog_interval()
        self.pings = 0          # how many pings were sent (for tests and /metrics)

    def run(self) -> None:
        if self.interval is None or self.interval <= 0:
            return
        failing: frozenset[str] | None = None     # the problems last reported, None when healthy
        while not self.stop.is_set():
            try:
                problems = self.liveness.problems(watchdog_only=True)
            except Exception as exc:   # a bug in the checks: don't ping blind, say why
                log.exception("liveness_check_crashed")
                problems = [Problem("crash", f"liveness check crashed: {exc!r}")]
            if not problems:
                if failing is not None:
                    log.info("watchdog_healthy_again", action="pinging systemd's watchdog again")
                    failing = None
                if self.notifier.watchdog():
                    self.pings += 1
            elif (keys := frozenset(p.key for p in problems)) != failing:
                failing = keys
                reasons = [p.reason for p in problems]
                log.error("watchdog_unhealthy", reasons=reasons,
                          action="not pinging: systemd restarts the service unless this clears")
                self.notifier.status("unhealthy: " + "; ".join(reasons))
            if self.stop.wait(self.interval):
                break


def start_watchdog(notifier: Notifier, liveness: Liveness, stop: threading.Event) -> WatchdogPinger | None:
    """Start a :class:`WatchdogPinger` if systemd asked for a watchdog; None if it did not."""
    if notifier.watchdog_interval() is None:
        return None
    pinger = WatchdogPinger(notifier, liveness, stop)
    pinger.start()
    log.info("watchdog_started", interval_s=pinger.interval)
    return pinger
