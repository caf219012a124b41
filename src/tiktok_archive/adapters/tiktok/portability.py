"""The portability endpoints besides the download: add a request, check its status, cancel it.

Every call carries the user's access token and answers TikTok's usual document
``{"data": {…}, "error": {"code": "ok", …}}``; anything else becomes the error that explains it
(:func:`tiktok_failure`). ``request_id`` is sent as an exact JSON integer.
"""

from __future__ import annotations

from typing import Any

from tiktok_archive.adapters.tiktok.budget import AttemptBudget
from tiktok_archive.adapters.tiktok.transport import (
    Transport,
    read_document,
    succeeded,
    tiktok_failure,
)
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.inputs import INT64_MAX, is_int_in
from tiktok_archive.models.portability import RequestStatus
from tiktok_archive.models.tiktok_errors import UpstreamBadResponseError
from tiktok_archive.models.tiktok_quota import Endpoint
from tiktok_archive.observability import tracer

ADD_PATH = "/v2/user/data/add/?fields=request_id"
CHECK_FIELDS = (
    "request_id",
    "apply_time",
    "collect_time",
    "status",
    "data_format",
    "category_selection_list",
)
CHECK_PATH = "/v2/user/data/check/?fields=" + ",".join(CHECK_FIELDS)
CANCEL_PATH = "/v2/user/data/cancel/"


class PortabilityEndpoints:
    """Add Data Request, Check Status and Cancel, over one :class:`Transport`."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    @tracer.capture_method(capture_response=False)
    def add(self, access_token: str, data_format: str, categories: list[str], budget: AttemptBudget) -> int:
        """Ask TikTok to prepare the user's archive; returns the new ``request_id``.

        Not idempotent (a ``*.single`` scope allows one request): it is only tried again when TikTok
        certainly did not act — a rate limit, or no connection.

        Raises:
            TikTokApiError: TikTok refused (``scope_permission_missed`` once a single scope is used …).
            UpstreamUnavailableError / UpstreamBadResponseError: no usable answer.
        """
        response = self._transport.post(
            ADD_PATH,
            budget,
            endpoint=Endpoint.ADD,
            token=access_token,
            json_body={"data_format": data_format, "category_selection_list": categories},
            idempotent=False,
        )
        body, document = read_document(response)
        if not succeeded(response, document):
            raise tiktok_failure(response, body)
        data = _data(document)
        request_id = _int64(data.get("request_id"))
        if request_id is None:
            raise UpstreamBadResponseError(
                "TikTok accepted the request but answered no valid request_id", upstream_status=200
            )
        return request_id

    @tracer.capture_method(capture_response=False)
    def check(self, request: DownloadRequest, budget: AttemptBudget) -> RequestStatus | None:
        """Ask TikTok, with the request's token, about the request.

        Returns:
            its status when TikTok answered ``ok`` about this very ``request_id`` (the token's user
            owns it); None when TikTok answered ``ok`` without naming it, or naming another one.

        Raises:
            TikTokApiError: TikTok refused (``invalid_params`` for someone else's or an unknown
                request, ``access_token_invalid``, a scope error, a rate limit …).
            UpstreamUnavailableError / UpstreamBadResponseError: no usable answer.
        """
        response = self._transport.post(
            CHECK_PATH,
            budget,
            endpoint=Endpoint.CHECK,
            token=request.access_token,
            json_body={"request_id": request.request_id},
        )
        body, document = read_document(response)
        if not succeeded(response, document):
            raise tiktok_failure(response, body)
        data = _data(document)
        status = data.get("status")
        if _int64(data.get("request_id")) != request.request_id or not isinstance(status, str):
            return None
        categories = data.get("category_selection_list")
        return RequestStatus(
            request_id=request.request_id,
            status=status[:40],
            apply_time=_seconds(data.get("apply_time")),
            collect_time=_seconds(data.get("collect_time")),
            data_format=str(data["data_format"])[:10] if isinstance(data.get("data_format"), str) else None,
            categories=tuple(str(c)[:40] for c in categories[:10] if isinstance(c, str))
            if isinstance(categories, list)
            else (),
        )

    @tracer.capture_method(capture_response=False)
    def cancel(self, request: DownloadRequest, budget: AttemptBudget) -> None:
        """Cancel the request at TikTok.

        The documentation names ``request_id`` both as a body field and as a query parameter; both are
        sent. The answer is the error object alone (``ok`` on success).

        Raises:
            TikTokApiError: TikTok refused.
            UpstreamUnavailableError / UpstreamBadResponseError: no usable answer.
        """
        response = self._transport.post(
            f"{CANCEL_PATH}?request_id={request.request_id}",
            budget,
            endpoint=Endpoint.CANCEL,
            token=request.access_token,
            json_body={"request_id": request.request_id},
        )
        body, document = read_document(response)
        if not succeeded(response, document):
            raise tiktok_failure(response, body)


def _data(document: dict[str, Any] | None) -> dict[str, Any]:
    data = document.get("data") if document else None
    return data if isinstance(data, dict) else {}


def _int64(value: object) -> int | None:
    """An exact positive int64 from a JSON integer or a decimal string (never from a float)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit() and len(value) <= 19:
        value = int(value)
    return value if is_int_in(value, 1, INT64_MAX) else None


def _seconds(value: object) -> int | None:
    """A Unix time in seconds; None for absent, zero or nonsense."""
    return value if is_int_in(value, 1, 2**40 - 1) else None
