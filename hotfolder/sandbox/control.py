"""The control endpoint ``/_sandbox/...``: no auth, never journaled, never faulted.

Answers are plain JSON (no envelope); a bad request gets HTTP 400 ``{"error": "..."}``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hotfolder.sandbox.server import Handler


def _body(handler: "Handler") -> Any:
    from hotfolder.sandbox.server import BodyError  # server imports this module

    try:
        raw = handler.read_body()
    except BodyError as exc:
        handler.close_connection = True  # the body's end is unknown
        raise ValueError(exc.text) from None
    try:
        return json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"body is not valid JSON ({exc})") from None


def _since(query: dict[str, str]) -> int:
    try:
        return int(query.get("since", "0") or 0)
    except ValueError:
        raise ValueError(f"since must be an integer, got {query['since']!r}") from None


def handle(handler: "Handler", path: str, query: dict[str, str]) -> None:
    """Serve one control request."""
    app = handler.app
    method = handler.command
    try:
        if (method, path) == ("GET", "/_sandbox/settings"):
            result: Any = app.settings.as_dict()
        elif (method, path) == ("POST", "/_sandbox/settings"):
            body = _body(handler)
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object of settings to change")
            app.update(**body)
            result = app.settings.as_dict()
        elif (method, path) == ("GET", "/_sandbox/journal"):
            result = app.journal(since=_since(query))
        elif (method, path) == ("GET", "/_sandbox/tasks"):
            result = app.tasks()
        elif (method, path) == ("GET", "/_sandbox/balance"):
            result = {"creates": app.state.creates_left}
        elif (method, path) == ("POST", "/_sandbox/balance"):
            body = _body(handler)
            if not isinstance(body, dict) or "creates" not in body:
                raise ValueError('body must be {"creates": N or null}')
            app.update(balance_creates=body["creates"])
            result = {"creates": app.state.creates_left}
        elif (method, path) == ("POST", "/_sandbox/file_status"):
            body = _body(handler)
            if not isinstance(body, dict) or not isinstance(body.get("id"), str):
                raise ValueError('body must be {"id": FILE_ID, "status": 99|100|98|null}')
            status = body.get("status")
            if status not in (None, 0, 1, 98, 99, 100):
                raise ValueError(f"status must be 0, 1, 98, 99, 100 or null, got {status!r}")
            app.set_file_status(body["id"], status)
            result = app.state.file_detail(app.state.files[body["id"]].app_id, body["id"])
        else:
            handler.not_found()
            handler.access_log(method, path, 404, "control")
            return
    except (ValueError, KeyError) as exc:
        message = f"unknown file id {exc}" if isinstance(exc, KeyError) else str(exc)
        handler.send_json(400, {"error": message})
        handler.access_log(method, path, 400, "control")
        return
    handler.send_json(200, result)
    handler.access_log(method, path, 200, "control")
