"""Who may use the dashboard, and whether a request really comes from its own pages.

Pure functions and one small class of keys; :class:`hotfolder.server.Listener` applies them to
every request (its guard middleware), before any endpoint runs.

* **Access.** On a loopback listener everyone on this machine may use everything. Elsewhere a
  request needs ``Authorization: Bearer <[server] token>`` (scripts, Prometheus) or the session
  cookie the login form sets. The cookie never holds the token: it is ``expiry.nonce.signature``,
  signed with a key derived from the token (HMAC-SHA256), so changing the token ends every
  session, a daemon restart does not, and no response ever carries the token itself.
* **CSRF.** A state-changing request (any method but GET/HEAD/OPTIONS) made with ambient
  credentials (the cookie, or the mere fact of being on loopback) must carry a token only the
  dashboard's own pages can read: ``X-CSRF-Token`` (fetch/XHR) or a ``csrf`` form field (the login
  and upload forms). The token is an HMAC of what the request is bound to (the session's nonce,
  "loopback", or "login") under a random key of this process. A request sent with the bearer
  header needs none: a browser never adds that header by itself. On top of the token, a browser's
  ``Origin`` and ``Sec-Fetch-Site`` headers, when present, must say "same origin".
* **DNS rebinding.** A web page elsewhere can make a name it controls resolve to 127.0.0.1 and
  then talk to a loopback listener as "its own" origin. The browser still sends that name in
  ``Host``, so a loopback listener answers pages and actions only to a loopback ``Host``
  (``localhost``, ``127.x.x.x``, ``[::1]``). ``/callback`` is exempt (a reverse proxy forwards the
  public name), and so is ``/healthz`` (probes; it changes nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

SESSION_COOKIE = "hotfolder_session"
SESSION_SECONDS = 30 * 86400
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Access:
    """How a request is allowed in: ``kind`` is ``loopback``, ``bearer`` or ``session``;
    ``binding`` is what its CSRF token must be bound to (empty for bearer requests)."""

    kind: str
    binding: str = ""

    @property
    def needs_csrf(self) -> bool:
        return self.kind != "bearer"

    @property
    def can_log_out(self) -> bool:
        return self.kind == "session"


class Keys:
    """The session-signing key (derived from the server token) and this process's CSRF key."""

    def __init__(self, token: str) -> None:
        self._session = hmac.new(token.encode("utf-8"), b"hotfolder dashboard session v1",
                                 hashlib.sha256).digest() if token else None
        self._csrf = secrets.token_bytes(32)

    # -- sessions -----------------------------------------------------------------------------
    def new_session(self, now: float | None = None) -> str:
        """A cookie value for a fresh session (valid :data:`SESSION_SECONDS`)."""
        if self._session is None:
            raise ValueError("no [server] token: sessions are off")
        expiry = int((time.time() if now is None else now) + SESSION_SECONDS)
        body = f"{expiry}.{secrets.token_urlsafe(18)}"
        return f"{body}.{self._sign(body)}"

    def session_nonce(self, cookie: str | None, now: float | None = None) -> str | None:
        """The nonce of a valid, unexpired session cookie, or None."""
        if not cookie or self._session is None or len(cookie) > 200:
            return None
        body, _, signature = cookie.rpartition(".")
        expiry, _, nonce = body.partition(".")
        if not (expiry.isdigit() and nonce and signature):
            return None
        if not hmac.compare_digest(signature.encode("ascii", "replace"), self._sign(body).encode("ascii")):
            return None
        if int(expiry) < (time.time() if now is None else now):
            return None
        return nonce

    def _sign(self, body: str) -> str:
        assert self._session is not None
        return hmac.new(self._session, body.encode("utf-8"), hashlib.sha256).hexdigest()

    # -- CSRF ---------------------------------------------------------------------------------
    def csrf_for(self, binding: str) -> str:
        """The CSRF token of requests bound to ``binding``."""
        return hmac.new(self._csrf, binding.encode("utf-8"), hashlib.sha256).hexdigest()[:40]

    def csrf_ok(self, binding: str, given: str | None) -> bool:
        if not given or len(given) > 100:
            return False
        return hmac.compare_digest(given.encode("ascii", "replace"), self.csrf_for(binding).encode("ascii"))


def bearer_ok(authorization: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>`` (constant-time comparison)."""
    if not token or not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    given = given.strip()
    return scheme.lower() == "bearer" and bool(given) and \
        hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def cookie_value(cookie_header: str | None, name: str = SESSION_COOKIE) -> str | None:
    """One cookie's value from a ``Cookie`` header (no dependency on a parser that accepts junk)."""
    for part in (cookie_header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def host_name(host_header: str | None) -> str | None:
    """The name or address in a ``Host`` header (port and brackets removed, lower case)."""
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else None
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        host = name
    return host.rstrip(".") or None


def loopback_host(host_header: str | None) -> bool:
    """Whether ``Host`` names this machine's loopback: ``localhost``, 127.0.0.0/8 or ::1."""
    name = host_name(host_header)
    if name is None:
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def same_origin(origin: str | None, host_header: str | None, fetch_site: str | None) -> bool:
    """Whether a browser's own headers say the request comes from the dashboard's origin. Absent
    headers (scripts, old browsers) are not evidence either way: the CSRF token decides."""
    if fetch_site and fetch_site.lower() not in ("same-origin", "none"):
        return False
    if origin is None:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == (host_header or "").strip().lower()


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site, never another one (``//evil``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 32 for c in target):
        return "/"
    return target
