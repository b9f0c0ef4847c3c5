"""A local emulator of the Chanjing lip-sync API (``hotfolder sandbox``).

It stands in for ``https://open-api.chanjing.cc`` in every test and in the demo: point a
config's ``[api] base_url`` at it (``http://127.0.0.1:PORT``) and use app_id ``sandbox`` /
secret_key ``sandbox`` (or what ``--app-id`` / ``--secret-key`` say). It follows the API
reference closely and is strict on purpose: requests the real service would refuse are refused
the same way, and every kind of trouble the real service shows can be switched on.

Python use::

    from hotfolder.sandbox import Sandbox, SandboxSettings
    with Sandbox(tmp_path, settings=SandboxSettings(file_ready_delay=0.2)) as sb:
        sb.base_url; sb.update(error_rate=0.2); sb.journal(since=0); sb.tasks()

Endpoints (all on one port)
---------------------------
API, JSON envelope ``{"trace_id", "code", "msg", "data"}``, HTTP 200 even for API errors;
every call but ``access_token`` needs the header ``access_token``:

- ``POST /open/v1/access_token`` ``{app_id, secret_key}`` -> ``access_token``, ``expire_in``
  (a unix timestamp). Wrong credentials: code 40000. A new token invalidates the previous one.
  Missing, unknown, superseded or expired token on other calls: code 10400.
- ``GET /open/v1/common/create_upload_url?service=lip_sync_video|lip_sync_audio&name=N``:
  the extension must suit the service (video mp4/mov/webm, audio mp3/m4a/wav) -> ``sign_url``,
  ``mime_type``, ``file_id``, ``full_path``, ``key``.
- ``PUT sign_url``: Content-Type must equal ``mime_type`` (else 403 SignatureDoesNotMatch),
  Content-Length is required (else 411), the URL expires (403 "Request has expired"). A body cut
  short stores nothing; a second PUT replaces the content. 200 with an ETag.
- ``GET /open/v1/common/file_detail?id=`` -> status 0 until ``file_ready_delay`` after the PUT,
  then 1 (or 98 when rejected; 100 after 30 days; 99 when deleted via the control endpoint).
- ``POST /open/v1/video_lip_sync/create`` -> the new task id. Validated field by field: bad
  JSON or wrong JSON types -> 400; unknown fields, missing or out-of-range values, unknown
  voices, unusable files -> 40000; a file not ready yet -> 50000 "文件还未完成上传"; emoji in
  the text -> 50000. A file of the wrong service, or an empty (0-byte) file, is accepted and
  the task fails later (status 30).
- ``GET /open/v1/video_lip_sync/detail?id=``, ``POST /open/v1/video_lip_sync/list``
  ``{page, page_size<=50}`` (newest first): status 0 for ``queue_seconds``, 10 with rising
  progress for ``generate_seconds``, then 20 (``video_url`` = the uploaded video's bytes,
  ``preview_url`` = a JPEG; signed, expiring after ``result_url_ttl``, Range supported) or 30
  with ``msg``.
- ``GET /open/v1/list_common_audio?page=&size=`` -> 12 public voices.
- When a task with a ``callback`` URL ends, the detail-shaped envelope is POSTed to it once.

Rate limits per app_id (sliding windows; over -> code 40001; ``0`` disables one):
``creates_per_minute`` (create), ``file_calls_per_minute`` (create_upload_url + file_detail),
``queries_per_second`` (detail + list).

Settings (``--kebab-case`` CLI flags, ``Sandbox(settings=...)``, ``sb.update(**kw)`` or the
control endpoint; see :data:`SETTING_HELP`)
-----------------------------------------------------------------------------------------
========================  ==========  =========================================================
seed                      0           seeds the random generator behind every fault decision
file_ready_delay          3.0         s after a PUT completes until file_detail says 1
queue_seconds             2.0         s a task stays 0 (queued); fixed per task at create
generate_seconds          8.0         s a task stays 10 (generating); fixed per task at create
token_ttl                 86400       s an access token lives
upload_url_ttl            900         s a sign_url lives (1 s resolution; 0 = already expired)
result_url_ttl            3600        s video_url/preview_url live (1 s resolution)
creates_per_minute        10          rate limit, see above
file_calls_per_minute     30          rate limit, see above
queries_per_second        10          rate limit, see above
error_rate                0           API calls answered code 50000 (nothing done)
drop_rate                 0           connections closed with no answer (API, PUT, downloads)
gateway_error_rate        0           API calls answered HTTP 502/503/504 with an HTML page
slow_rate, slow_seconds   0, 0        requests delayed by slow_seconds before being handled
truncate_rate             0           downloads that send the full Content-Length, then close
corrupt_result_rate       0           results that arrive whole but broken (cut MP4, non-JPEG cover)
fail_task_rate            0           tasks that end with status 30
reject_file_rate          0           uploads that end in status 98
balance_creates           None        creates left before the account is out of balance
balance_mode              "refuse"    out of balance: "refuse" -> create answers 50000; "quota" -> 40002
                                      "余额不足..."; "fail_task" -> the task ends 30 "蝉豆不足..."
emit_callbacks            True        POST callbacks when tasks end (off: they are skipped)
========================  ==========  =========================================================

Faults
------
All off by default; decided per request by one ``random.Random(seed)`` (four draws a request,
so a seed and a request order always give the same faults). API endpoints can be dropped,
answered by the gateway, answered 50000 or slowed; storage PUTs dropped or slowed; downloads
dropped, slowed or truncated. A *drop* or *gateway* fault intercepts half the requests before
the service sees them and the rest after (drop) / as 504 (gateway): the work is done but the
answer is lost, as with a real flaky network. The journal tells which: ``processed``.
``fail_task_rate`` and ``reject_file_rate`` are drawn when the task/upload is created.

Control endpoint (no auth, not journaled, never faulted; plain JSON, 400 ``{"error"}``)
------------------------------------------------------------------------------------
- ``GET /_sandbox/settings``; ``POST /_sandbox/settings`` a JSON object of fields to change.
- ``GET /_sandbox/journal?since=N``: requests after seq N. Each entry: ``seq``, ``time``,
  ``method``, ``path`` (never the query: signatures), ``endpoint`` (access_token,
  create_upload_url, upload_put, file_detail, create, detail, list, list_common_audio,
  download, callback, unknown), ``code`` (envelope code or null), ``http_status`` (null when no
  answer was sent), ``fault`` (drop, gateway, error, slow, truncate or null), ``processed``.
  Callback entries add ``task_id``, ``url``, ``error``. Secrets and tokens are never recorded.
- ``GET /_sandbox/tasks``: every task with its request and bookkeeping.
- ``GET /_sandbox/balance``; ``POST /_sandbox/balance`` ``{"creates": N|null}``: top up (sets
  the creates left; null = unlimited).
- ``POST /_sandbox/file_status`` ``{"id": FILE_ID, "status": 99|100|98|null}``: force a file's
  status (e.g. to test a cached file_id that the service deleted).

State: blobs, results and ``state.json`` (tokens, files, tasks) live in the data dir and
survive a restart; the journal, rate windows and balance do not.
"""

from typing import Any

# Imported on first use: the CLI reads the settings table (cheap) on every command, and must not
# pay for the HTTP server and its state machine each time.
_LAZY = {"Sandbox": "app", "serve_forever": "app", "SETTING_HELP": "settings", "SandboxSettings": "settings",
         "cli_options": "settings", "settings_from_mapping": "settings"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"hotfolder.sandbox.{_LAZY[name]}"), name)
    raise AttributeError(name)


__all__ = [
    "SETTING_HELP",
    "Sandbox",
    "SandboxSettings",
    "cli_options",
    "serve_forever",
    "settings_from_mapping",
]
