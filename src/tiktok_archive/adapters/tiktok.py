"""TikTok Data Portability download client (urllib3).

One :class:`urllib3.PoolManager` per container is shared by every invocation. The archive body is read
with ``HTTPResponse.read(n)`` only — never mixed with ``stream()``, whose chunked-transfer framing state
is separate — and raw (``decode_content=False``: we send ``Accept-Encoding: identity``, so the raw bytes
are the archive). A part is filled in place, a bounded piece at a time: reading a whole part in one
``read`` would make http.client join a chunked body's pieces into a second copy of the part.

Failures, and what each one costs (every wait draws on the invocation's :class:`Deadline`):

- before the first byte (no connection, reset before the headers, 429, 500/502/503/504): urllib3 tries
  the request again (:class:`BudgetedRetry`: exponential backoff with full jitter, ``Retry-After``
  honoured up to a cap), up to ``max_attempts`` tries in all;
- a broken, stalled or truncated stream: the request is sent again with ``Range: bytes=<received>-``;
  a 206 with the matching ``Content-Range`` continues the archive where it broke, anything else ends the
  stream with the break's error so that the caller starts over with a new upload (never mixed bytes);
- the deadline: a watchdog shuts the socket down at the deadline, so even a slow trickle stops in time;
- the end of the body: its last bytes must be a zip's end records agreeing with the byte count
  (:class:`ZipTail`), checked before the last part is handed over, so an invalid body is never
  completed into an object.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
import time
from http.client import IncompleteRead
from types import TracebackType
from typing import Any, Self

import urllib3
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import (
    HTTPError,
    MaxRetryError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import (
    TimeoutError as Urllib3TimeoutError,
)

from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.errors import (
    ArchiveTruncatedError,
    DeadlineExceededError,
    TikTokApiError,
    TransferError,
    UpstreamBadResponseError,
    UpstreamStreamBrokenError,
    UpstreamUnavailableError,
)
from tiktok_archive.models.zip_tail import ZipTail
from tiktok_archive.observability import logger, tracer

DOWNLOAD_PATH = "/v2/user/data/download/"
CHECK_PATH = "/v2/user/data/check/?fields=request_id,status"
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
_CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+|\*)")
# Statuses that say "try again": rate limited, or TikTok's side failing before it answered.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Backoff between tries: full jitter, uniform in [0, min(BACKOFF_MAX, BACKOFF_BASE * 2^(n-1))].
BACKOFF_BASE_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 8.0
# A Retry-After longer than this is not waited for in an invocation: it is passed on to the caller.
RETRY_AFTER_MAX_SECONDS = 60.0


def build_pool() -> urllib3.PoolManager:
    """The container's connection pool to TikTok; timeouts and retries are set per request."""
    return urllib3.PoolManager(num_pools=4, maxsize=4, retries=False)


class BudgetedRetry(urllib3.Retry):
    """urllib3's ``Retry`` with full-jitter backoff, bounded by the invocation's deadline.

    A try is only made if its wait — ``Retry-After`` when the answer has one, the backoff otherwise —
    ends before the deadline, and ``Retry-After`` is only waited for up to
    :data:`RETRY_AFTER_MAX_SECONDS`. Otherwise the last answer is what the request returns (a 429 keeps
    its ``Retry-After`` for the caller) or its error is raised.
    """

    def __init__(self, *args: Any, deadline: Deadline | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline
        self.planned_wait = 0.0

    @classmethod
    def for_attempts(cls, attempts: int, deadline: Deadline) -> BudgetedRetry:
        """At most ``attempts`` tries of a POST (idempotent here: it only reads the archive)."""
        return cls(
            total=attempts - 1,
            other=0,
            redirect=False,
            allowed_methods=frozenset({"POST"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=BACKOFF_BASE_SECONDS,
            backoff_max=BACKOFF_MAX_SECONDS,
            # Parsed without urllib3's cap: a longer Retry-After is not shortened but handed on.
            retry_after_max=float("inf"),
            raise_on_status=False,
            respect_retry_after_header=True,
            deadline=deadline,
        )

    def new(self, **kw: Any) -> Self:
        return super().new(deadline=self.deadline, **kw)

    def get_backoff_time(self) -> float:
        """Full jitter: uniform between 0 and the exponential ceiling of the failures so far."""
        failures = len(self.history)
        if failures == 0:
            return 0.0
        # Jitter spreads retries of many invocations apart; it is no secret.
        ceiling = min(self.backoff_max, self.backoff_factor * 2 ** (failures - 1))
        return random.uniform(0, ceiling)  # noqa: S311

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: urllib3.BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        retry_after = self.get_retry_after(response) if response is not None else None
        wait = retry.get_backoff_time() if retry_after is None else retry_after
        reason = "no time left to wait" if self.deadline and wait >= self.deadline.remaining() else None
        if retry_after is not None and retry_after > RETRY_AFTER_MAX_SECONDS:
            reason = "Retry-After is too long to wait for"
        if reason is not None:
            raise MaxRetryError(_pool, url, error or ResponseError(reason))  # type: ignore[arg-type]
        logger.warning(
            "TikTok request failed before the archive started; trying again",
            extra={
                "attempt": len(retry.history) + 1,
                "upstream_status": response.status if response is not None else None,
                "error_type": type(error).__name__ if error else None,
                "wait_seconds": round(wait, 3),
            },
        )
        retry.planned_wait = wait
        return retry

    def sleep(self, response: urllib3.BaseHTTPResponse | None = None) -> None:
        """Wait what :meth:`increment` planned (and checked against the deadline)."""
        if self.planned_wait > 0:
            time.sleep(self.planned_wait)


class ArchiveStream:
    """An open archive download whose first bytes were checked to be a zip.

    ``readinto(buffer)`` fills the caller's buffer, completely except at the end of the archive. A break
    is repaired in place by a ranged request when TikTok supports one, so the caller never sees it.
    Beyond the caller's buffer it holds at most one ``READ_PIECE_BYTES`` piece and the archive's last
    bytes (:class:`ZipTail`). Use it as a context manager: the connection goes
    back to the pool only when the body was read to its end, and is discarded otherwise.
    """

    def __init__(
        self,
        client: TikTokClient,
        request: DownloadRequest,
        deadline: Deadline,
        response: urllib3.BaseHTTPResponse,
        signature: bytes,
        resumes: int,
    ) -> None:
        self._client = client
        self._request = request
        self._deadline = deadline
        self._response = response
        self._pending = signature
        self._tail = ZipTail()
        self._tail.feed(signature)
        self._length = _content_length(response)
        self._resumes_left = resumes
        self.resumed = 0
        self._finished = False
        self._lock = threading.Lock()
        self._timed_out = False
        self._watchdog = threading.Timer(max(0.0, deadline.remaining()), self._interrupt)
        self._watchdog.daemon = True
        self._watchdog.start()

    @property
    def received(self) -> int:
        """Archive bytes received so far."""
        return self._tail.size

    def readinto(self, part: bytearray) -> int:
        """Fill ``part`` with the next bytes of the archive; fewer only at its end, 0 after it.

        Raises:
            UpstreamStreamBrokenError: the connection broke or stalled past the read timeout, and could
                not be resumed (``ArchiveTruncatedError`` when it ended before its length or final chunk).
            ArchiveInvalidError: the body ended without the end records of a whole zip archive.
            DeadlineExceededError: the invocation's deadline came first.
            TransferError: a resumption was refused by TikTok.
        """
        size = len(part)
        view = memoryview(part)
        filled = len(self._pending)
        view[:filled] = self._pending
        self._pending = b""
        while filled < size:
            piece = self._read_piece(min(READ_PIECE_BYTES, size - filled))
            if not piece:
                self._tail.verify()
                self._finished = True
                break
            view[filled : filled + len(piece)] = piece
            filled += len(piece)
            self._tail.feed(piece)
        view.release()
        return filled

    def _read_piece(self, amount: int) -> bytes:
        while True:
            try:
                piece = self._response.read(amount, decode_content=False)
            except (ProtocolError, HTTPError, OSError) as error:
                self._resume_after(self._broken(error))
                continue
            if not piece and self._timed_out:
                raise self._deadline_error()
            return piece

    def _broken(self, error: Exception) -> TransferError:
        if self._timed_out:
            return self._deadline_error()
        where = f"after {self.received} bytes"
        if isinstance(error, ReadTimeoutError):
            return UpstreamStreamBrokenError(
                f"the archive stream from TikTok stalled past the read timeout {where}"
            )
        # http.client's IncompleteRead (chunked) or urllib3's subclass of it (Content-Length).
        if isinstance(error, ProtocolError) and any(isinstance(a, IncompleteRead) for a in error.args):
            return ArchiveTruncatedError(
                f"the archive stream from TikTok ended {where}, before its declared length or final chunk"
            )
        return UpstreamStreamBrokenError(
            f"the archive stream from TikTok broke {where}: {type(error).__name__}"
        )

    def _deadline_error(self) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"the invocation's time budget ran out while downloading, after {self.received} bytes; "
            "nothing was stored"
        )

    def _resume_after(self, broken: TransferError) -> None:
        """Continue the archive at the byte where it broke, or raise ``broken``."""
        if isinstance(broken, DeadlineExceededError) or self._resumes_left <= 0 or self._deadline.expired():
            raise broken
        self._resumes_left -= 1
        logger.warning(
            "archive stream broke; asking TikTok for the rest",
            extra={"error_code": broken.error_code, "error_message": broken.message, "offset": self.received},
        )
        self._swap(None)
        response = self._client.request_rest(self._request, self._deadline, self.received, self._length)
        if response is None:
            raise broken
        if self._length is None:
            self._length = _content_range(response)[2]
        self._swap(response)
        self.resumed += 1

    def _swap(self, response: urllib3.BaseHTTPResponse | None) -> None:
        with self._lock:
            self._response.close()
            if response is not None:
                self._response = response

    def _interrupt(self) -> None:
        """The deadline came: stop the read in progress (called on the watchdog's thread)."""
        with self._lock:
            self._timed_out = True
            # Already closed or released: nothing is being read.
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                self._response.shutdown()

    def __enter__(self) -> ArchiveStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._watchdog.cancel()
        with self._lock:
            if self._finished and not self._timed_out:
                self._response.release_conn()
            else:
                self._response.close()


class TikTokClient:
    """Calls TikTok's ``/v2/user/data/download/`` and returns the archive as a stream.

    Args:
        base_url: TikTok's API origin, without a trailing slash.
        pool: the container's shared pool (see :func:`build_pool`).
        connect_timeout: seconds to connect.
        read_timeout: longest silence on the socket, waiting for the answer or inside the body.
        max_attempts: tries of a request that fails before its first byte, and of a broken stream.
    """

    def __init__(
        self,
        base_url: str,
        pool: urllib3.PoolManager,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int,
    ) -> None:
        self._url = base_url + DOWNLOAD_PATH
        self._check_url = base_url + CHECK_PATH
        self._pool = pool
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self.max_attempts = max_attempts
        # Set once TikTok answers a ranged request with the whole archive: later breaks start over at
        # once instead of asking again.
        self.ranges_ignored = False

    @tracer.capture_method(capture_response=False)
    def open_archive(self, request: DownloadRequest, deadline: Deadline, *, resumes: int) -> ArchiveStream:
        """POST the download request and check that an archive is coming.

        Args:
            request: what to download, with whose token.
            deadline: when every try and wait must have ended.
            resumes: how many times a broken stream may be continued with a ranged request.

        Returns:
            an :class:`ArchiveStream` positioned at the archive's first byte.

        Raises:
            TikTokApiError: TikTok's JSON error (whatever the HTTP status, 200 included), after the
                retries a 429 or 5xx gets.
            UpstreamUnavailableError: no connection, timeout before the answer, or a non-JSON 5xx.
            UpstreamBadResponseError: an answer that is neither a zip nor a TikTok error.
            DeadlineExceededError: no time was left to ask.
        """
        deadline.check("before TikTok was called")
        response = self._post(request, deadline)
        try:
            signature = response.read(SIGNATURE_LENGTH, decode_content=False)
            if response.status == 200 and signature in ZIP_SIGNATURES:
                return ArchiveStream(self, request, deadline, response, signature, resumes)
            rest = response.read(MAX_ERROR_BODY_BYTES, decode_content=False)
        except (HTTPError, OSError) as error:
            response.close()
            raise UpstreamStreamBrokenError(
                f"TikTok's answer broke before it could be read: {type(error).__name__}",
                upstream_status=response.status,
            ) from None
        response.close()
        raise _failure(response, signature + rest)

    def request_rest(
        self, request: DownloadRequest, deadline: Deadline, offset: int, length: int | None
    ) -> urllib3.BaseHTTPResponse | None:
        """Ask for the archive from byte ``offset`` on.

        Returns:
            the 206 answer whose ``Content-Range`` starts at ``offset`` (and agrees with ``length`` when
            known), or None when the download has to start over: TikTok ignored the range (now or
            before, in this container) or answered another one.

        Raises:
            TransferError: TikTok refused, or could not be reached (after the retries of any request).
        """
        if self.ranges_ignored:
            return None
        response = self._post(request, deadline, {"Range": f"bytes={offset}-"})
        if response.status == 206:
            start, end, total = _content_range(response)
            if start == offset and (total is None or end == total - 1) and length in (None, total):
                return response
            logger.warning(
                "TikTok answered a range other than the one asked for; the download starts over",
                extra={"offset": offset, "content_range": response.headers.get("Content-Range", "")[:80]},
            )
        elif response.status == 200:
            self.ranges_ignored = True
            logger.info("TikTok does not resume downloads (Range ignored); the download starts over")
        else:
            body = response.read(MAX_ERROR_BODY_BYTES, decode_content=False)
            response.close()
            raise _failure(response, body)
        response.close()
        return None

    @tracer.capture_method(capture_response=False)
    def check_request(self, request: DownloadRequest, deadline: Deadline) -> str:
        """Ask TikTok's Check Status endpoint about ``request`` with its token: whose is it, how is it.

        Returns:
            TikTok's status of the request (``pending``, ``downloading``, ``expired``, ``cancelled``):
            the token's user owns it.

        Raises:
            TikTokApiError: TikTok refused (``invalid_params`` for a request of another user, a bad
                token, a missing scope, a rate limit …).
            UpstreamUnavailableError: TikTok could not be reached.
            UpstreamBadResponseError: the answer is not TikTok's JSON.
        """
        deadline.check("before TikTok was asked who owns the request")
        response = self._post(request, deadline, url=self._check_url)
        try:
            body = response.read(MAX_ERROR_BODY_BYTES, decode_content=True)
        except (HTTPError, OSError) as error:
            raise UpstreamUnavailableError(
                f"TikTok's status answer broke: {type(error).__name__}", upstream_status=response.status
            ) from None
        finally:
            response.close()
        document = _json_object(body)
        outcome = document.get("error") if document else None
        data = document.get("data") if document else None
        if (
            response.status == 200
            and isinstance(outcome, dict)
            and outcome.get("code") == "ok"
            and isinstance(data, dict)
            and isinstance(data.get("status"), str)
        ):
            return str(data["status"])[:40]
        raise _failure(response, body)

    def _post(
        self,
        request: DownloadRequest,
        deadline: Deadline,
        extra_headers: dict[str, str] | None = None,
        url: str | None = None,
    ) -> urllib3.BaseHTTPResponse:
        body = json.dumps({"request_id": request.request_id}).encode()
        headers = {
            "Authorization": f"Bearer {request.access_token}",
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
            **(extra_headers or {}),
        }
        try:
            return self._pool.request(
                "POST",
                url or self._url,
                body=body,
                headers=headers,
                preload_content=False,
                redirect=False,
                retries=BudgetedRetry.for_attempts(self.max_attempts, deadline),
                timeout=urllib3.Timeout(
                    connect=deadline.bound(self._connect_timeout), read=deadline.bound(self._read_timeout)
                ),
            )
        except MaxRetryError as error:
            raise _unavailable(error.reason) from None
        except (HTTPError, OSError) as error:
            raise _unavailable(error) from None


def _content_length(response: urllib3.BaseHTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _content_range(response: urllib3.BaseHTTPResponse) -> tuple[int, int, int | None]:
    """``(first, last, total)`` of a ``Content-Range: bytes first-last/total`` (total None for ``*``)."""
    match = _CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
    if match is None:
        return -1, -1, None
    total = match.group(3)
    return int(match.group(1)), int(match.group(2)), None if total == "*" else int(total)


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
