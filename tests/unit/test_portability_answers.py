"""How TikTok's Check Status answers are read: only an answer about the very request asked confirms it."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from urllib3 import HTTPResponse

from tests.harness.tokens import CHECK_STATUS_EXAMPLE, access_token, open_id, refresh_token
from tiktok_archive.adapters.tiktok.budget import AttemptBudget
from tiktok_archive.adapters.tiktok.oauth import _grant
from tiktok_archive.adapters.tiktok.portability import PortabilityEndpoints
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.tiktok_errors import TikTokApiError

ASKED = 7234567890123456789


class CannedTransport:
    """Answers every POST with one canned TikTok document."""

    def __init__(self, status: int, document: dict[str, Any]) -> None:
        self._status, self._body = status, json.dumps(document).encode()

    def post(self, path: str, budget: AttemptBudget, **_: Any) -> HTTPResponse:
        budget.take()
        return HTTPResponse(
            body=io.BytesIO(self._body), status=self._status, preload_content=False, headers={}
        )


def check(status: int, document: dict[str, Any]) -> Any:
    endpoints = PortabilityEndpoints(CannedTransport(status, document))  # type: ignore[arg-type]
    return endpoints.check(DownloadRequest(ASKED, CHECK_STATUS_EXAMPLE), AttemptBudget(1, Deadline.after(30)))


def ok(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "data": data,
        "error": {"code": "ok", "message": "", "log_id": "20240125230933D4C4606E87F0A61BE502"},
    }


@pytest.mark.parametrize("request_id", [ASKED, str(ASKED)])
def test_an_answer_about_the_request_asked_confirms_it(request_id: object) -> None:
    status = check(200, ok({"request_id": request_id, "status": "downloading", "apply_time": 1700000000}))
    assert (status.request_id, status.status, status.apply_time) == (ASKED, "downloading", 1700000000)


@pytest.mark.parametrize(
    "data",
    [
        {"request_id": ASKED + 1, "status": "downloading"},  # another request
        {"status": "downloading"},  # no request named
        {"request_id": float(ASKED), "status": "downloading"},  # rounded through a double
        {"request_id": ASKED},  # no status
        {},
    ],
)
def test_an_ok_answer_that_does_not_name_the_request_confirms_nothing(data: dict[str, Any]) -> None:
    assert check(200, ok(data)) is None


def test_an_error_answer_keeps_tiktoks_code_and_log_id_even_with_200() -> None:
    document = {"data": {}, "error": {"code": "access_token_invalid", "message": "m", "log_id": "L1"}}
    with pytest.raises(TikTokApiError) as raised:
        check(200, document)
    assert (raised.value.error_code, raised.value.status, raised.value.log_id) == (
        "access_token_invalid",
        401,
        "L1",
    )


OPEN_ID = open_id()


# -- OAuth refresh answers --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (OPEN_ID, OPEN_ID),
        ("x" * 256, "x" * 256),
        ("x" * 257, None),  # not an open_id: dropped, not cut to a prefix that names nobody
        ("has space", None),
        (12345, None),
    ],
    ids=["tiktoks", "256 characters", "257 characters", "a space", "a number"],  # the same in every -n worker
)
def test_a_refresh_answer_keeps_tiktoks_open_id_only_when_it_is_one(given: object, kept: str | None) -> None:
    answer = {
        "access_token": access_token(),
        "expires_in": 7200,
        "refresh_token": refresh_token(),
        "refresh_expires_in": 15552000,
        "open_id": given,
        "scope": "user.info.basic,portability.all.single",
        "token_type": "Bearer",
    }
    grant = _grant(answer)
    assert grant is not None
    assert grant.open_id == kept
