"""Shared pieces of :mod:`hotfolder.media`: the result type, the errors and a bounded reader."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Literal

from hotfolder.errors import InputError

Container = Literal["mp4", "mov", "webm"]

MAX_READ = 4096  # no single read is larger than this
MAX_ITEMS = 100_000  # boxes/elements visited per probe
HEAD_BYTES = 192  # bytes to pass to sniff_audio; what error messages look at (MPEG-TS: 189)

_RESTART_HINT = (
    "the file seems incomplete: was it still being copied? Drop it again once the copy has "
    "finished, or re-export it with the moov atom at the start (\"fast start\"/\"web optimized\", "
    "e.g. ffmpeg -i in.mp4 -c copy -movflags +faststart out.mp4)"
)


@dataclass(frozen=True)
class VideoInfo:
    """What the header says. ``width``/``height`` are the stored (pre-rotation) size."""

    container: Container
    width: int
    height: int
    rotation: int = 0  # 0/90/180/270, clockwise
    duration_s: float | None = None


class MediaError(InputError):
    """A dropped media file cannot be used (code ``bad_input``)."""


class EmptyFile(MediaError):
    """The file has 0 bytes."""


class NotAVideo(MediaError):
    """The bytes are not an MP4/MOV/WebM video."""


class DamagedVideo(NotAVideo):
    """The container structure is broken (impossible sizes, garbage boxes)."""


class IncompleteVideo(MediaError):
    """The file ends before its structure does (still copying, or cut), or has no ``moov``."""


class NoVideoTrack(MediaError):
    """A valid container with no video track (audio only, an image, ...)."""


class BadAudio(MediaError):
    """An audio sidecar whose bytes do not match its extension."""


class Reader:
    """Bounded positional reads on a file object, counting visited headers (internal)."""

    def __init__(self, fp: IO[bytes], size: int, name: str) -> None:
        self.fp, self.size, self.name, self.items = fp, size, name, 0

    def read_at(self, pos: int, n: int) -> bytes:
        n = max(0, min(n, MAX_READ, self.size - pos))
        if n == 0:
            return b""
        self.fp.seek(pos)
        return self.fp.read(n)

    def nearly_spent(self) -> bool:
        """True when the next header would pass the :data:`MAX_ITEMS` budget."""
        return self.items >= MAX_ITEMS - 1

    def tick(self) -> None:
        self.items += 1
        if self.items > MAX_ITEMS:
            raise DamagedVideo(
                f"{self.name} is damaged: its structure has more than {MAX_ITEMS} parts before "
                f"the track information; re-export it", path=self.name)

    def damaged(self, what: str) -> DamagedVideo:
        return DamagedVideo(
            f"{self.name} is damaged ({what}); re-export or convert it (MP4, MOV or WebM)",
            path=self.name)

    def incomplete(self, what: str) -> IncompleteVideo:
        return IncompleteVideo(f"{self.name}: {what}; {_RESTART_HINT}", path=self.name)
