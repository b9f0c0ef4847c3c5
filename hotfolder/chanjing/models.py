"""What the client sends and what it returns, parsed leniently.

"Be liberal in what you accept": any ``data`` field may be missing, numbers may come as strings,
ids as numbers, TTS text as a string or an array. Parsers never raise on a missing or odd field;
they fill ``None`` and keep the whole object in ``raw`` for whoever needs more.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hotfolder.errors import PermanentError


def as_int(value: Any, default: int | None = None) -> int | None:
    """``value`` as an int (accepts ``"20"``, ``20.0``), else ``default``."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return default


def as_float(value: Any, default: float | None = None) -> float | None:
    """``value`` as a float, else ``default``."""
    try:
        return float(value) if value is not None and not isinstance(value, bool) else default
    except (TypeError, ValueError):
        return default


def as_str(value: Any) -> str | None:
    """``value`` as a non-empty string, else None (ids may come as numbers)."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value)
    return text or None


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return dict(value) if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else an empty one."""
    return list(value) if isinstance(value, list) else []


@dataclass(frozen=True)
class Token:
    """An access token and when it expires (unix seconds)."""

    value: str
    expires_at: float

    def __repr__(self) -> str:  # never print the secret itself
        return f"Token(value='***', expires_at={self.expires_at})"


@dataclass(frozen=True)
class UploadSlot:
    """Where to PUT a file (``sign_url``, with ``mime_type`` as Content-Type) and its id."""

    sign_url: str
    mime_type: str
    file_id: str
    full_path: str | None = None
    key: str | None = None

    @classmethod
    def from_api(cls, data: Any) -> UploadSlot:
        """Parse ``data`` of create_upload_url (sign_url and file_id are required)."""
        d = as_dict(data)
        sign_url, file_id = as_str(d.get("sign_url")), as_str(d.get("file_id"))
        if not sign_url or not file_id:
            raise PermanentError("create_upload_url answered without sign_url/file_id",
                                 endpoint="create_upload_url")
        return cls(sign_url=sign_url, mime_type=as_str(d.get("mime_type")) or "application/octet-stream",
                   file_id=file_id, full_path=as_str(d.get("full_path")), key=as_str(d.get("key")))

    def __repr__(self) -> str:  # the signed URL is a credential for 15 minutes
        return f"UploadSlot(file_id={self.file_id!r}, mime_type={self.mime_type!r}, key={self.key!r})"


@dataclass(frozen=True)
class FileInfo:
    """An uploaded file: ``status`` 0 not ready, 1 ready, 98 refused, 99 deleted, 100 cleaned up."""

    id: str
    status: int | None
    service: str | None = None
    bytes: int | None = None
    create_time: int | None = None
    file_path: str | None = None
    msg: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Any, file_id: str = "") -> FileInfo:
        """Parse ``data`` of file_detail."""
        d = as_dict(data)
        return cls(id=as_str(d.get("id")) or file_id, status=as_int(d.get("status")),
                   service=as_str(d.get("service")), bytes=as_int(d.get("bytes")),
                   create_time=as_int(d.get("create_time")), file_path=as_str(d.get("file_path")),
                   msg=as_str(d.get("msg")), raw=d)


@dataclass(frozen=True)
class Task:
    """A lip-sync task: ``status`` 0 queued, 10 generating, 20 success, 30 failed."""

    id: str
    status: int | None
    progress: int | None = None
    msg: str | None = None
    video_url: str | None = None
    preview_url: str | None = None
    duration: int | None = None       # milliseconds
    create_time: int | None = None    # unix seconds
    text: list[str] | None = None     # tts_config.text, always a list here
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Any, task_id: str = "") -> Task:
        """Parse one task from detail or list."""
        d = as_dict(data)
        text = as_dict(d.get("tts_config")).get("text")
        texts = [text] if isinstance(text, str) else [str(t) for t in text] if isinstance(text, list) else None
        return cls(id=as_str(d.get("id")) or task_id, status=as_int(d.get("status")),
                   progress=as_int(d.get("progress")), msg=as_str(d.get("msg")),
                   video_url=as_str(d.get("video_url")), preview_url=as_str(d.get("preview_url")),
                   duration=as_int(d.get("duration")), create_time=as_int(d.get("create_time")),
                   text=texts, raw=d)


@dataclass(frozen=True)
class PageInfo:
    """``page_info`` of a list reply."""

    page: int
    size: int
    total_count: int
    total_page: int

    @classmethod
    def from_api(cls, data: Any, page: int, size: int, count: int) -> PageInfo:
        """Parse ``page_info``, inferring what is missing from the request and the items."""
        d = as_dict(data)
        size = as_int(d.get("size")) or as_int(d.get("page_size")) or size
        total_count = as_int(d.get("total_count"))
        if total_count is None:
            total_count = (page - 1) * size + count
        total_page = as_int(d.get("total_page"))
        if total_page is None:
            total_page = -(-total_count // size) if size else page
        return cls(page=as_int(d.get("page")) or page, size=size, total_count=total_count,
                   total_page=total_page)


@dataclass(frozen=True)
class TaskPage:
    """One page of the task list (newest first)."""

    tasks: list[Task]
    page: int
    size: int
    total_count: int
    total_page: int

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


@dataclass(frozen=True)
class Voice:
    """A public voice; ``id`` is the ``audio_man_id`` for TTS."""

    id: str
    name: str | None = None
    gender: str | None = None
    lang: str | None = None
    desc: str | None = None
    speed: float | None = None
    pitch: float | None = None
    grade: int | None = None
    audition: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Any) -> Voice:
        """Parse one entry of list_common_audio."""
        d = as_dict(data)
        return cls(id=as_str(d.get("id")) or "", name=as_str(d.get("name")), gender=as_str(d.get("gender")),
                   lang=as_str(d.get("lang")), desc=as_str(d.get("desc")), speed=as_float(d.get("speed")),
                   pitch=as_float(d.get("pitch")), grade=as_int(d.get("grade")),
                   audition=as_str(d.get("audition")), raw=d)


@dataclass(frozen=True)
class VoicePage:
    """One page of public voices (iterable like a list)."""

    voices: list[Voice]
    page: int
    size: int
    total_count: int
    total_page: int

    def __iter__(self) -> Iterator[Voice]:
        return iter(self.voices)

    def __len__(self) -> int:
        return len(self.voices)


@dataclass(frozen=True)
class LipSyncRequest:
    """The body of ``video_lip_sync/create``. ``None`` leaves a field out (the API's default).

    For ``audio_type="tts"``: ``text`` (one string, or a list of strings) and ``audio_man_id``
    (with optional ``speed``/``pitch``). For ``audio_type="audio"``: ``audio_file_id``.
    """

    video_file_id: str
    audio_type: str = "tts"
    text: str | list[str] | None = None
    audio_man_id: str | None = None
    speed: float | None = None
    pitch: float | None = None
    audio_file_id: str | None = None
    screen_width: int | None = None
    screen_height: int | None = None
    backway: int | None = None
    drive_mode: str | None = None
    model: int | None = None
    volume: int | None = None
    callback: str | None = None

    def to_api(self) -> dict[str, Any]:
        """The JSON body; raises :class:`PermanentError` for a request the API would refuse."""
        def refuse(why: str) -> PermanentError:
            return PermanentError(f"lip-sync request is incomplete: {why}", endpoint="create")

        if not self.video_file_id:
            raise refuse("no video_file_id")
        body: dict[str, Any] = {"video_file_id": self.video_file_id, "audio_type": self.audio_type}
        if self.audio_type == "tts":
            texts = [self.text] if isinstance(self.text, str) else list(self.text or [])
            if not any(t.strip() for t in texts):
                raise refuse("empty TTS text")
            if not self.audio_man_id:
                raise refuse("no audio_man_id (voice) for TTS")
            # The field table says array; the vendor's own tools send an array: send one.
            tts: dict[str, Any] = {"text": texts, "audio_man_id": self.audio_man_id}
            for key in ("speed", "pitch"):
                if getattr(self, key) is not None:
                    tts[key] = getattr(self, key)
            body["tts_config"] = tts
        elif self.audio_type == "audio":
            if not self.audio_file_id:
                raise refuse("no audio_file_id for audio_type 'audio'")
            body["audio_file_id"] = self.audio_file_id
        else:
            raise refuse(f"unknown audio_type {self.audio_type!r} (use 'tts' or 'audio')")
        for key in ("screen_width", "screen_height", "backway", "drive_mode", "model", "volume", "callback"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return body
