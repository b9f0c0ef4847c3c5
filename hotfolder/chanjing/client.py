"""The Chanjing API client: the only code that speaks to the API. It knows nothing of the ledger.

One instance is shared by all worker threads: httpx's pool is thread-safe, pacing is a shared
:class:`~hotfolder.ratelimit.RateLimiter`, and the token lives in a :class:`TokenStore` whose
``refresh`` serializes fetches (a new token invalidates the old one).

Each public call is: pace → token → send → map the answer (see :mod:`.mapping`), inside the
retry loop of :mod:`hotfolder.retry` (transient errors only). A 10400/10401 refreshes the token
once and resends. ``create_lip_sync`` is never resent once it may have reached the API: the
caller gets :class:`~hotfolder.errors.OutcomeUnknown` and reconciles with ``list_tasks``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hotfolder import __version__
from hotfolder.chanjing import transfer
from hotfolder.chanjing.mapping import CODES_AUTH, check_response, transport_error
from hotfolder.chanjing.models import (FileInfo, LipSyncRequest, PageInfo, Task, TaskPage, Token, UploadSlot,
                                       Voice, VoicePage, as_dict, as_float, as_list, as_str)
from hotfolder.chanjing.tokens import MemoryTokenStore, TokenStore
from hotfolder.errors import (ApiError, AuthError, FileRejected, Interrupted, OutcomeUnknown, RetryLater,
                              UrlExpired)
from hotfolder.log import get_logger
from hotfolder.ratelimit import Limits, RateLimiter, pause
from hotfolder.retry import Backoff, call_with_retry

log = get_logger("hotfolder.chanjing")

TOKEN_MARGIN = 300.0      # stop using a token this long before it expires
MAX_PAGE_SIZE = 50        # larger list pages are refused or truncated by the API
UPLOAD_URL_TRIES = 3      # fresh upload slots to try when a signed URL is refused
FILE_STATUS_READY = 1
FILE_STATUS_GONE = {98: "it failed the API's content-safety check; use different footage or audio",
                    99: "it was deleted on the API's side; upload it again",
                    100: "it was cleaned up by the API (files are kept 30 days); upload it again"}


@dataclass(frozen=True)
class CallRecord:
    """One API call as observers (status, metrics) see it: never a URL, token or body."""

    endpoint: str
    code: int | None          # the envelope code (0 = ok), the HTTP status of a non-envelope answer, or None
    http_status: int | None   # None: no answer at all (connect failure, timeout, dropped connection)
    elapsed: float            # seconds
    error: ApiError | None


class ChanjingClient:
    """Typed calls to the Chanjing lip-sync API (see ``/work/shared/chanjing-api.md``).

    ``limits`` paces the calls (creates, file calls, queries); ``transport`` replaces httpx's
    network transport (tests); ``clock`` is wall time (token expiry; with the default, waits use
    ``time.monotonic``); ``sleep`` is used for pacing and backoff waits; ``timeout`` bounds each
    connect/read/write; ``max_retries`` retries follow a transient failure (or pass a whole
    ``backoff`` policy); ``rng`` makes the backoff jitter reproducible; ``stop`` (a shutdown
    request) cuts every wait short with :class:`~hotfolder.errors.Interrupted` or the last
    transient error.
    """

    def __init__(self, base_url: str, app_id: str, secret_key: str, *, token_store: TokenStore | None = None,
                 limits: Limits | None = None, transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 timeout: float = 30.0, max_retries: int = 5, backoff: Backoff | None = None,
                 rng: random.Random | None = None, stop: threading.Event | None = None,
                 observer: Callable[[CallRecord], None] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.app_id = app_id
        self._secret = secret_key
        self.tokens: TokenStore = token_store if token_store is not None else MemoryTokenStore()
        self.limits = limits or Limits()
        self._clock = clock
        self._sleep = sleep
        # Waits and deadlines need a clock that never steps; with an injected clock, use it.
        self._mono: Callable[[], float] = time.monotonic if clock is time.time else clock
        self.limiter = RateLimiter(self.limits, clock=self._mono, sleep=sleep)
        self.backoff = backoff or Backoff(max_retries=max_retries)
        self._rng = rng or random.Random()
        self._stop = stop
        self._observer = observer
        self._token_lock = threading.Lock()
        self._token: Token | None = None
        self._http = httpx.Client(
            transport=transport, timeout=httpx.Timeout(timeout),
            headers={"User-Agent": f"hotfolder/{__version__}"},
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    def __repr__(self) -> str:  # no secrets
        return f"ChanjingClient({self.base_url!r}, app_id={self.app_id!r})"

    def __enter__(self) -> ChanjingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- plumbing -------------------------------------------------------------------------------
    def _retry(self, fn: Callable[[], Any], what: str, stop: threading.Event | None = None,
               progress: Callable[[], int] | None = None) -> Any:
        return call_with_retry(fn, backoff=self.backoff, rng=self._rng, sleep=self._sleep,
                               stop=stop or self._stop, progress=progress, what=what)

    def _api(self, endpoint: str, method: str, path: str, *, params: dict[str, Any] | None = None,
             body: dict[str, Any] | None = None, stop: threading.Event | None = None) -> Any:
        """``data`` of one API call, with pacing, token, one refresh on 10400 and retries."""
        def attempt() -> Any:
            token = self._current_token()
            try:
                return self._send(endpoint, method, path, params=params, body=body, token=token, stop=stop)
            except AuthError as exc:
                if exc.code not in CODES_AUTH:
                    raise
                # Someone issued a newer token (another process, or the token expired early):
                # refresh once (the store skips the fetch if another thread already did it).
                log.info("token_rejected", endpoint=endpoint, code=exc.code)
                fresh = self._refresh_token(stale=token)
                return self._send(endpoint, method, path, params=params, body=body, token=fresh, stop=stop)

        return self._retry(attempt, endpoint, stop)

    def _send(self, endpoint: str, method: str, path: str, *, params: dict[str, Any] | None,
              body: dict[str, Any] | None, token: Token | None, stop: threading.Event | None) -> Any:
        """One paced HTTP request; returns ``data`` or raises the mapped error."""
        if not self.limiter.acquire(endpoint, stop or self._stop):
            raise Interrupted("stopping: the call was not made", endpoint=endpoint)
        headers = {"access_token": token.value} if token is not None else {}
        started = self._mono()
        code: int | None = None
        status: int | None = None
        failure: ApiError | None = None
        try:
            response = self._http.request(method, self.base_url + path, params=params, json=body,
                                          headers=headers)
            status = response.status_code
            data = check_response(response, endpoint=endpoint, now=self._clock(), create=endpoint == "create")
            code = 0
            return data
        except httpx.HTTPError as exc:
            code = None
            failure = transport_error(exc, endpoint=endpoint, create=endpoint == "create")
            raise failure from exc
        except ApiError as exc:
            code = exc.code
            failure = exc
            raise
        finally:
            elapsed = self._mono() - started
            log.debug("api_call", endpoint=endpoint, code=code, http_status=status,
                      elapsed_ms=round(elapsed * 1000, 1))
            if self._observer is not None:
                self._observe(CallRecord(endpoint, code, status, elapsed, failure))

    def _observe(self, record: CallRecord) -> None:
        try:
            self._observer(record)   # type: ignore[misc]
        except Exception:   # an observer (metrics, status) must never break a call
            log.exception("api_observer_failed", endpoint=record.endpoint)

    # -- token ----------------------------------------------------------------------------------
    def _fetch_token(self) -> Token:
        """POST access_token (called by the store under its lock). Never logs the token."""
        data = as_dict(self._send("access_token", "POST", "/open/v1/access_token",
                                  params=None, body={"app_id": self.app_id, "secret_key": self._secret},
                                  token=None, stop=None))
        value = as_str(data.get("access_token"))
        if not value:
            raise RetryLater("access_token answered without a token", endpoint="access_token")
        now = self._clock()
        expires = as_float(data.get("expire_in"))
        if expires is None:
            expires = now + 3600.0          # unknown: assume short, refetch sooner
        elif expires < 1e9:
            expires = now + expires          # a duration after all, not a timestamp
        log.info("token_issued", expires_at=int(expires))
        return Token(value=value, expires_at=expires)

    def _current_token(self) -> Token:
        """A token valid for at least TOKEN_MARGIN more seconds (fetched lazily)."""
        with self._token_lock:
            token = self._token
        if token is None:
            token = self.tokens.load(self.app_id)
        if token is None or token.expires_at - TOKEN_MARGIN <= self._clock():
            token = self.tokens.refresh(self.app_id, token, self._fetch_token)
        with self._token_lock:
            self._token = token
        return token

    def _refresh_token(self, stale: Token) -> Token:
        token = self.tokens.refresh(self.app_id, stale, self._fetch_token)
        with self._token_lock:
            self._token = token
        return token

    def set_limits(self, limits: Limits) -> None:
        """New pacing (a config reload); calls already waiting finish on the old pacer."""
        self.limits = limits
        self.limiter = RateLimiter(limits, clock=self._mono, sleep=self._sleep)

    def verify_credentials(self) -> Token:
        """Ask for a new token with the configured app_id/secret_key: the only way to know that
        they are right (a cached token proves nothing about the secret). The new token goes into
        the shared store, so other processes (a running daemon) switch to it after one refusal."""
        stale = self.tokens.load(self.app_id)
        token = self.tokens.refresh(self.app_id, stale, self._fetch_token)
        with self._token_lock:
            self._token = token
        return token

    # -- files ----------------------------------------------------------------------------------
    def create_upload_url(self, service: str, name: str) -> UploadSlot:
        """A signed PUT target for a file named ``name`` (with extension) for ``service``
        (``lip_sync_video`` or ``lip_sync_audio``)."""
        data = self._api("create_upload_url", "GET", "/open/v1/common/create_upload_url",
                         params={"service": service, "name": name})
        return UploadSlot.from_api(data)

    def put_file(self, slot: UploadSlot, path: Path | str, *,
                 on_progress: Callable[[int, int], None] | None = None) -> None:
        """PUT ``path`` to the slot, streamed from disk; transient failures reopen and resend.

        ``on_progress(bytes_sent, total)`` is called after each chunk (from 0 again when a retry
        resends). A refused URL raises :class:`~hotfolder.errors.UrlExpired` (``upload`` then
        gets a fresh slot).
        """
        path = Path(path)

        def attempt() -> int:
            started = self._mono()
            size = transfer.put_once(self._http, slot, path, now=self._clock(), on_progress=on_progress)
            elapsed = self._mono() - started
            log.debug("upload_put", file_id=slot.file_id, bytes=size, elapsed_ms=round(elapsed * 1000, 1))
            return size

        self._retry(attempt, "upload_put")

    def upload(self, path: Path | str, service: str, name: str | None = None, *,
               on_progress: Callable[[int, int], None] | None = None) -> str:
        """create_upload_url + put_file; returns the ``file_id`` (not yet ready: see
        :meth:`wait_file_ready`). An expired signed URL is replaced by a fresh slot."""
        path = Path(path)
        for attempt in range(UPLOAD_URL_TRIES):
            slot = self.create_upload_url(service, name or path.name)
            try:
                self.put_file(slot, path, on_progress=on_progress)
                return slot.file_id
            except UrlExpired:
                if attempt == UPLOAD_URL_TRIES - 1:
                    raise
                log.info("upload_url_refused", file_id=slot.file_id, attempt=attempt + 1)
        raise AssertionError("unreachable")

    def file_detail(self, file_id: str, *, stop: threading.Event | None = None) -> FileInfo:
        """The file's state as the API reports it (no judgement on the status)."""
        data = self._api("file_detail", "GET", "/open/v1/common/file_detail", params={"id": file_id}, stop=stop)
        return FileInfo.from_api(data, file_id)

    def wait_file_ready(self, file_id: str, *, timeout: float = 120.0, stop: threading.Event | None = None,
                        poll: float = 0.5) -> FileInfo:
        """Poll ``file_detail`` until status 1 (ready).

        Raises :class:`FileRejected` for 98/99/100, :class:`RetryLater` when ``timeout``
        seconds pass first, :class:`Interrupted` when ``stop`` is set.
        """
        stop = stop or self._stop
        deadline = self._mono() + timeout
        wait = min(poll, 0.2)
        while True:
            info = self.file_detail(file_id, stop=stop)
            if info.status == FILE_STATUS_READY:
                return info
            if info.status in FILE_STATUS_GONE:
                why = FILE_STATUS_GONE[info.status]
                detail = f" (API says: {info.msg})" if info.msg and info.msg != "success" else ""
                raise FileRejected(f"the API will not use uploaded file {file_id}: {why}{detail}",
                                   code=info.status, endpoint="file_detail")
            left = deadline - self._mono()
            if left <= 0:
                raise RetryLater(f"uploaded file {file_id} was not ready after {timeout:g} s "
                                 f"(status {info.status})", endpoint="file_detail")
            if not pause(min(wait, left), sleep=self._sleep, stop=stop):
                raise Interrupted(f"stopped while waiting for file {file_id}", endpoint="file_detail")
            wait = min(wait * 1.5, poll * 10)

    # -- tasks ----------------------------------------------------------------------------------
    def create_lip_sync(self, request: LipSyncRequest) -> str:
        """Create a lip-sync task; returns its id.

        Never resent once it may have reached the API: a lost answer raises
        :class:`OutcomeUnknown` (reconcile with :meth:`list_tasks`). Refusals that prove nothing
        was created (a failed connect, 40001, 50000 with an envelope) are retried.
        """
        data = self._api("create", "POST", "/open/v1/video_lip_sync/create", body=request.to_api())
        task_id = as_str(data) if not isinstance(data, dict) else \
            as_str(data.get("id") or data.get("video_id") or data.get("task_id"))
        if not task_id:
            raise OutcomeUnknown("create answered success without a task id; reconcile with the task list",
                                 code=0, endpoint="create")
        return task_id

    def task_detail(self, task_id: str) -> Task:
        """One task's status, progress and (when done) result URLs."""
        data = self._api("detail", "GET", "/open/v1/video_lip_sync/detail", params={"id": task_id})
        return Task.from_api(data, task_id)

    def list_tasks(self, page: int = 1, page_size: int = 50) -> TaskPage:
        """One page of the account's tasks, newest first (``page_size`` capped at 50)."""
        page, size = max(1, int(page)), max(1, min(MAX_PAGE_SIZE, int(page_size)))
        data = as_dict(self._api("list", "POST", "/open/v1/video_lip_sync/list",
                                 body={"page": page, "page_size": size}))
        items = as_list(data.get("list"))
        info = PageInfo.from_api(data.get("page_info"), page, size, len(items))
        return TaskPage([Task.from_api(t) for t in items], info.page, info.size, info.total_count, info.total_page)

    # -- voices ---------------------------------------------------------------------------------
    def list_voices(self, page: int = 1, size: int = 50) -> VoicePage:
        """One page of public voices (``list_common_audio``)."""
        page, size = max(1, int(page)), max(1, min(MAX_PAGE_SIZE, int(size)))
        data = as_dict(self._api("list_common_audio", "GET", "/open/v1/list_common_audio",
                                 params={"page": page, "size": size}))
        items = as_list(data.get("list"))
        info = PageInfo.from_api(data.get("page_info"), page, size, len(items))
        return VoicePage([Voice.from_api(v) for v in items], info.page, info.size, info.total_count,
                         info.total_page)

    def all_voices(self, max_pages: int = 100) -> list[Voice]:
        """Every public voice (walks the pages)."""
        voices: list[Voice] = []
        for page in range(1, max_pages + 1):
            result = self.list_voices(page=page, size=MAX_PAGE_SIZE)
            voices.extend(result.voices)
            if not result.voices or page >= result.total_page:
                break
        return voices

    # -- results --------------------------------------------------------------------------------
    def download(self, url: str, dest: Path | str, *, expected_size: int | None = None) -> int:
        """Fetch ``url`` into ``dest`` atomically; returns its size in bytes.

        Streams to ``dest.name + ".part"`` beside ``dest`` (an existing one is resumed with a
        Range request), checks the size, fsyncs and renames. A cut resumes; a refused URL
        (403/404/410) raises :class:`UrlExpired`: fetch the task's detail for fresh URLs.
        """
        dest = Path(dest)
        if not url:
            raise UrlExpired("no result URL to download from; fetch the task's detail", endpoint="download")
        dest.parent.mkdir(parents=True, exist_ok=True)

        def attempt() -> int:
            started, before = self._mono(), transfer.part_size(dest)
            size = transfer.download_once(self._http, url, dest, now=self._clock(), expected_size=expected_size)
            log.debug("download", dest=dest.name, bytes=size - before, resumed_at=before,
                      elapsed_ms=round((self._mono() - started) * 1000, 1))
            return size

        return int(self._retry(attempt, "download", progress=lambda: transfer.part_size(dest)))
