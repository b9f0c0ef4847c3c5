"""Job states and the legal transitions between them. Pure: no I/O.

::

    waiting ──► queued ──► uploading ──► submitting ──► generating ──► downloading ──► done
       │          ▲  ▲         │             │              │              │
       │          │  └─────────┴─────────────┴──────────────┘ (start over: input changed,
       │          │                                            billing pause, task lost)
       ▼          │
    cancelled ◄── any unfinished state          failed ◄── any unfinished state
                  └──────── retry (failed / cancelled → queued) ────────┘
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    WAITING = "waiting"          # a video whose driver sidecar has not arrived
    QUEUED = "queued"            # ready to upload
    UPLOADING = "uploading"
    SUBMITTING = "submitting"    # files ready; creating the remote task
    GENERATING = "generating"    # the remote task exists; following it
    DOWNLOADING = "downloading"  # the remote task succeeded; fetching results
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({State.DONE, State.FAILED, State.CANCELLED})
ACTIVE = frozenset({State.QUEUED, State.UPLOADING, State.SUBMITTING, State.GENERATING, State.DOWNLOADING})

_FORWARD: dict[State, frozenset[State]] = {
    State.WAITING: frozenset({State.QUEUED}),
    State.QUEUED: frozenset({State.UPLOADING}),
    State.UPLOADING: frozenset({State.SUBMITTING, State.QUEUED}),
    State.SUBMITTING: frozenset({State.GENERATING, State.QUEUED}),
    State.GENERATING: frozenset({State.DOWNLOADING, State.QUEUED}),
    State.DOWNLOADING: frozenset({State.DONE, State.GENERATING}),
    State.DONE: frozenset(),
    State.FAILED: frozenset({State.QUEUED}),
    State.CANCELLED: frozenset({State.QUEUED}),
}


def can_move(src: State | str, dst: State | str) -> bool:
    """Whether a job may move from ``src`` to ``dst``."""
    src, dst = State(src), State(dst)
    if src not in TERMINAL and dst in (State.FAILED, State.CANCELLED):
        return True
    return dst in _FORWARD[src]


def check_move(src: State | str, dst: State | str) -> None:
    """Raise ``ValueError`` for an illegal transition (a programming error, not a user error)."""
    if not can_move(src, dst):
        raise ValueError(f"illegal job transition {src} -> {dst}")
