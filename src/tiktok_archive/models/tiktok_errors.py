"""TikTok's errors: its JSON error answers, and the archive stream's failures.

Part of the one taxonomy (:class:`~tiktok_archive.models.errors.ServiceError`): each error fixes the
status the API answers with and whether trying again may succeed. TikTok's own codes pass through
unchanged; the stream's failures are transient (a broken stream is resumed or fetched again while the
unit's budget lasts, and reported only when that did not succeed).
"""

from __future__ import annotations

from tiktok_archive.models.errors import ServiceError

# TikTok's documented error codes and the status our API answers each with.
_TIKTOK_CODE_STATUS: dict[str, tuple[int, bool]] = {
    "invalid_params": (400, False),
    "scope_permission_missed": (400, False),
    "access_token_invalid": (401, False),
    "scope_not_authorized": (401, False),
    "rate_limit_exceeded": (429, True),
    "internal_error": (502, True),
}


class TikTokApiError(ServiceError):
    """TikTok answered with its JSON error document; its code is passed through unchanged.

    Known codes map to a fixed status (see ``_TIKTOK_CODE_STATUS``). An unknown code is judged by the
    status TikTok sent it with: 429 and 5xx are transient (answered 429 / 502), 401 and 403 keep their
    status, any other status is a permanent 400-class failure reported as 400 — except a 2xx status,
    which cannot be judged and is answered 502 and treated as transient.
    """

    def __init__(
        self,
        tiktok_code: str,
        message: str,
        *,
        log_id: str | None,
        upstream_status: int,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message, log_id=log_id, upstream_status=upstream_status, retry_after=retry_after)
        self.tiktok_code = tiktok_code
        known = _TIKTOK_CODE_STATUS.get(tiktok_code)
        if known is not None:
            self._status, self._transient = known
        elif upstream_status == 429:
            self._status, self._transient = 429, True
        elif upstream_status >= 500 or upstream_status < 400:
            self._status, self._transient = 502, True
        elif upstream_status in (401, 403):
            self._status, self._transient = upstream_status, False
        else:
            self._status, self._transient = 400, False

    @property
    def error_code(self) -> str:
        return self.tiktok_code

    @property
    def status(self) -> int:
        return self._status

    @property
    def is_transient(self) -> bool:
        return self._transient


class UpstreamUnavailableError(ServiceError):
    """TikTok could not be reached, or did not answer before the connect or read timeout."""

    code = "upstream_unavailable"


class UpstreamStreamBrokenError(ServiceError):
    """The archive stream broke (reset, early end, stall) after TikTok started answering."""

    code = "upstream_stream_broken"


class ArchiveTruncatedError(UpstreamStreamBrokenError):
    """The archive body ended before its ``Content-Length`` or without the final chunk.

    Like any broken stream it is resumed or fetched again while the budget lasts; this is what is
    reported when that did not succeed.
    """

    code = "archive_truncated"


class UpstreamBadResponseError(ServiceError):
    """TikTok answered with neither an archive nor its JSON error.

    For example an HTML page, an empty body, or bytes that are not a zip.
    """

    code = "upstream_bad_response"


class ArchiveInvalidError(ServiceError):
    """The bytes received are not a whole zip archive.

    Its end-of-central-directory record is missing, or disagrees with the number of bytes received. The
    upload was aborted instead of completed.
    """

    code = "archive_invalid"


class TikTokBudgetExhaustedError(ServiceError):
    """The service's own share of TikTok's quota has no call left for this work now; TikTok was not called.

    Not a failure: the work is deferred, and takes no attempt. The API answers 503 with ``Retry-After``
    (when the budget's next sub-window starts); a queued message is sent again with that delay and the
    one received acknowledged, so its receive count does not grow (a status check too: the same check).
    """

    code = "tiktok_budget_exhausted"
    http_status = 503
