"""Moving file bytes: the signed-URL PUT (streamed from disk) and result downloads (resumable).

Neither ever holds a whole file in memory: uploads read 1 MiB at a time from the open file,
downloads write each chunk as it arrives. One call here is ONE attempt; the client wraps it in
the retry loop (a new attempt reopens the file, or resumes the ``.part`` with a Range request).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn

import httpx

from hotfolder.chanjing.mapping import parse_retry_after, transport_error
from hotfolder.chanjing.models import UploadSlot
from hotfolder.errors import PermanentError, RateLimited, RetryLater, UrlExpired
from hotfolder.fsutil import fsync_replace

CHUNK = 1 << 20  # 1 MiB: big enough for throughput, small enough to never matter for memory
Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def _error_text(response: httpx.Response, limit: int = 65536) -> str:
    """The start of an error body (a streamed response is read only up to ``limit`` bytes)."""
    if not response.is_stream_consumed:
        chunks, size = [], 0
        try:
            for chunk in response.iter_raw(8192):
                chunks.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
        except httpx.HTTPError:
            pass  # the status says enough
        return b"".join(chunks)[:limit].decode("utf-8", "replace")
    try:
        return response.text[:limit]
    except (httpx.HTTPError, UnicodeDecodeError):
        return ""


def _s3_detail(response: httpx.Response) -> str:
    """``Code: Message`` from an object-storage XML error body, if there is one."""
    text = _error_text(response)
    code = re.search(r"<Code>(.*?)</Code>", text, re.S)
    message = re.search(r"<Message>(.*?)</Message>", text, re.S)
    return ": ".join(m.group(1).strip() for m in (code, message) if m)


def _refused(response: httpx.Response, *, endpoint: str, now: float, expired_on: tuple[int, ...]) -> NoReturn:
    """Raise the error for a non-2xx storage answer."""
    status = response.status_code
    detail = _s3_detail(response) or f"HTTP {status} {response.reason_phrase}".strip()
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
    if status in expired_on:
        target = "upload" if endpoint == "upload_put" else "result"
        raise UrlExpired(f"the signed {target} URL was refused ({detail}); a fresh one is needed",
                         code=status, endpoint=endpoint)
    if status == 429:
        raise RateLimited(f"storage says slow down ({detail})", code=status, endpoint=endpoint,
                          retry_after=retry_after)
    if status >= 500 or status == 408:
        raise RetryLater(f"storage failed ({detail})", code=status, endpoint=endpoint, retry_after=retry_after)
    raise PermanentError(f"storage refused the request ({detail})", code=status, endpoint=endpoint)


def file_chunks(fh: BinaryIO, size: int, on_progress: Progress | None = None) -> Iterator[bytes]:
    """Exactly ``size`` bytes of ``fh`` in chunks; RetryLater if the file shrank meanwhile."""
    sent = 0
    while sent < size:
        chunk = fh.read(min(CHUNK, size - sent))
        if not chunk:
            raise RetryLater(f"the file shrank while it was uploading ({sent} of {size} bytes)",
                             endpoint="upload_put")
        sent += len(chunk)
        yield chunk
        if on_progress is not None:
            on_progress(sent, size)


def put_once(http: httpx.Client, slot: UploadSlot, path: Path, *, now: float,
             on_progress: Progress | None = None) -> int:
    """One PUT of ``path`` to ``slot.sign_url``; returns the bytes sent.

    The Content-Type must equal the slot's ``mime_type`` (it is part of the signature) and an
    explicit Content-Length keeps httpx from chunking, which object storage refuses (411).
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        headers = {"Content-Type": slot.mime_type, "Content-Length": str(size)}
        try:
            response = http.put(slot.sign_url, content=file_chunks(fh, size, on_progress), headers=headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc, endpoint="upload_put") from exc
    if not response.is_success:
        _refused(response, endpoint="upload_put", now=now, expired_on=(403,))
    return size


def part_path(dest: Path) -> Path:
    """Where the download of ``dest`` grows until it is complete."""
    return dest.with_name(dest.name + ".part")


def part_size(dest: Path) -> int:
    """Bytes of ``dest``'s download so far (0 if none)."""
    try:
        return part_path(dest).stat().st_size
    except FileNotFoundError:
        return 0


_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.I)


def content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` from a Content-Range header; None for what is unknown."""
    match = _RANGE.match((value or "").strip())
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return first, total


def _finish(part: Path, dest: Path, expected_size: int | None) -> int:
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink(missing_ok=True)
        raise PermanentError(f"downloaded {size} bytes but {expected_size} were expected", endpoint="download")
    fsync_replace(part, dest)
    return size


def _restart(part: Path, why: str) -> RetryLater:
    part.unlink(missing_ok=True)
    return RetryLater(f"download restarts from byte 0: {why}", endpoint="download")


def download_once(http: httpx.Client, url: str, dest: Path, *, now: float,
                  expected_size: int | None = None) -> int:
    """One attempt at fetching ``url`` into ``dest`` via ``dest.part``; returns the final size.

    Resumes an existing ``.part`` with ``Range: bytes=N-``. A 206 is appended at the offset it
    names; a 200 (the server ignored the Range) starts over. The result is checked against the
    total the server announced (Content-Length / Content-Range) and ``expected_size``, fsynced,
    then renamed into place. A cut leaves the ``.part`` for the next attempt (RetryLater).
    """
    part = part_path(dest)
    have = part_size(dest)
    headers = {"Accept-Encoding": "identity"}  # byte ranges must address the stored bytes
    if have:
        headers["Range"] = f"bytes={have}-"
    total: int | None = None
    try:
        with http.stream("GET", url, headers=headers, follow_redirects=True) as response:
            status = response.status_code
            if status == 416:
                _, total = content_range(response.headers.get("Content-Range"))
                if total is not None and have == total:
                    return _finish(part, dest, expected_size)  # the .part was already whole
                raise _restart(part, f"the server cannot serve bytes {have}- (HTTP 416)")
            if status == 206:
                offset, total = content_range(response.headers.get("Content-Range"))
                if offset is None or offset > have:
                    raise _restart(part, "the server answered an unusable range")
            elif status == 200:
                offset = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            else:
                _refused(response, endpoint="download", now=now, expired_on=(403, 404, 410))
            if expected_size is not None and total is not None and total != expected_size:
                part.unlink(missing_ok=True)
                raise PermanentError(f"the server offers {total} bytes but {expected_size} were expected",
                                     endpoint="download")
            with open(part, "r+b" if part.exists() else "wb") as fh:
                fh.seek(offset)
                fh.truncate(offset)
                # No chunk_size: httpx would buffer up to it and lose the buffer on a cut; as
                # the network delivers (64 KiB reads), everything received is kept for resuming.
                for chunk in response.iter_raw():
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        raise transport_error(exc, endpoint="download") from exc
    size = part_size(dest)
    if total is not None and size != total:
        raise RetryLater(f"download cut short at {size} of {total} bytes", endpoint="download")
    return _finish(part, dest, expected_size)
