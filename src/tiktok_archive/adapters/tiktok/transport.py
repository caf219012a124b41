"""The one way the service talks to TikTok: a POST on the container's shared urllib3 pool.

Each request draws on its operation's :class:`AttemptBudget` and on its endpoint's share of TikTok's
quota (the first try here, the retries in :class:`BudgetedRetry`), and its connect and read timeouts
are shortened to the deadline. Answers that are not what the operation wanted are turned into the one
error that says what happened (:func:`tiktok_failure`), keeping TikTok's code, status and ``log_id``.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError

from tiktok_archive.adapters.tiktok.budget import AttemptBudget, BudgetedRetry
from tiktok_archive.models.errors import DeadlineExceededError, ServiceError
from tiktok_archive.models.tiktok_errors import (
    TikTokApiError,
    UpstreamBadResponseError,
    UpstreamUnavailableError,
)
from tiktok_archive.models.tiktok_quota import Endpoint

# An answer document is small; more than this is not one, and we stop reading.
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 500
_RETRY_AFTER = re.compile(r"[0-9]{1,7}|[A-Za-z0-9 ,:\-]{1,40}")
LOG_ID = re.compile(r"[A-Za-z0-9\-_.]{1,128}")
# A TikTok error code worth passing on as one: a word (what TikTok documents); anything else is a bad answer.
ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


def build_pool() -> urllib3.PoolManager:
    """The container's connection pool to TikTok; timeouts and retries are set per request."""
    return urllib3.PoolManager(num_pools=4, maxsize=4, retries=False)


class Transport:
    """POSTs to one TikTok origin.

    Args:
        base_url: TikTok's API origin, without a trailing slash.
        pool: the container's shared pool (see :func:`build_pool`).
        connect_timeout: seconds to connect.
        read_timeout: longest silence on the socket, waiting for the answer or inside a body.
    """

    def __init__(
        self, base_url: str, pool: urllib3.PoolManager, *, connect_timeout: float, read_timeout: float
    ) -> None:
        self.base_url = base_url
        self._pool = pool
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout

    def post(
        self,
        path: str,
        budget: AttemptBudget,
        *,
        endpoint: Endpoint,
        token: str | None = None,
        json_body: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool = True,
    ) -> urllib3.BaseHTTPResponse:
        """POST ``path`` (with its query) and return the answer unread (``preload_content=False``).

        Every try draws from ``endpoint``'s share of TikTok's quota (see :class:`AttemptBudget`).

        Raises:
            DeadlineExceededError: no time was left to ask.
            TikTokBudgetExhaustedError: the quota had no call left for this unit; TikTok was not called
                (or a retry was not made).
            UpstreamUnavailableError: no connection or no answer in time, after the retries (or the
                budget had no request left).
        """
        if budget.deadline.expired():
            raise DeadlineExceededError("the invocation's time budget ran out before TikTok was called")
        if not budget.take(endpoint):
            raise UpstreamUnavailableError("no attempt was left to call TikTok")
        all_headers = {"Accept-Encoding": "identity", **(headers or {})}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if form is not None:
            body = urlencode(form).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            body = json.dumps(json_body or {}).encode()
            all_headers["Content-Type"] = "application/json"
        deadline = budget.deadline
        try:
            return self._pool.request(
                "POST",
                self.base_url + path,
                body=body,
                headers=all_headers,
                preload_content=False,
                redirect=False,
                retries=BudgetedRetry.drawing_on(budget, endpoint=endpoint, idempotent=idempotent),
                timeout=urllib3.Timeout(
                    connect=deadline.bound(self._connect_timeout), read=deadline.bound(self._read_timeout)
                ),
            )
        except MaxRetryError as error:
            raise unavailable(error.reason) from None
        except (HTTPError, OSError) as error:
            raise unavailable(error) from None


def read_document(response: urllib3.BaseHTTPResponse) -> tuple[bytes, dict[str, Any] | None]:
    """The answer's body (at most :data:`MAX_DOCUMENT_BYTES`) and its JSON object, if it is one.

    The response is closed afterwards.

    Raises:
        UpstreamUnavailableError: the answer broke while it was read.
    """
    try:
        body = response.read(MAX_DOCUMENT_BYTES, decode_content=True)
    except (HTTPError, OSError) as error:
        raise UpstreamUnavailableError(
            f"TikTok's answer broke while it was read: {type(error).__name__}",
            upstream_status=response.status,
        ) from None
    finally:
        response.close()
    return body, json_object(body)


def succeeded(response: urllib3.BaseHTTPResponse, document: dict[str, Any] | None) -> bool:
    """Whether a portability answer says ``ok``: HTTP 200 and ``error.code == "ok"``."""
    outcome = document.get("error") if document else None
    return response.status == 200 and isinstance(outcome, dict) and outcome.get("code") == "ok"


def unavailable(error: BaseException | None) -> UpstreamUnavailableError:
    """The error for TikTok not answering: a timeout, or no connection."""
    if isinstance(error, Urllib3TimeoutError):
        return UpstreamUnavailableError("TikTok did not answer before the timeout")
    return UpstreamUnavailableError(
        f"TikTok could not be reached: {type(error).__name__ if error else 'unknown error'}"
    )


def tiktok_failure(response: urllib3.BaseHTTPResponse, body: bytes) -> ServiceError:
    """Turn an answer that is not what was asked for into the one error that says what happened.

    TikTok's error document (``{"error": {"code", "message", "log_id"}}``, any HTTP status, 200
    included) keeps TikTok's code and ``log_id``; a 429 without one is a rate limit; a 5xx without one
    is TikTok unavailable; anything else (HTML, empty, not JSON) is a bad response.
    """
    status = response.status
    retry_after = header(response, "Retry-After", _RETRY_AFTER)
    header_log_id = header(response, "X-Tt-Logid", LOG_ID)
    document = json_object(body)
    error = document.get("error") if document else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(error, dict) and isinstance(code, str) and ERROR_CODE.fullmatch(code) and code != "ok":
        log_id = error.get("log_id")
        return TikTokApiError(
            code,
            str(error.get("message") or "TikTok refused the request")[:MAX_MESSAGE_CHARS],
            log_id=log_id if isinstance(log_id, str) and LOG_ID.fullmatch(log_id) else header_log_id,
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
        what = "a JSON document that is not the answer asked for"
    else:
        content_type = (response.headers.get("Content-Type") or "unknown").split(";")[0][:60]
        what = f"a body that is neither an archive nor JSON (Content-Type {content_type})"
    return UpstreamBadResponseError(
        f"TikTok answered HTTP {status} with {what}", log_id=header_log_id, upstream_status=status
    )


def json_object(body: bytes) -> dict[str, Any] | None:
    """``body`` as a JSON object, or None (not JSON, not an object, or nested beyond reason)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def header(response: urllib3.BaseHTTPResponse, name: str, pattern: re.Pattern[str]) -> str | None:
    """A header's value when it has the expected shape, else None."""
    value = (response.headers.get(name) or "").strip()
    return value if pattern.fullmatch(value) else None
