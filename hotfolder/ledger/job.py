"""The :class:`Job` snapshot the ledger's verbs return, and the lookup error of an ambiguous name."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hotfolder.states import State

_JSON_FIELDS = ("files", "inputs", "params", "outputs")


class AmbiguousRef(KeyError):
    """A job reference (file name or stem) that names several jobs."""

    def __init__(self, ref: str, names: list[str]) -> None:
        super().__init__(ref)
        self.ref = ref
        self.names = names


@dataclass(frozen=True)
class Job:
    """A snapshot of one row of ``jobs`` with its JSON columns decoded."""

    id: int
    name: str
    rel_dir: str
    stem: str
    state: State
    files: dict[str, str]
    inputs: dict[str, dict[str, Any]]
    params: dict[str, Any]
    outputs: dict[str, str] = field(default_factory=dict)
    video_file_id: str | None = None
    audio_file_id: str | None = None
    remote_id: str | None = None
    create_intent_at: float | None = None
    progress: int = 0
    video_url: str | None = None
    preview_url: str | None = None
    attempts: int = 0
    next_attempt_at: float = 0.0
    first_trouble_at: float | None = None
    last_error_kind: str | None = None
    same_error_count: int = 0
    error: str | None = None
    error_code: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    moves_pending: bool = False   # ended, and its inputs are not all moved yet
    duration_ms: int | None = None   # the made video's length, as the API reported it
    content_key: str | None = None   # set when done: hash of the inputs and parameters (dedupe)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Job":
        data = dict(row)
        for key in _JSON_FIELDS:
            data[key] = json.loads(data[key]) if data.get(key) else {}
        data["state"] = State(data["state"])
        data["moves_pending"] = bool(data.get("moves_pending"))
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def driver_kind(self) -> str:
        return "audio" if "audio" in self.files else "text"
