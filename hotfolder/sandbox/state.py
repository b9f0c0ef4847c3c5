"""The sandbox's service state: tokens, files, tasks, rate windows and balance.

No HTTP here. Time comes from an injected ``clock`` and task progress is computed from it, so
unit tests can move time by hand. Everything is guarded by one lock and persisted (except rate
windows and balance) to ``data_dir/state.json`` with an atomic write after each change.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import shutil
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hotfolder.sandbox import mp4, storage
from hotfolder.sandbox.faults import Faults
from hotfolder.sandbox.records import (
    CODE_QUOTA, FILE_MSGS, FILE_RETENTION, MSG_EMPTY_FILE, MSG_NO_BALANCE_REFUSE, MSG_NO_QUOTA, MSG_NO_BALANCE_TASK,
    MSG_NOT_READY, MSG_TASK_FAILED, SERVICES, STATE_VERSION, TOKEN_ALPHABET, FileRecord,
    TaskRecord, Token,
)
from hotfolder.sandbox.settings import SandboxSettings
from hotfolder.sandbox.validation import (
    CODE_AUTH, CODE_INTERNAL, CODE_RATE, ApiFailure, page_info, param_error,
)

@dataclass
class State:
    """All mutable service state. Public methods raise :class:`ApiFailure` for API errors."""

    data_dir: Path
    settings: Callable[[], SandboxSettings]
    faults: Faults
    clock: Callable[[], float]
    base_url: str = "http://127.0.0.1"
    accounts: dict[str, str] = field(default_factory=dict)  # app_id -> secret_key (not persisted)
    creates_left: int | None = None

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.files: dict[str, FileRecord] = {}
        self.tasks: dict[str, TaskRecord] = {}
        self._tokens: dict[str, Token] = {}
        self._by_key: dict[str, str] = {}
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._pending: set[str] = set()
        self._seq = 0
        self.signing_key = secrets.token_bytes(32)
        self.creates_left = self.settings().balance_creates
        for sub in ("blobs", "results", "tmp"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        # Leftovers of uploads cut short by a previous run: never part of any object.
        shutil.rmtree(self.data_dir / "tmp", ignore_errors=True)
        (self.data_dir / "tmp").mkdir(exist_ok=True)
        self._load()

    # -- persistence -----------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.data_dir / "state.json"

    def _load(self) -> None:
        if not self.state_path.exists():
            return
        try:
            raw = json.loads(self.state_path.read_text("utf-8"))
            self.signing_key = bytes.fromhex(raw["signing_key"])
            self._tokens = {k: Token(**v) for k, v in raw["tokens"].items()}
            self.files = {k: FileRecord(**v) for k, v in raw["files"].items()}
            self.tasks = {k: TaskRecord(**v) for k, v in raw["tasks"].items()}
            self._seq = int(raw["seq"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(
                f"sandbox state {self.state_path} is unreadable ({exc}); delete it to start afresh"
            ) from exc
        self._by_key = {f.key: f.id for f in self.files.values()}
        self._pending = {t.id for t in self.tasks.values() if t.callback_state == "pending"}

    def _save(self) -> None:
        data = {
            "version": STATE_VERSION,
            "signing_key": self.signing_key.hex(),
            "seq": self._seq,
            "tokens": {k: dataclasses.asdict(v) for k, v in self._tokens.items()},
            "files": {k: dataclasses.asdict(v) for k, v in self.files.items()},
            "tasks": {k: dataclasses.asdict(v) for k, v in self.tasks.items()},
        }
        tmp = self.state_path.with_name(f"state.json.{uuid.uuid4().hex}.tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(data, out, ensure_ascii=False)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.state_path)

    # -- auth, rate, balance -------------------------------------------------------------------
    def issue_token(self, app_id: str, secret_key: str) -> dict[str, Any]:
        """A fresh token for ``app_id``; the previous one stops working."""
        with self.lock:
            known = self.accounts.get(app_id)
            if known is None or not secrets.compare_digest(known, secret_key):
                raise param_error("app_id or secret_key is wrong")
            expires_at = self.clock() + self.settings().token_ttl
            value = "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(64))
            self._tokens[app_id] = Token(value, expires_at)
            self._save()
            # Reported rounded down: a client trusting expire_in never sees an early 10400.
            return {"access_token": self._tokens[app_id].value, "expire_in": math.floor(expires_at)}

    def authenticate(self, token: str | None) -> str:
        """The app_id owning ``token``, or 10400 (missing, unknown, superseded or expired)."""
        if not token:
            raise ApiFailure(CODE_AUTH, "AccessToken验证失败: access_token header is missing")
        with self.lock:
            for app_id, current in self._tokens.items():
                if secrets.compare_digest(current.value, token):
                    if self.clock() >= current.expires_at:
                        raise ApiFailure(CODE_AUTH, "AccessToken已过期: the access token has expired")
                    return app_id
        # Tokens are random, so an unknown one is either made up or superseded by a newer one.
        raise ApiFailure(CODE_AUTH, "AccessToken已失效: the access token is invalid or was replaced")

    def check_rate(self, app_id: str, bucket: str) -> None:
        """Admit one call in ``bucket`` (create/file/query) or refuse with 40001."""
        s = self.settings()
        limit, window = {
            "create": (s.creates_per_minute, 60.0),
            "file": (s.file_calls_per_minute, 60.0),
            "query": (s.queries_per_second, 1.0),
        }[bucket]
        if limit <= 0:
            return
        with self.lock:
            now = self.clock()
            calls = self._windows.setdefault((app_id, bucket), deque())
            while calls and calls[0] <= now - window:
                calls.popleft()
            if len(calls) >= limit:
                raise ApiFailure(CODE_RATE, f"超出RPM/QPS限制: at most {limit} {bucket} calls per {window:g} s")
            calls.append(now)  # only admitted calls count, so backing off does recover

    def set_balance(self, creates: int | None) -> None:
        """Top up (or drain) the account: ``creates`` more successful creates, None = unlimited."""
        with self.lock:
            self.creates_left = creates

    # -- files ---------------------------------------------------------------------------------
    def create_upload(self, app_id: str, service: str, name: str) -> dict[str, Any]:
        """A new file slot and its signed upload URL."""
        if not service:
            raise param_error("service is required")
        if service not in SERVICES:
            raise param_error(f"service must be one of {', '.join(SERVICES)}, got {service!r}")
        if not name:
            raise param_error("name is required")
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        mime = SERVICES[service].get(ext)
        if mime is None:
            allowed = ", ".join(SERVICES[service])
            raise param_error(f"file name {name!r} must end in one of {allowed} for service {service}")
        with self.lock:
            now = self.clock()
            file_id = uuid.uuid4().hex
            key = f"{service}/{app_id}/{file_id}.{ext}"
            rec = FileRecord(file_id, app_id, service, name, key, mime, now)
            self.files[file_id] = rec
            self._by_key[key] = file_id
            self._save()
            expires = math.floor(now + self.settings().upload_url_ttl)
            return {
                "sign_url": storage.signed_url(
                    self.base_url, storage.UPLOAD_PREFIX, self.signing_key, key, expires, mime
                ),
                "mime_type": mime,
                "file_id": file_id,
                "full_path": self.base_url + storage.FILES_PREFIX + key,
                "key": key,
            }

    def file_by_key(self, key: str) -> FileRecord | None:
        """The file slot a storage key belongs to."""
        with self.lock:
            file_id = self._by_key.get(key)
            return self.files.get(file_id) if file_id else None

    def blob_path(self, file_id: str) -> Path:
        return self.data_dir / "blobs" / file_id

    def complete_upload(self, file_id: str, tmp: Path, etag: str) -> None:
        """Make a fully received upload the file's content (replacing an earlier one)."""
        reject = self.faults.chance(self.settings().reject_file_rate)
        with self.lock:
            rec = self.files[file_id]
            os.replace(tmp, self.blob_path(file_id))
            now = self.clock()
            rec.uploaded_at = now
            rec.ready_at = now + self.settings().file_ready_delay
            rec.bytes = self.blob_path(file_id).stat().st_size
            rec.etag = etag
            rec.rejected = reject
            self._save()

    def file_status(self, rec: FileRecord) -> int:
        now = self.clock()
        if rec.forced_status is not None:
            return rec.forced_status
        if now - rec.create_time >= FILE_RETENTION:
            return 100
        if rec.ready_at is None or now < rec.ready_at:
            return 0
        return 98 if rec.rejected else 1

    def file_detail(self, app_id: str, file_id: str) -> dict[str, Any]:
        """The file_detail view of one of ``app_id``'s files."""
        if not file_id:
            raise param_error("id is required")
        with self.lock:
            rec = self.files.get(file_id)
            if rec is None or rec.app_id != app_id:
                raise param_error(f"file {file_id!r} does not exist")
            status = self.file_status(rec)
            return {
                "id": rec.id,
                "service": rec.service,
                "bytes": rec.bytes,
                "create_time": int(rec.create_time),
                "file_path": self.base_url + storage.FILES_PREFIX + rec.key,
                "status": status,
                "msg": FILE_MSGS.get(status, ""),
            }

    def set_file_status(self, file_id: str, status: int | None) -> None:
        """Force a file's status (99 deleted, 100 cleaned, ...); None goes back to normal."""
        with self.lock:
            if file_id not in self.files:
                raise KeyError(file_id)
            self.files[file_id].forced_status = status
            self._save()

    def _usable_file(self, app_id: str, file_id: str, field_name: str) -> FileRecord:
        rec = self.files.get(file_id)
        if rec is None or rec.app_id != app_id:
            raise param_error(f"{field_name} {file_id!r} does not exist")
        status = self.file_status(rec)
        if status == 0:
            raise ApiFailure(CODE_INTERNAL, MSG_NOT_READY)
        if status != 1:
            raise param_error(f"{field_name} {file_id!r} cannot be used: status {status} {FILE_MSGS[status]}")
        return rec

    # -- tasks ---------------------------------------------------------------------------------
    def create_task(self, app_id: str, req: dict[str, Any]) -> str:
        """Create a task from a validated create body; return its id."""
        s = self.settings()
        # Drawn up front, whatever happens below, so fault sequences stay reproducible.
        random_failure = self.faults.chance(s.fail_task_rate)
        with self.lock:
            video = self._usable_file(app_id, req["video_file_id"], "video_file_id")
            audio = None
            if req["audio_type"] == "audio":
                audio = self._usable_file(app_id, req["audio_file_id"], "audio_file_id")
            fail_msg, fail_early = None, False
            # As reported of the real service, a file of the wrong service is accepted here
            # and the task fails later.
            if video.service != "lip_sync_video":
                fail_msg, fail_early = f"视频文件类型错误: {video.id} is a {video.service} file", True
            elif audio is not None and audio.service != "lip_sync_audio":
                fail_msg, fail_early = f"音频文件类型错误: {audio.id} is a {audio.service} file", True
            elif video.bytes == 0 or (audio is not None and audio.bytes == 0):
                fail_msg, fail_early = MSG_EMPTY_FILE, True
            if self.creates_left == 0:
                if s.balance_mode == "refuse":
                    raise ApiFailure(CODE_INTERNAL, MSG_NO_BALANCE_REFUSE)
                if s.balance_mode == "quota":
                    raise ApiFailure(CODE_QUOTA, MSG_NO_QUOTA)
                fail_msg, fail_early = fail_msg or MSG_NO_BALANCE_TASK, True
            elif self.creates_left is not None:
                self.creates_left -= 1
            if fail_msg is None and random_failure:
                fail_msg = MSG_TASK_FAILED
            task_id = uuid.uuid4().hex
            storage.link_or_copy(self.blob_path(video.id), self.result_path(task_id, "mp4"))
            self._seq += 1
            duration = None
            if req["tts_config"] is not None:
                # The result is the input video itself, so its length is what the task reports (the
                # real service reports the made video's length); audio-driven tasks omit it, as the
                # reference says it may be missing.
                # A video it cannot read (tests upload placeholder bytes): about four characters a
                # second of speech.
                duration = mp4.duration_ms(self.result_path(task_id, "mp4")) \
                    or max(1000, len("".join(req["tts_config"]["text"])) * 250)
            task = TaskRecord(
                task_id, app_id, self._seq, self.clock(), s.queue_seconds, s.generate_seconds,
                dict(req), fail_msg, fail_early, duration,
                "pending" if req["callback"] else "none",
            )
            self.tasks[task_id] = task
            if task.callback_state == "pending":
                self._pending.add(task_id)
            self._save()
            return task_id

    def result_path(self, task_id: str, ext: str) -> Path:
        return self.data_dir / "results" / f"{task_id}.{ext}"

    def phase(self, task: TaskRecord) -> tuple[int, int]:
        """``(status, progress)`` of ``task`` now."""
        elapsed = self.clock() - task.created_at
        q, g = task.queue_seconds, task.generate_seconds
        if task.fail_msg and task.fail_early and elapsed >= q:
            return 30, 0
        if elapsed < q:
            return 0, 0
        if elapsed < q + g:
            return 10, min(99, 1 + int(98 * (elapsed - q) / g))
        return (30, 99) if task.fail_msg else (20, 100)

    def task_view(self, task: TaskRecord) -> dict[str, Any]:
        """The API's view of a task (detail / list item / callback body)."""
        status, progress = self.phase(task)
        msg = {0: "", 10: "", 20: "success"}.get(status) or (task.fail_msg or "")
        view: dict[str, Any] = {
            "id": task.id, "status": status, "progress": progress, "msg": msg,
            "video_url": "", "preview_url": "", "create_time": int(task.created_at),
        }
        if status == 20:
            expires = math.floor(self.clock() + self.settings().result_url_ttl)
            for field_name, ext in (("video_url", "mp4"), ("preview_url", "jpg")):
                view[field_name] = storage.signed_url(
                    self.base_url, storage.RESULT_PREFIX, self.signing_key, f"{task.id}.{ext}", expires, ""
                )
            if task.duration_ms is not None:
                view["duration"] = task.duration_ms
        return view

    def task_detail(self, app_id: str, task_id: str) -> dict[str, Any]:
        if not task_id:
            raise param_error("id is required")
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None or task.app_id != app_id:
                raise param_error(f"video {task_id!r} does not exist")
            return self.task_view(task)

    def list_tasks(self, app_id: str, page: int, size: int) -> dict[str, Any]:
        """One page of ``app_id``'s tasks, newest first."""
        with self.lock:
            mine = sorted(
                (t for t in self.tasks.values() if t.app_id == app_id),
                key=lambda t: (t.created_at, t.seq), reverse=True,
            )
            chunk = mine[(page - 1) * size : page * size]
            return {"list": [self.task_view(t) for t in chunk], "page_info": page_info(page, size, len(mine))}

    def finished_result(self, task_id: str) -> TaskRecord | None:
        """The task if it has ended successfully (results exist only then)."""
        with self.lock:
            task = self.tasks.get(task_id)
            return task if task is not None and self.phase(task)[0] == 20 else None

    def due_callbacks(self, emit: bool) -> list[tuple[str, str, dict[str, Any]]]:
        """Tasks that have ended and still owe a callback: ``(task_id, url, task view)``.

        Each is marked sent (or skipped when ``emit`` is False) before it is returned, so a
        callback goes out at most once, even across restarts.
        """
        out = []
        with self.lock:
            changed = False
            for task_id in sorted(self._pending):
                task = self.tasks[task_id]
                if self.phase(task)[0] not in (20, 30):
                    continue
                self._pending.discard(task_id)
                changed = True
                task.callback_state = "sent" if emit else "skipped"
                if emit:
                    out.append((task_id, task.request["callback"], self.task_view(task)))
            if changed:
                self._save()
        return out

    def snapshot(self) -> list[dict[str, Any]]:
        """Every task, oldest first: the API view plus the sandbox's own bookkeeping."""
        with self.lock:
            ordered = sorted(self.tasks.values(), key=lambda t: (t.created_at, t.seq))
            return [
                {
                    **self.task_view(t), "app_id": t.app_id, "request": t.request,
                    "created_at": t.created_at, "callback_state": t.callback_state,
                }
                for t in ordered
            ]
