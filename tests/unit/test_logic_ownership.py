"""Ownership before anything else: TikTok's word, asked with the caller's token, and whose a record is."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import BACKEND_CALLER, OTHER_CALLER, LogCapture
from tests.unit.fakes import FakeTikTok, Journal
from tiktok_archive.logic.ownership import (
    NOT_FOUND_MESSAGE,
    NOT_READY_RETRY_AFTER_SECONDS,
    confirm_owner,
    logged_as,
    require_ready,
)
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus, Owner
from tiktok_archive.models.errors import (
    ArchiveNotReadyError,
    DownloadNotFoundError,
    RequestCancelledError,
    RequestExpiredError,
    ServiceError,
)
from tiktok_archive.models.portability import RequestStatus
from tiktok_archive.models.tiktok_errors import TikTokApiError
from tiktok_archive.observability import logger

REQUEST_ID = 7_234_567_890_123_456_789
CALLER = DownloadRequest(REQUEST_ID, "access-caller")


@pytest.fixture
def tiktok() -> FakeTikTok:
    return FakeTikTok(Journal())


def test_the_owners_status_comes_back_asked_with_the_callers_token(tiktok: FakeTikTok) -> None:
    tiktok.checks.then(RequestStatus(REQUEST_ID, "pending"))

    assert confirm_owner(tiktok, CALLER, Deadline.after(10)).status == "pending"
    assert tiktok.checks.calls == [(REQUEST_ID, "access-caller")]


@pytest.mark.parametrize(
    "answer",
    [
        TikTokApiError("invalid_params", "not yours", log_id="LOG1", upstream_status=400),
        None,  # TikTok answered ok without naming this request
    ],
    ids=["invalid_params", "ok-about-another-request"],
)
def test_a_request_tiktok_does_not_confirm_is_answered_like_an_unknown_one(
    tiktok: FakeTikTok, answer: TikTokApiError | None
) -> None:
    # Given TikTok not confirming the caller's user as the owner; When asked; Then the same 404 as
    # for an unknown request (no oracle: neither TikTok's code nor its log_id shows)
    tiktok.checks.then(answer)
    with pytest.raises(DownloadNotFoundError) as raised:
        confirm_owner(tiktok, CALLER, Deadline.after(10))
    assert (raised.value.message, raised.value.log_id, raised.value.status) == (NOT_FOUND_MESSAGE, None, 404)


@pytest.mark.parametrize(
    ("code", "status"),
    [("access_token_invalid", 401), ("scope_not_authorized", 401), ("rate_limit_exceeded", 429)],
)
def test_other_refusals_keep_tiktoks_code_status_and_log_id(
    tiktok: FakeTikTok, code: str, status: int
) -> None:
    tiktok.checks.then(TikTokApiError(code, "refused", log_id="LOG2", upstream_status=status))

    with pytest.raises(TikTokApiError) as raised:
        confirm_owner(tiktok, CALLER, Deadline.after(10))

    assert (raised.value.error_code, raised.value.status, raised.value.log_id) == (code, status, "LOG2")


def test_a_pending_archive_is_not_ready_and_worth_asking_again_later() -> None:
    with pytest.raises(ArchiveNotReadyError) as raised:
        require_ready(RequestStatus(REQUEST_ID, "pending"))
    assert raised.value.is_transient
    assert raised.value.retry_after == str(NOT_READY_RETRY_AFTER_SECONDS)


@pytest.mark.parametrize(
    ("status", "error"), [("expired", RequestExpiredError), ("cancelled", RequestCancelledError)]
)
def test_an_ended_request_is_refused_for_good(status: str, error: type[ServiceError]) -> None:
    with pytest.raises(error) as raised:
        require_ready(RequestStatus(REQUEST_ID, status))
    assert raised.value.status == 410
    assert not raised.value.is_transient


def test_a_ready_archive_may_be_downloaded() -> None:
    require_ready(RequestStatus(REQUEST_ID, "downloading"))  # raises nothing


def test_every_log_record_while_handling_a_request_carries_its_id_and_only_then(logs: LogCapture) -> None:
    # When the service logs inside the handling of a request that fails, and after it
    def handle() -> None:
        with logged_as(REQUEST_ID):
            logger.info("inside")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        handle()
    logger.info("after")

    # Then only the record inside carries the id (as a decimal string)
    ids = {record["message"]: record.get("request_id") for record in logs.records()}
    assert ids == {"inside": str(REQUEST_ID), "after": None}


# -- whose a record is ------------------------------------------------------------------------------
def _record_of(caller: str | None) -> DownloadRecord:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    return DownloadRecord(REQUEST_ID, DownloadStatus.QUEUED, at, at, 0, caller=caller)


@pytest.mark.parametrize(
    ("owner", "records_it_may_act_on"),
    [
        (Owner(BACKEND_CALLER), {BACKEND_CALLER}),  # an API caller: its own records only
        (Owner(None), {None}),  # a backend's queue message: only records no API caller made
        (Owner(None, service=True), {BACKEND_CALLER, OTHER_CALLER, None}),  # a job the service queued
    ],
    ids=["api-caller", "queue-message", "service-job"],
)
def test_each_owner_acts_only_on_the_records_that_are_its_own(
    owner: Owner, records_it_may_act_on: set[str | None]
) -> None:
    for caller in (BACKEND_CALLER, OTHER_CALLER, None):
        assert owner.may_act_on(_record_of(caller)) is (caller in records_it_may_act_on), caller
