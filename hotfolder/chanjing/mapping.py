"""Turning what came back (an envelope, an HTTP status, an httpx exception) into our errors.

The reference's code table, applied leniently (codes may come as strings):

=====================  ===================================================================
0                      success
10400 / 10401          AuthError (the client refreshes the token once and retries first)
40001, HTTP 429        RateLimited
400, 40000             PermanentError (on access_token: AuthError, the credentials are wrong)
50000                  RetryLater; but PermanentError when ``msg`` blames the request (emoji,
                       no permission, parameters...), RetryLater when it says the file is not
                       ready yet
balance words          BillingPaused (on create, whatever the code)
any other code         PermanentError with the API's ``msg``
HTTP 5xx, HTML page    RetryLater
other HTTP 4xx         PermanentError (e.g. gin's plain-text 404: wrong base_url)
httpx errors           RetryLater; on create, anything after the request may have left is
                       OutcomeUnknown (only a failed connect is known not to have reached it)
=====================  ===================================================================
"""

from __future__ import annotations

import email.utils
import json
import re
from typing import Any

import httpx

from hotfolder.chanjing.models import as_int, as_str
from hotfolder.errors import (ApiError, AuthError, BillingPaused, OutcomeUnknown, PermanentError,
                              RateLimited, RetryLater)

CODE_OK = 0
CODES_AUTH = (10400, 10401)
CODE_RATE = 40001
CODE_QUOTA = 40002   # production-duration quota used up (documented for the vendor's TTS product)
CODES_PARAM = (400, 40000)
CODE_INTERNAL = 50000

BILLING_WORDS = ("余额不足", "蝉豆不足", "扣费失败", "欠费", "insufficient balance", "额度不足", "额度已用完",
                 "配额", "时长不足", "quota")
NOT_READY_WORDS = ("未完成上传", "未上传完成", "未就绪", "not ready", "not finished uploading")
AT_FAULT_WORDS = ("表情", "emoji", "无权限", "没有权限", "no permission", "permission denied", "参数",
                  "parameter", "不支持", "unsupported", "敏感", "违规", "超长", "too long")

# Errors raised before a single byte of the request left: safe to resend even a create.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _has(msg: str, words: tuple[str, ...]) -> bool:
    low = msg.lower()
    return any(word in low for word in words)


def is_billing_message(msg: str | None) -> bool:
    """Whether an API message says the account is out of balance (case-insensitive); the one
    list every caller (create refusals, failed tasks) uses."""
    return bool(msg) and _has(msg or "", BILLING_WORDS)


def classify(code: int | None, msg: str, *, endpoint: str, trace_id: str | None = None,
             retry_after: float | None = None) -> ApiError:
    """The error for a non-zero envelope ``code`` with ``msg`` on ``endpoint``."""
    kw: dict[str, Any] = {"code": code, "trace_id": trace_id, "endpoint": endpoint}
    msg = msg or f"the API answered code {code} without a message"
    if code in CODES_AUTH:
        return AuthError(msg, **kw)
    if code == CODE_RATE:
        return RateLimited(msg, retry_after=retry_after, **kw)
    if endpoint == "create" and (code == CODE_QUOTA or is_billing_message(msg)):
        # Out of balance or over a quota: not the job's fault; the pipeline pauses creates.
        return BillingPaused(msg, **kw)
    if endpoint == "access_token" and code in CODES_PARAM:
        return AuthError(f"the API refused the app_id/secret_key: {msg}", **kw)
    if code in CODES_PARAM:
        return PermanentError(msg, **kw)
    if code == CODE_INTERNAL:
        if _has(msg, NOT_READY_WORDS):
            return RetryLater(msg, retry_after=retry_after, **kw)
        if _has(msg, AT_FAULT_WORDS):
            return PermanentError(msg, **kw)
        return RetryLater(msg, retry_after=retry_after, **kw)
    return PermanentError(msg, **kw)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def _title(text: str) -> str:
    match = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
    return match.group(1).strip() if match else ""


def _envelope(response: httpx.Response) -> dict[str, Any] | None:
    try:
        value = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) and "code" in value else None


def check_response(response: httpx.Response, *, endpoint: str, now: float, create: bool = False) -> Any:
    """``data`` of a successful envelope; raises the mapped :class:`ApiError` otherwise.

    With ``create``, an answer that is not an envelope (a gateway's 5xx page) proves nothing
    about whether the task was made: :class:`OutcomeUnknown`.
    """
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
    if status == 429:
        raise RateLimited("HTTP 429: the API (or its gateway) says we are over the rate limit",
                          code=429, endpoint=endpoint, retry_after=retry_after)
    env = _envelope(response)
    if env is not None:
        code = as_int(env.get("code"))
        if code == CODE_OK:
            return env.get("data")
        msg = as_str(env.get("msg")) or ""
        raise classify(code, msg, endpoint=endpoint, trace_id=as_str(env.get("trace_id")),
                       retry_after=retry_after)
    text = response.text[:2000] if response.content else ""
    what = _title(text) or f"HTTP {status} {response.reason_phrase}".strip()
    kind = "an HTML page" if "<html" in text.lower() else "a non-JSON answer"
    if status >= 500 or 200 <= status < 300:
        # 5xx pages come from the gateway in front of the API; a 2xx that is not JSON is a
        # captive portal or proxy in the way. Both are worth another try later.
        if create:
            raise OutcomeUnknown(f"{what}: {kind} instead of the create's answer; the task may exist: "
                                 "reconcile with the task list before sending it again", code=status,
                                 endpoint=endpoint, retry_after=retry_after)
        raise RetryLater(f"{what}: {kind} from the API's gateway instead of a reply", code=status,
                         endpoint=endpoint, retry_after=retry_after)
    if status == 404:
        raise PermanentError(f"HTTP 404: no such API endpoint ({text.strip()[:80] or 'not found'}); "
                             "is api.base_url right?", code=404, endpoint=endpoint)
    raise PermanentError(f"{what}: {kind} from the API", code=status, endpoint=endpoint)


def transport_error(exc: httpx.HTTPError, *, endpoint: str, create: bool = False) -> ApiError:
    """The error for an httpx exception on ``endpoint`` (raise it ``from exc``).

    For a create (``create=True``) anything but a failed connect may have reached the API and
    become a task: :class:`OutcomeUnknown`, so the caller reconciles instead of resending.
    """
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return PermanentError(f"bad API URL ({detail}); check api.base_url", endpoint=endpoint)
    if isinstance(exc, httpx.TimeoutException):
        what = "timed out"
    elif isinstance(exc, NOT_SENT):
        what = "could not connect"
    else:
        what = "the connection failed"
    if create and not isinstance(exc, NOT_SENT):
        return OutcomeUnknown(
            f"the create request was sent but its answer was lost ({what}: {detail}); the task may "
            "exist: reconcile with the task list before sending it again", endpoint=endpoint)
    return RetryLater(f"{what} ({detail})", endpoint=endpoint)
