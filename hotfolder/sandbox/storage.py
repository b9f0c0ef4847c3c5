"""The object-storage side: signed URLs, S3-style errors, streamed bodies and byte ranges.

Signed URLs look like ``{base}/_storage/upload/{key}?expires=UNIX&sig=HMAC`` where the HMAC
covers the key, the expiry and the Content-Type the request must carry (so, as on S3, a PUT with
another Content-Type fails with SignatureDoesNotMatch). Result URLs are signed the same way with
an empty type.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Mapping
from xml.sax.saxutils import escape

CHUNK = 1024 * 1024  # bodies move in 1 MiB pieces: a 1 GiB upload never sits in memory

UPLOAD_PREFIX = "/_storage/upload/"
RESULT_PREFIX = "/_storage/result/"
FILES_PREFIX = "/_storage/files/"
AUDITION_PREFIX = "/_storage/audition/"


def signature(secret: bytes, key: str, expires: int, mime: str) -> str:
    """HMAC-SHA256 (hex) over the object key, the expiry and the required Content-Type."""
    message = f"{key}\n{expires}\n{mime}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def signed_url(base: str, prefix: str, secret: bytes, key: str, expires: int, mime: str) -> str:
    """An absolute signed URL for ``key`` under ``prefix``."""
    return f"{base}{prefix}{key}?expires={expires}&sig={signature(secret, key, expires, mime)}"


class StorageDenied(Exception):
    """A storage request refused with an S3-style error (``status``, ``code``, ``message``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def check_signature(
    secret: bytes, key: str, query: Mapping[str, str], mime: str, now: float
) -> None:
    """Raise :class:`StorageDenied` unless ``query`` signs ``key`` for ``mime`` and is fresh."""
    expires_raw, sig = query.get("expires"), query.get("sig")
    if not expires_raw or not sig:
        raise StorageDenied(
            403, "AccessDenied", "Query-string authentication requires the expires and sig parameters"
        )
    try:
        expires = int(expires_raw)
    except ValueError:
        raise StorageDenied(403, "AccessDenied", "Invalid date (should be seconds since epoch)") from None
    if not hmac.compare_digest(signature(secret, key, expires, mime), sig):
        raise StorageDenied(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
        )
    if now >= expires:
        raise StorageDenied(403, "AccessDenied", "Request has expired")


def s3_error_xml(code: str, message: str) -> bytes:
    """The XML body S3 sends with an error status."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    ).encode()


class Unsatisfiable(Exception):
    """The Range header cannot be served (HTTP 416)."""


_RANGE = re.compile(r"^(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Parse a ``Range`` header against a body of ``size`` bytes.

    Returns ``None`` to send the whole body (no header, or a unit other than bytes), else the
    inclusive ``(first, last)``. Raises :class:`Unsatisfiable` for a malformed spec, several
    ranges (strict: no client of ours should ask for multipart answers) or a range past the end.
    """
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    if "," in spec:
        raise Unsatisfiable("multiple ranges are not supported")
    match = _RANGE.match(spec)
    if not match or match.groups() == ("", ""):
        raise Unsatisfiable(f"malformed range {header!r}")
    first_raw, last_raw = match.groups()
    if first_raw == "":  # suffix: the last N bytes
        length = int(last_raw)
        if length == 0 or size == 0:
            raise Unsatisfiable("empty suffix range")
        return max(0, size - length), size - 1
    first = int(first_raw)
    last = size - 1 if last_raw == "" else min(int(last_raw), size - 1)
    if first >= size or (last_raw != "" and int(last_raw) < first):
        raise Unsatisfiable(f"range {header!r} not satisfiable for {size} bytes")
    return first, last


def receive_body(
    rfile: BinaryIO, length: int, tmp_dir: Path
) -> tuple[Path, str] | None:
    """Stream ``length`` bytes from ``rfile`` into a new temp file in ``tmp_dir``.

    Returns ``(temp path, md5 hex)``, or ``None`` (temp file removed) when the sender stopped
    short: a broken upload must never become a stored object.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"upload-{uuid.uuid4().hex}.tmp"
    digest = hashlib.md5()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    remaining = length
    failed = False
    try:
        with open(tmp, "wb") as out:
            while remaining > 0:
                got = rfile.readinto(view[: min(CHUNK, remaining)])  # type: ignore[attr-defined]
                if not got:
                    break
                out.write(view[:got])
                digest.update(view[:got])
                remaining -= got
    except OSError:  # socket reset/timeout, or the disk: either way the object is incomplete
        failed = True
    if failed or remaining != 0:
        tmp.unlink(missing_ok=True)
        return None
    return tmp, digest.hexdigest()


def drain(rfile: BinaryIO, length: int, limit: int = 64 * CHUNK) -> bool:
    """Read and discard up to ``limit`` bytes of an unwanted body so the refusal that follows
    reaches the client instead of a connection reset. True if the whole body was read."""
    if length > limit:
        return False
    remaining = length
    try:
        while remaining > 0:
            got = rfile.read(min(CHUNK, remaining))
            if not got:
                return False
            remaining -= len(got)
    except OSError:
        return False
    return True


def send_file_range(
    path: Path, first: int, count: int, write: Callable[[bytes], object]
) -> None:
    """Write ``count`` bytes of ``path`` from offset ``first`` through ``write``, in chunks."""
    with open(path, "rb") as src:
        src.seek(first)
        remaining = count
        while remaining > 0:
            chunk = src.read(min(CHUNK, remaining))
            if not chunk:
                raise OSError(f"{path} shrank while being sent")
            write(chunk)
            remaining -= len(chunk)


def link_or_copy(src: Path, dest: Path) -> None:
    """Give ``dest`` the current content of ``src`` cheaply: a hard link when possible.

    Uploads replace their blob by rename, so a link keeps the old content for the task even if
    the file is uploaded again later.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".{uuid.uuid4().hex}.tmp")
    try:
        os.link(src, tmp)
    except OSError:
        with open(src, "rb") as s, open(tmp, "wb") as d:
            while chunk := s.read(CHUNK):
                d.write(chunk)
    os.replace(tmp, dest)
