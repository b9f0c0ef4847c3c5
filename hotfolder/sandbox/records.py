"""The records the sandbox keeps (files, tasks, tokens) and the service's fixed texts."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

STATE_VERSION = 1
FILE_RETENTION = 30 * 86400  # uploaded files are cleaned up (status 100) after 30 days

SERVICES: dict[str, dict[str, str]] = {
    "lip_sync_video": {"mp4": "video/mp4", "mov": "video/quicktime", "webm": "video/webm"},
    "lip_sync_audio": {"mp3": "audio/mpeg", "m4a": "audio/mp4", "wav": "audio/wav"},
}
FILE_MSGS = {0: "", 1: "success", 98: "文件内容安全审核未通过", 99: "文件已删除", 100: "文件已过期清理"}
MSG_NOT_READY = "文件还未完成上传"
MSG_NO_BALANCE_REFUSE = "余额不足,请充值后重试"
MSG_NO_BALANCE_TASK = "蝉豆不足,扣费失败"
MSG_NO_QUOTA = "生产时长额度不足"
CODE_QUOTA = 40002
MSG_TASK_FAILED = "视频合成失败,请稍后重试"
MSG_EMPTY_FILE = "文件解析失败: the file is empty"
TOKEN_ALPHABET = string.ascii_letters + string.digits  # like the vendor's 64-char tokens


@dataclass
class FileRecord:
    """One file slot from create_upload_url; ``uploaded_at`` is set once a PUT completes."""

    id: str
    app_id: str
    service: str
    name: str
    key: str
    mime_type: str
    create_time: float
    uploaded_at: float | None = None
    ready_at: float | None = None
    bytes: int = 0
    etag: str = ""
    rejected: bool = False
    forced_status: int | None = None  # set through the control API (e.g. 99 deleted)


@dataclass
class TaskRecord:
    """One lip-sync task. Its status is a function of the time since ``created_at``."""

    id: str
    app_id: str
    seq: int
    created_at: float
    queue_seconds: float
    generate_seconds: float
    request: dict[str, Any]
    fail_msg: str | None = None
    fail_early: bool = False  # ends right after the queue (billing/file errors)
    duration_ms: int | None = None
    callback_state: str = "none"  # none | pending | sent | skipped


@dataclass
class Token:
    value: str
    expires_at: float
