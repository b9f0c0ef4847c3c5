"""The API's task callbacks: the secret token, the URL sent with each create, and checking a POST.

When ``[api] callback_url`` is set, each create sends it with a ``token`` query parameter whose
value is a secret kept in the ledger (made once, at first use). A POST to the listener's
``/callback`` is acted on only with that token, and even then it is only a hint: the poller
confirms the task with ``detail`` before anything happens to a job. Pure apart from the ledger's
key/value store; never logs the token.
"""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from hotfolder.ledger import Ledger
from hotfolder.log import register_secret

TOKEN_KEY = "callback_token"


def token(ledger: Ledger) -> str:
    """The callback token (made and stored on first use; the same for every process)."""
    value = ledger.get_value(TOKEN_KEY)
    if not value:
        fresh = secrets.token_urlsafe(24)
        ledger.compare_and_set_value(TOKEN_KEY, None, fresh)
        value = ledger.get_value(TOKEN_KEY) or fresh
    register_secret(value)
    return value


def url_with_token(callback_url: str, ledger: Ledger) -> str:
    """``callback_url`` with ``token=<secret>`` added to its query."""
    parts = urlsplit(callback_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token(ledger)))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def token_ok(ledger: Ledger, given: str | None) -> bool:
    """Whether a callback carries the right token (constant-time comparison)."""
    expected = ledger.get_value(TOKEN_KEY)
    return bool(expected and given) and hmac.compare_digest(str(expected), str(given))


def task_id_of(body: bytes) -> str | None:
    """The task id in a callback body (the detail envelope ``{code, msg, data: {id, …}}``, or a
    bare task object), or None when there is none."""
    try:
        data: Any = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]
    if not isinstance(data, dict):
        return None
    task_id = data.get("id") or data.get("video_id")
    return str(task_id) if isinstance(task_id, (str, int)) and str(task_id) else None
