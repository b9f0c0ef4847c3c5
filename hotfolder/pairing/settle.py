"""Deciding when a dropped file has finished arriving.

A file copied over SMB/NFS/rsync grows for a while under its final name; taking it early uploads
half a video. We cannot ask the copier, so a file counts as *settled* once two observations at
least ``settle_seconds`` apart saw the same size and mtime. Modification times are not evidence
on their own: ``cp -p``, Explorer and rsync copy the source's old mtime onto the new file.

Pure: the caller stats the files and passes ``now`` (use :func:`time.monotonic`, which cannot
jump back when the wall clock is corrected).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float  # first observation of the current (size, mtime)
    last: float  # latest observation


class SettleTracker:
    """Tracks (size, mtime) observations per path and says which files are settled."""

    def __init__(self, settle_seconds: float) -> None:
        if settle_seconds < 0:
            raise ValueError("settle_seconds must be >= 0")
        self.settle_seconds = float(settle_seconds)
        self._seen: dict[str, _Seen] = {}

    def observe(self, path: str, size: int, mtime_ns: int, now: float) -> None:
        """Record that ``path`` had ``size`` and ``mtime_ns`` at ``now``; a change (or a clock
        that went backwards) restarts its settle clock."""
        seen = self._seen.get(path)
        if seen is None or (seen.size, seen.mtime_ns) != (size, mtime_ns) or now < seen.last:
            self._seen[path] = _Seen(size, mtime_ns, now, now)
        else:
            seen.last = now

    def forget(self, path: str) -> None:
        """Drop ``path`` (it vanished, or was taken); a later observation starts afresh."""
        self._seen.pop(path, None)

    def forget_missing(self, present: Iterable[str]) -> None:
        """Forget every tracked path not in ``present`` (the files a full scan just listed)."""
        keep = set(present)
        for path in [p for p in self._seen if p not in keep]:
            del self._seen[path]

    def settled(self, path: str, now: float) -> bool:
        """True once the same (size, mtime) was seen at least ``settle_seconds`` apart.

        ``now`` guards against stale answers: a verdict from observations "in the future"
        (a caller mixing clocks) is not trusted.
        """
        seen = self._seen.get(path)
        if seen is None or now < seen.last:
            return False
        return seen.last - seen.since >= self.settle_seconds

    def remaining(self, path: str, now: float) -> float | None:
        """Seconds until ``path`` could be settled (observe it again then); 0 if it could be now;
        None if it is not tracked."""
        seen = self._seen.get(path)
        if seen is None:
            return None
        return max(0.0, seen.since + self.settle_seconds - now)

    def next_due(self, now: float) -> float | None:
        """The smallest :meth:`remaining` over unsettled paths (None if there are none): how long
        a ``--once`` run should wait before its next scan."""
        waits = [self.remaining(p, now) or 0.0 for p in self._seen if not self.settled(p, now)]
        return min(waits) if waits else None

    def __contains__(self, path: object) -> bool:
        return path in self._seen

    def __len__(self) -> int:
        return len(self._seen)
