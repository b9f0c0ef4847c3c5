"""Watching the inbox. A watcher only enqueues paths and wakes the daemon; intake decides.

Two ways to notice a dropped file sooner than the periodic rescan:

* :class:`Watcher` — filesystem events (watchdog/inotify). Cheap and instant, but inotify sees
  only changes made through this machine's kernel: on NFS, SMB/CIFS, sshfs, rclone and other
  FUSE mounts a file copied in from another machine sends no event at all.
* :class:`PollingWatcher` — lists the inbox every ``poll_seconds`` (scandir + lstat, nothing is
  read) and reports what differs. Works on every filesystem, at a small, bounded cost.

:func:`choose_mode` picks one for ``[watch] mode`` (``auto``: events on a local disk, polling on
network/FUSE filesystems, see :func:`hotfolder.mounts.is_remote`) and :func:`make_watcher` builds
it. Both have the same interface: ``ensure()``, ``drain()``, ``stop()``, ``running``, ``paths``.

Either can miss something (inotify queue overflow, a poll racing a write), so the daemon also
rescans the whole inbox at start and every ``rescan_seconds``. As watchdog's own docs advise,
the watcher is started first, then the rescan, so nothing slips between the two.
"""

from __future__ import annotations

import errno
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from hotfolder import mounts
from hotfolder.log import get_logger
from hotfolder.pairing import is_ignored

log = get_logger("hotfolder.watcher")

WATCH_MODES = ("auto", "events", "polling")
DEFAULT_POLL_SECONDS = 5.0
STOP_JOIN_S = 5.0


class InboxWatcher(Protocol):
    """What the daemon needs from a watcher, whichever mode it uses."""

    paths: "queue.SimpleQueue[str]"

    @property
    def running(self) -> bool: ...

    def ensure(self) -> bool: ...

    def drain(self) -> list[str]: ...

    def stop(self) -> None: ...


class _Enqueue(FileSystemEventHandler):
    def __init__(self, paths: "queue.SimpleQueue[str]", wake: Callable[[], None]) -> None:
        self.paths = paths
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        self.paths.put(str(event.src_path))
        dest = getattr(event, "dest_path", "")
        if dest:
            self.paths.put(str(dest))
        self.wake()


def _drain(paths: "queue.SimpleQueue[str]") -> list[str]:
    out = []
    while True:
        try:
            out.append(paths.get_nowait())
        except queue.Empty:
            return out


class Watcher:
    """Watches ``inbox`` recursively with filesystem events; ``paths`` receives every changed path."""

    def __init__(self, inbox: Path, wake: Callable[[], None]) -> None:
        self.inbox = inbox
        self.wake = wake
        self.paths: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    def ensure(self) -> bool:
        """Start the observer if the inbox is there and it is not running; stop it if the inbox
        vanished (an unmounted share). Returns whether it runs."""
        with self._lock:
            if not self.inbox.is_dir():
                self._stop_locked()
                return False
            if self.running:
                return True
            self._stop_locked()
            observer = Observer()
            try:
                observer.schedule(_Enqueue(self.paths, self.wake), str(self.inbox), recursive=True)
                observer.daemon = True
                observer.start()
            except OSError as exc:
                log.warning("watch_failed", inbox=str(self.inbox), error=str(exc),
                            hint="falling back to periodic rescans")
                return False
            self._observer = observer
            return True

    def drain(self) -> list[str]:
        """Every path enqueued since the last drain."""
        return _drain(self.paths)

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=STOP_JOIN_S)
            self._observer = None


class _Stopped(Exception):
    """Raised inside a listing when stop() was called, to abandon it between folders."""


# inbox-relative path ("a/b/clip.mp4") -> (size, mtime_ns): what intake's settle tracker looks at.
Snapshot = dict[str, tuple[int, int]]


class PollingWatcher:
    """Lists ``inbox`` every ``poll_seconds`` in its own thread and reports what changed.

    Only directory listings and ``lstat`` (no reads, no hashing), never following symlinks, and
    skipping what intake never takes (:func:`hotfolder.pairing.is_ignored`: hidden files and
    folders, temporary names, NAS litter), so a busy ``.sync`` folder costs nothing and wakes
    nobody. A new file, a size or mtime change or a removal enqueues the path(s) on ``paths``
    and calls ``wake()`` once per poll.

    A missing inbox (unmounted share, deleted folder, dead FUSE daemon) is never reported as
    "every file removed": the last good listing is kept, ``watch_inbox_missing`` is logged once,
    and when the inbox is back the poll wakes the daemon (the inbox path is enqueued) and
    reports whatever differs from before. A sub-folder that cannot be listed this time
    (permissions, a transient I/O error) likewise keeps its previous entries.
    """

    def __init__(self, inbox: Path, wake: Callable[[], None], poll_seconds: float = DEFAULT_POLL_SECONDS) -> None:
        if not poll_seconds > 0:
            raise ValueError(f"poll_seconds must be greater than 0, got {poll_seconds!r}")
        self.inbox = Path(inbox)
        self.wake = wake
        self.poll_seconds = float(poll_seconds)
        self.paths: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.scans = 0                       # completed listings (bench, tests, health)
        self.last_scan_seconds = 0.0         # wall time of the last listing
        self._lock = threading.Lock()        # ensure()/stop() against each other
        self._state = threading.Lock()       # the snapshot, against a stale thread after stop()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._snapshot: Snapshot | None = None   # None until a first listing succeeded
        self._dev: int | None = None             # st_dev of the inbox at that listing
        self._ignored: set[str] = set()          # ignored paths seen by the last listing
        self._missing = False
        self._slow_logged = False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def inbox_present(self) -> bool:
        """Whether the inbox could be listed at the last poll (False: missing or unmounted)."""
        return not self._missing

    def ensure(self) -> bool:
        """Start polling if not running. Returns whether the inbox was there at the last poll.

        Unlike the event watcher, the thread keeps running while the inbox is missing: it is
        what notices the inbox coming back.
        """
        with self._lock:
            if not self.running:
                stop = threading.Event()
                self._stop = stop
                # The baseline is taken here, in the caller's thread, before the caller scans:
                # a file arriving after it differs from it, so nothing slips between the daemon's
                # scan and the first poll. Taken in the thread, it could land after the scan.
                try:
                    self._poll(stop)
                except Exception:   # the daemon's loop must go on: the rescan still finds files
                    log.exception("watch_poll_failed", inbox=str(self.inbox))
                thread = threading.Thread(target=self._loop, args=(stop,), name="hotfolder-watch-poll",
                                          daemon=True)
                thread.start()
                self._thread = thread
            return not self._missing

    def drain(self) -> list[str]:
        """Every path enqueued since the last drain."""
        return _drain(self.paths)

    def stop(self) -> None:
        """Stop the thread (within one folder listing; a hung share cannot hold up shutdown for
        more than ``STOP_JOIN_S``, the thread is a daemon thread)."""
        with self._lock:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=STOP_JOIN_S)
                self._thread = None

    # -- the polling thread ----------------------------------------------------------------------
    def _loop(self, stop: threading.Event) -> None:
        # Waiting on the event (not sleeping) lets stop() end the thread at once. A listing slower
        # than poll_seconds (a huge tree on a slow share) stretches the wait so the share is
        # listed at most a third of the time.
        while not stop.wait(max(self.poll_seconds, 2 * self.last_scan_seconds)):
            try:
                self._poll(stop)
            except Exception:   # never let one bad poll end watching; the rescan still runs
                log.exception("watch_poll_failed", inbox=str(self.inbox))

    def _poll(self, stop: threading.Event) -> None:
        """One listing, compared with the previous one; enqueue and wake if anything differs."""
        started = time.monotonic()
        try:
            dev, files, failed_dirs = self._list(stop)
        except _Stopped:
            return
        except OSError as exc:
            self._note_missing(stop, exc.strerror or str(exc))
            return
        elapsed = time.monotonic() - started
        unmounted, back = False, False
        changed: list[str] = []
        with self._state:
            if stop.is_set():
                return   # a stale thread outliving stop() must not overwrite a newer state
            old = self._snapshot
            if old and not files and self._dev is not None and dev != self._dev:
                # The inbox was a mount point and the share went away, leaving the empty local
                # folder underneath: that is "missing", not "everything was deleted".
                unmounted = True
            else:
                for rel_dir in failed_dirs:
                    prefix = rel_dir + "/"
                    for rel, facts in (old or {}).items():
                        if rel.startswith(prefix):
                            files.setdefault(rel, facts)
                back, self._missing = self._missing, False
                if old is not None and files != old:   # dict equality runs in C: the usual case is cheap
                    changed = [rel for rel, facts in files.items() if old.get(rel) != facts]
                    changed += [rel for rel in old if rel not in files]
                self._snapshot, self._dev = files, dev
                self.scans += 1
                self.last_scan_seconds = elapsed
        if unmounted:
            self._note_missing(stop, "the inbox is now an empty folder on another filesystem (share unmounted?)")
            return
        if elapsed > self.poll_seconds / 2 and not self._slow_logged:
            self._slow_logged = True
            log.warning("watch_poll_slow", inbox=str(self.inbox), files=len(files), seconds=round(elapsed, 2),
                        poll_seconds=self.poll_seconds, hint="raise [watch] poll_seconds")
        if back:
            log.info("watch_inbox_back", inbox=str(self.inbox), files=len(files))
        if changed or back:
            for rel in changed:
                self.paths.put(os.path.join(self.inbox, rel))
            if back:
                self.paths.put(str(self.inbox))   # "look at everything again"
            self.wake()

    def _note_missing(self, stop: threading.Event, why: str) -> None:
        with self._state:
            if stop.is_set():
                return
            first, self._missing = not self._missing, True
        if first:
            log.warning("watch_inbox_missing", inbox=str(self.inbox), error=why,
                        hint="is the share mounted? polling goes on and resumes when the inbox is back")

    def _list(self, stop: threading.Event) -> tuple[int, Snapshot, list[str]]:
        """(st_dev of the inbox, every takeable regular file, sub-folders that could not be listed).

        Raises OSError when the inbox itself cannot be listed. Walks like intake's
        ``list_inbox``: no symlink is followed (the inbox path itself may be one, as there),
        ignored folders are not entered and ignored names not stat'ed.
        """
        top = os.stat(self.inbox)
        if not stat.S_ISDIR(top.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(self.inbox))
        known = self._snapshot or {}
        ignored_before = self._ignored
        ignored: set[str] = set()
        files: Snapshot = {}
        failed: list[str] = []
        stack: list[tuple[str, str]] = [("", os.fspath(self.inbox))]
        while stack:
            if stop.is_set():
                raise _Stopped
            rel_dir, abs_dir = stack.pop()
            prefix = rel_dir + "/" if rel_dir else ""
            try:
                with os.scandir(abs_dir) as entries:
                    for entry in entries:
                        rel = prefix + entry.name
                        try:
                            # d_type from readdir: no syscall unless the filesystem leaves it unknown.
                            if entry.is_dir(follow_symlinks=False):
                                # Same test as intake: a folder is skipped if a file in it would be.
                                if is_ignored(rel + "/x") is None:
                                    stack.append((rel, entry.path))
                                continue
                            # is_ignored is a pure function of the path and cost more than the
                            # lstat, so its verdicts from the last poll are reused: a path in the
                            # snapshot was not ignored, one in the ignored set was.
                            if rel not in known:
                                if rel in ignored_before or is_ignored(rel) is not None:
                                    ignored.add(rel)
                                    continue
                            st = entry.stat(follow_symlinks=False)   # lstat: the one syscall per file
                        except OSError:
                            continue   # vanished between readdir and lstat: the next poll sees the truth
                        if stat.S_ISREG(st.st_mode):   # symlinks, fifos, devices are never taken
                            files[rel] = (st.st_size, st.st_mtime_ns)
            except OSError:
                if not rel_dir:
                    raise   # the inbox itself: missing, not empty
                failed.append(rel_dir)
        self._ignored = ignored   # only what is there now: the memo never outgrows the inbox
        return top.st_dev, files, failed


# -- choosing ------------------------------------------------------------------------------------
def choose_mode(inbox: Path, configured: str, *, mounts_file: str | os.PathLike[str] | None = None
                ) -> tuple[str, str]:
    """("events" | "polling", why) for ``[watch] mode`` = ``configured`` (auto | events | polling).

    ``auto`` polls on filesystems where events from other machines never arrive
    (:func:`hotfolder.mounts.is_remote`), and also when the inbox is missing at start: that is
    most often a share not mounted yet, whose type cannot be known, and polling works on every
    filesystem while events would miss everything on a share. ``mounts_file`` is for tests.
    """
    configured = configured.lower()   # as the config accepts it
    if configured not in WATCH_MODES:
        raise ValueError(f"[watch] mode must be one of {', '.join(WATCH_MODES)}, got {configured!r}")
    if configured == "polling":
        return "polling", "configured: [watch] mode = \"polling\""
    if configured == "events":
        mount = mounts.find_mount(inbox, mounts_file)
        if mount is not None and mounts.is_remote(mount.fstype):
            return "events", (f"configured: [watch] mode = \"events\", although the inbox is on {mount.fstype} at "
                              f"{mount.mount_point}: files written by other machines wait for the rescan")
        return "events", "configured: [watch] mode = \"events\""
    if not os.path.isdir(inbox):
        return "polling", ("the inbox is missing (a share not mounted yet?): its filesystem cannot be known, "
                           "and polling works on all of them")
    mount = mounts.find_mount(inbox, mounts_file)
    if mount is None:
        return "events", "filesystem unknown (no readable mount table): assuming a local disk"
    if mounts.is_remote(mount.fstype):
        return "polling", (f"the inbox is on {mount.fstype} ({mount.source}) at {mount.mount_point}: "
                           "filesystem events from other machines never arrive there")
    return "events", f"the inbox is on {mount.fstype} at {mount.mount_point}, a local filesystem"


def make_watcher(inbox: Path, wake: Callable[[], None], mode: str = "auto",
                 poll_seconds: float = DEFAULT_POLL_SECONDS, *,
                 mounts_file: str | os.PathLike[str] | None = None) -> Watcher | PollingWatcher:
    """The watcher for ``[watch] mode``; logs ``watch_mode`` once with the mode and the reason."""
    chosen, reason = choose_mode(inbox, mode, mounts_file=mounts_file)
    watcher: Watcher | PollingWatcher
    if chosen == "polling":
        watcher = PollingWatcher(inbox, wake, poll_seconds)
        log.info("watch_mode", mode=chosen, configured=mode, reason=reason, inbox=str(inbox),
                 poll_seconds=poll_seconds)
    else:
        watcher = Watcher(inbox, wake)
        log.info("watch_mode", mode=chosen, configured=mode, reason=reason, inbox=str(inbox))
    return watcher
