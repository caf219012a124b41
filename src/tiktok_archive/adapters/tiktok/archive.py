"""The download endpoint: TikTok's archive as a stream that repairs its own breaks.

The archive body is read with ``HTTPResponse.read(n)`` only — never mixed with ``stream()``, whose
chunked-transfer framing state is separate — and raw (``decode_content=False``: we send
``Accept-Encoding: identity``, so the raw bytes are the archive). A part is filled in place, a bounded
piece at a time: reading a whole part in one ``read`` would make http.client join a chunked body's
pieces into a second copy of the part.

Failures, and what each one costs — one request of the download's :class:`AttemptBudget` each, and
every wait drawn on its deadline:

- before the first byte (no connection, reset before the headers, 429, 500/502/503/504): urllib3 tries
  the request again (:class:`BudgetedRetry`: exponential backoff with full jitter, ``Retry-After``
  honoured up to a cap);
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
import re
import threading
from http.client import IncompleteRead
from types import TracebackType

import urllib3
from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError

from tiktok_archive.adapters.tiktok.budget import AttemptBudget
from tiktok_archive.adapters.tiktok.transport import MAX_DOCUMENT_BYTES, Transport, tiktok_failure
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.errors import DeadlineExceededError, ServiceError
from tiktok_archive.models.tiktok_errors import ArchiveTruncatedError, UpstreamStreamBrokenError
from tiktok_archive.models.tiktok_quota import Endpoint
from tiktok_archive.models.zip_tail import ZipTail
from tiktok_archive.observability import logger, tracer

DOWNLOAD_PATH = "/v2/user/data/download/"
# Largest single read from the socket while filling a part: the transient copy it costs.
READ_PIECE_BYTES = 1024 * 1024
# A zip archive starts with a local file header; an archive with no entries is only its end record.
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
SIGNATURE_LENGTH = 4
_CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+|\*)")


class DownloadEndpoint:
    """``POST /v2/user/data/download/``: opens archives and asks for their rest after a break.

    It remembers, for the container's life, whether TikTok ignores ``Range`` (as its documentation
    suggests): once it does, later breaks start over at once instead of asking again.
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self.ranges_ignored = False

    @tracer.capture_method(capture_response=False)
    def open(self, request: DownloadRequest, budget: AttemptBudget) -> ArchiveStream:
        """POST the download request and check that an archive is coming.

        Returns:
            an :class:`ArchiveStream` positioned at the archive's first byte.

        Raises:
            TikTokApiError: TikTok's JSON error (whatever the HTTP status, 200 included), after the
                retries a 429 or 5xx gets.
            UpstreamUnavailableError: no connection, timeout before the answer, or a non-JSON 5xx.
            UpstreamBadResponseError: an answer that is neither a zip nor a TikTok error.
            UpstreamStreamBrokenError: the answer broke before its first bytes were read.
            DeadlineExceededError: no time was left to ask.
        """
        response = self._post(request, budget)
        try:
            signature = response.read(SIGNATURE_LENGTH, decode_content=False)
            if response.status == 200 and signature in ZIP_SIGNATURES:
                return ArchiveStream(self, request, budget, response, signature)
            rest = response.read(MAX_DOCUMENT_BYTES, decode_content=False)
        except (HTTPError, OSError) as error:
            response.close()
            raise UpstreamStreamBrokenError(
                f"TikTok's answer broke before it could be read: {type(error).__name__}",
                upstream_status=response.status,
            ) from None
        response.close()
        raise tiktok_failure(response, signature + rest)

    def rest(
        self, request: DownloadRequest, budget: AttemptBudget, offset: int, length: int | None
    ) -> urllib3.BaseHTTPResponse | None:
        """Ask for the archive from byte ``offset`` on.

        Returns:
            the 206 answer whose ``Content-Range`` starts at ``offset`` (and agrees with ``length`` when
            known), or None when the download has to start over: TikTok ignored the range (now or
            before, in this container) or answered another one.

        Raises:
            ServiceError: TikTok refused, or could not be reached (after the retries of any request).
        """
        if self.ranges_ignored:
            return None
        response = self._post(request, budget, {"Range": f"bytes={offset}-"})
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
            body = response.read(MAX_DOCUMENT_BYTES, decode_content=False)
            response.close()
            raise tiktok_failure(response, body)
        response.close()
        return None

    def _post(
        self, request: DownloadRequest, budget: AttemptBudget, headers: dict[str, str] | None = None
    ) -> urllib3.BaseHTTPResponse:
        return self._transport.post(
            DOWNLOAD_PATH,
            budget,
            endpoint=Endpoint.DOWNLOAD,
            token=request.access_token,
            json_body={"request_id": request.request_id},
            headers=headers,
        )


class ArchiveStream:
    """An open archive download whose first bytes were checked to be a zip.

    ``readinto(buffer)`` fills the caller's buffer, completely except at the end of the archive. A break
    is repaired in place by a ranged request, paid from the download's budget, when TikTok supports one,
    so the caller never sees it. Beyond the caller's buffer it holds at most one ``READ_PIECE_BYTES``
    piece and the archive's last bytes (:class:`ZipTail`). Use it as a context manager: the connection
    goes back to the pool only when the body was read to its end, and is discarded otherwise.
    """

    def __init__(
        self,
        endpoint: DownloadEndpoint,
        request: DownloadRequest,
        budget: AttemptBudget,
        response: urllib3.BaseHTTPResponse,
        signature: bytes,
    ) -> None:
        self._endpoint = endpoint
        self._request = request
        self._budget = budget
        self._deadline = budget.deadline
        self._response = response
        self._pending = signature
        self.tail = ZipTail()
        self.tail.feed(signature)
        self._length = _content_length(response)
        self.resumed = 0
        self._finished = False
        self._lock = threading.Lock()
        self._timed_out = False
        self._watchdog = threading.Timer(max(0.0, self._deadline.remaining()), self._interrupt)
        self._watchdog.daemon = True
        self._watchdog.start()

    @property
    def received(self) -> int:
        """Archive bytes received so far."""
        return self.tail.size

    def readinto(self, part: bytearray) -> int:
        """Fill ``part`` with the next bytes of the archive; fewer only at its end, 0 after it.

        Raises:
            UpstreamStreamBrokenError: the connection broke or stalled past the read timeout, and could
                not be resumed (``ArchiveTruncatedError`` when it ended before its length or final chunk).
            ArchiveInvalidError: the body ended without the end records of a whole zip archive.
            DeadlineExceededError: the invocation's deadline came first.
            ServiceError: a resumption was refused by TikTok.
        """
        size = len(part)
        view = memoryview(part)
        filled = len(self._pending)
        view[:filled] = self._pending
        self._pending = b""
        while filled < size:
            piece = self._read_piece(min(READ_PIECE_BYTES, size - filled))
            if not piece:
                self.tail.verify()
                self._finished = True
                break
            view[filled : filled + len(piece)] = piece
            filled += len(piece)
            self.tail.feed(piece)
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

    def _broken(self, error: Exception) -> ServiceError:
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

    def _resume_after(self, broken: ServiceError) -> None:
        """Continue the archive at the byte where it broke, or raise ``broken``."""
        if isinstance(broken, DeadlineExceededError) or self._budget.left <= 0 or self._deadline.expired():
            raise broken
        logger.warning(
            "archive stream broke; asking TikTok for the rest",
            extra={"error_code": broken.error_code, "error_message": broken.message, "offset": self.received},
        )
        self._swap(None)
        response = self._endpoint.rest(self._request, self._budget, self.received, self._length)
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
