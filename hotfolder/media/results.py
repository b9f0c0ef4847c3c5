"""Is a downloaded result what it claims to be? A paid result must never count as done broken.

The video must parse as MP4/MOV with the header probe (a cut file fails: its ``mdat`` runs past
the end) and, when the task reported its ``duration``, last about as long; the cover must be a
JPEG. Reads headers only.
"""

from __future__ import annotations

from pathlib import Path

from hotfolder.errors import InputError
from hotfolder.media import probe_video

DURATION_TOLERANCE_S = 1.0        # absolute slack ...
DURATION_TOLERANCE_FRACTION = 0.1  # ... or this share of the expected length, whichever is larger


def video_problem(path: Path, expected_ms: int | None) -> str | None:
    """Why the downloaded video at ``path`` is not a usable result, or None when it is."""
    try:
        with open(path, "rb") as fh:
            info = probe_video(fh, path.stat().st_size, name="the downloaded video")
    except InputError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read the downloaded video: {exc.strerror or exc}"
    if info.container not in ("mp4", "mov"):
        return f"it is {info.container}, not an MP4"
    if expected_ms and info.duration_s is not None:
        expected = expected_ms / 1000
        slack = max(DURATION_TOLERANCE_S, DURATION_TOLERANCE_FRACTION * expected)
        if abs(info.duration_s - expected) > slack:
            return (f"it lasts {info.duration_s:.1f} s but the task reported {expected:.1f} s "
                    "(a cut or wrong file)")
    return None


def cover_problem(path: Path) -> str | None:
    """Why the downloaded cover at ``path`` is not a JPEG, or None when it is."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(3)
    except OSError as exc:
        return f"cannot read the downloaded cover: {exc.strerror or exc}"
    if head != b"\xff\xd8\xff":
        return f"it is not a JPEG (it starts with {head!r})"
    return None
