"""watchdog on the inbox. It only enqueues paths and wakes the daemon; intake decides.

Events can be missed (inotify queue overflow, network shares that send none), so the daemon also
rescans the whole inbox at start and every ``rescan_seconds``; the watcher only makes new files
show up sooner. As watchdog's own docs advise, the observer is started first, then the rescan.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from hotfolder.log import get_logger

log = get_logger("hotfolder.watcher")


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


class Watcher:
    """Watches ``inbox`` recursively; ``paths`` receives every changed path."""

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
        out = []
        while True:
            try:
                out.append(self.paths.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
