"""TikTok Data Portability download client (urllib3).

One :class:`urllib3.PoolManager` per container is shared by every invocation. The archive body is read
with ``HTTPResponse.read(n)`` only — never mixed with ``stream()``, whose chunked-transfer framing state
is separate — and raw (``decode_content=False``: we send ``Accept-Encoding: identity``, so the raw bytes
are the archive). A part is filled in place, a bounded piece at a time: reading a whole part in one
``read`` would make http.client join a chunked body's pieces into a second copy of the part.
"""

from __future__ import annotations

import json
import re
from types import TracebackType
from typing import Any

import urllib3
from urllib3.exceptions import (
    HTTPError,
    MaxRetryError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import (
    TimeoutError as Urllib3TimeoutError,
)

from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.errors import (
    TikTokApiError,
    TransferError,
    UpstreamBadResponseError,
    UpstreamStreamBrokenError,
    UpstreamUnavailableError,
)
from tiktok_archive.observability import tracer

DOWNLOAD_PATH = "/v2/user/data/download/"
# Largest single read from the socket while filling a part: the transient copy it costs.
READ_PIECE_BYTES = 1024 * 1024
# A zip archive starts with a local file header; an archive with no entries is only its end record.
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
SIGNATURE_LENGTH = 4
# An error document is small; more than this is not one, and we stop reading.
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 500
_RETRY_AFTER = re.compile(r"[0-9]{1,7}|[A-Za-z0-9 ,:\-]{1,40}")
_LOG_ID = re.compile(r"[A-Za-z0-9\-_.]{1,128}")


def build_pool(connect_timeout: float, read_timeout: float) -> urllib3.PoolManager:
    """The container's connection pool to TikTok.

    Connection failures (nothing was sent) are retried twice with a short backoff by urllib3 itself;
    anything after the request was sent is not, because a download POST is answered with the archive.
    """
    retry = urllib3.Retry(
        total=2,
        connect=2,
        read=0,
        status=0,
        other=0,
        backoff_factor=0.2,
    )
    return urllib3.PoolManager(
        num_pools=4,
        maxsize=4,
        retries=retry,
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
    )


class ArchiveStream:
    """An open archive download whose first bytes were checked to be a zip.

    ``read(n)`` returns a new buffer of exactly ``n`` bytes except at the end of the archive, an empty
    one after it. Beyond that buffer it holds at most one ``READ_PIECE_BYTES`` piece. Use it as a
    context manager: the connection goes back to the pool only when the body was read to its end, and
    is discarded otherwise.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse, signature: bytes) -> None:
        self._response = response
        self._pending = signature
        self._finished = False

    def read(self, size: int) -> bytearray:
        """Read the next ``size`` bytes of the archive (fewer only at its end).

        Raises:
            UpstreamStreamBrokenError: the connection broke, stalled past the read timeout, or ended
                before its declared length or final chunk.
        """
        part = bytearray(size)
        view = memoryview(part)
        filled = len(self._pending)
        view[:filled] = self._pending
        self._pending = b""
        while filled < size:
            piece = self._read_piece(min(READ_PIECE_BYTES, size - filled))
            if not piece:
                self._finished = True
                break
            view[filled : filled + len(piece)] = piece
            filled += len(piece)
        view.release()
        if filled < size:
            del part[filled:]
        return part

    def _read_piece(self, amount: int) -> bytes:
        try:
            return self._response.read(amount, decode_content=False)
        except ReadTimeoutError:
            raise UpstreamStreamBrokenError(
                "the archive stream from TikTok stalled past the read timeout"
            ) from None
        except (ProtocolError, HTTPError, OSError) as error:
            raise UpstreamStreamBrokenError(
                f"the archive stream from TikTok broke: {type(error).__name__}"
            ) from None

    def __enter__(self) -> ArchiveStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._finished:
            self._response.release_conn()
        else:
            self._response.close()


class TikTokClient:
    """Calls TikTok's ``/v2/user/data/download/`` and returns the archive as a stream.

    Args:
        base_url: TikTok's API origin, without a trailing slash.
        pool: the container's shared pool (see :func:`build_pool`).
    """

    def __init__(self, base_url: str, pool: urllib3.PoolManager) -> None:
        self._url = base_url + DOWNLOAD_PATH
        self._pool = pool

    @tracer.capture_method(capture_response=False)
    def open_archive(self, request: DownloadRequest) -> ArchiveStream:
        """POST the download request and check that an archive is coming.

        Returns:
            an :class:`ArchiveStream` positioned at the archive's first byte.

        Raises:
            TikTokApiError: TikTok's JSON error (whatever the HTTP status, 200 included).
            UpstreamUnavailableError: no connection, timeout before the answer, or a non-JSON 5xx.
            UpstreamBadResponseError: an answer that is neither a zip nor a TikTok error.
        """
        body = json.dumps({"request_id": request.request_id}).encode()
        headers = {
            "Authorization": f"Bearer {request.access_token}",
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
        }
        try:
            response = self._pool.request(
                "POST",
                self._url,
                body=body,
                headers=headers,
                preload_content=False,
                redirect=False,
            )
        except MaxRetryError as error:
            raise _unavailable(error.reason) from None
        except (HTTPError, OSError) as error:
            raise _unavailable(error) from None
        try:
            signature = response.read(SIGNATURE_LENGTH, decode_content=False)
            if response.status == 200 and signature in ZIP_SIGNATURES:
                return ArchiveStream(response, signature)
            rest = response.read(MAX_ERROR_BODY_BYTES, decode_content=False)
        except (HTTPError, OSError) as error:
            response.close()
            raise UpstreamStreamBrokenError(
                f"TikTok's answer broke before it could be read: {type(error).__name__}",
                upstream_status=response.status,
            ) from None
        response.close()
        raise _failure(response, signature + rest)


def _unavailable(error: BaseException | None) -> UpstreamUnavailableError:
    if isinstance(error, Urllib3TimeoutError):
        return UpstreamUnavailableError("TikTok did not answer before the timeout")
    return UpstreamUnavailableError(
        f"TikTok could not be reached: {type(error).__name__ if error else 'unknown error'}"
    )


def _failure(response: urllib3.BaseHTTPResponse, body: bytes) -> TransferError:
    """Turn a non-archive answer into the one error that says what happened."""
    status = response.status
    retry_after = _header(response, "Retry-After", _RETRY_AFTER)
    header_log_id = _header(response, "X-Tt-Logid", _LOG_ID)
    document = _json_object(body)
    error = document.get("error") if document else None
    if isinstance(error, dict) and isinstance(error.get("code"), str) and error["code"] != "ok":
        log_id = error.get("log_id")
        return TikTokApiError(
            error["code"][:100],
            str(error.get("message") or "TikTok refused the request")[:MAX_MESSAGE_CHARS],
            log_id=log_id if isinstance(log_id, str) and _LOG_ID.fullmatch(log_id) else header_log_id,
            upstream_status=status,
            retry_after=retry_after,
        )
    if status == 429:
        return TikTokApiError(
            "rate_limit_exceeded",
            "TikTok is rate-limiting these requests",
            log_id=header_log_id,
            upstream_status=status,
            retry_after=retry_after,
        )
    if status >= 500:
        return UpstreamUnavailableError(
            f"TikTok answered HTTP {status} without an error document",
            log_id=header_log_id,
            upstream_status=status,
        )
    if not body:
        what = "an empty body"
    elif document is not None:
        what = "a JSON document that is not an archive"
    else:
        content_type = (response.headers.get("Content-Type") or "unknown").split(";")[0][:60]
        what = f"a body that is not a zip archive (Content-Type {content_type})"
    return UpstreamBadResponseError(
        f"TikTok answered HTTP {status} with {what}", log_id=header_log_id, upstream_status=status
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return document if isinstance(document, dict) else None


def _header(response: urllib3.BaseHTTPResponse, name: str, pattern: re.Pattern[str]) -> str | None:
    value = (response.headers.get(name) or "").strip()
    return value if pattern.fullmatch(value) else None
