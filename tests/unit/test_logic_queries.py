"""RecordQueries with in-memory collaborators: a caller reads its own records, and only those, asking TikTok
nothing."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pytest

from tests.conftest import BACKEND_CALLER, OTHER_CALLER
from tests.unit.fakes import Clock, FakeDownloadRecords, FakeTransfer, Journal
from tiktok_archive.logic.queries import RecordQueries
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus
from tiktok_archive.models.errors import DownloadNotFoundError, InvalidRequestError

REQUEST_ID = 7_234_567_890_123_456_789
OPENID = "openid-1"
LINK = f"https://archive-bucket.example/archives/{REQUEST_ID}.zip"


@dataclass
class World:
    clock: Clock
    journal: Journal
    records: FakeDownloadRecords
    transfer: FakeTransfer
    queries: RecordQueries

    def given_record(
        self,
        request_id: int = REQUEST_ID,
        status: DownloadStatus = DownloadStatus.WAITING,
        *,
        caller: str | None = BACKEND_CALLER,
        user: str | None = OPENID,
    ) -> DownloadRecord:
        now = self.clock.now()
        record = DownloadRecord(request_id, status, now, now, 1, caller=caller, user_openid=user)
        self.records.items[request_id] = record
        return record

    def given_requests(self, count: int, caller: str = BACKEND_CALLER) -> list[int]:
        """``count`` requests of the user, one a minute (two in the same second each time): newest last."""
        made = []
        for n in range(count):
            request_id = REQUEST_ID - 1000 * n if caller == BACKEND_CALLER else REQUEST_ID - 1000 * n - 1
            self.given_record(request_id, caller=caller)
            made.append(request_id)
            if n % 2:
                self.clock.advance(60)
        return made


@pytest.fixture
def world() -> World:
    clock = Clock()
    journal = Journal()
    records = FakeDownloadRecords(clock, journal)
    transfer = FakeTransfer(journal)
    return World(clock, journal, records, transfer, RecordQueries(records, transfer))


# -- GET /downloads/{request_id} --------------------------------------------------------------------
@pytest.mark.parametrize("state", list(DownloadStatus))
def test_a_caller_reads_its_record_with_a_link_only_once_stored(world: World, state: DownloadStatus) -> None:
    # Given the caller's record in any state
    record = world.given_record(status=state)

    # When it reads it
    answer = world.queries.describe(BACKEND_CALLER, REQUEST_ID)

    # Then it gets the record as stored — read once, nothing else asked — and a fresh link only when the
    # archive is stored
    assert answer.record == record
    assert world.journal.calls == ["records.get"]
    if state is DownloadStatus.COMPLETED:
        assert answer.url == LINK
        assert answer.expires_at is not None
    else:
        assert (answer.url, answer.expires_at) == (None, None)
        assert "url" not in answer.to_body()


@pytest.mark.parametrize(
    "owner",
    [OTHER_CALLER, None],
    ids=["another-caller", "a-backends-queue-message"],
)
def test_a_record_of_someone_else_reads_like_an_unknown_one(world: World, owner: str | None) -> None:
    world.given_record(status=DownloadStatus.COMPLETED, caller=owner)

    with pytest.raises(DownloadNotFoundError) as raised:
        world.queries.describe(BACKEND_CALLER, REQUEST_ID)
    with pytest.raises(DownloadNotFoundError) as unknown:
        world.queries.describe(BACKEND_CALLER, REQUEST_ID + 1)

    # The same answer as for an id nobody knows: no link, nothing signed
    assert (raised.value.status, raised.value.message) == (unknown.value.status, unknown.value.message)
    assert raised.value.status == 404


# -- GET /users/{open_id}/requests ------------------------------------------------------------------
def test_a_users_requests_come_newest_first_page_by_page(world: World) -> None:
    # Given five requests of the user by the backend, and some of the same user by another caller
    made = world.given_requests(5)
    world.given_requests(3, caller=OTHER_CALLER)
    world.given_record(REQUEST_ID - 7, caller=BACKEND_CALLER, user="openid-2")

    # When the backend follows `next` two at a time
    seen: list[int] = []
    after = None
    for _ in range(10):
        page = world.queries.user_requests(BACKEND_CALLER, OPENID, 2, after)
        assert len(page.records) <= 2
        seen += [record.request_id for record in page.records]
        after = page.next
        if after is None:
            break

    # Then it saw each of its own requests of that user once, newest first, and nothing else
    assert seen == sorted(made, key=lambda i: (world.records.items[i].created_at, i), reverse=True)
    assert after is None


def test_a_page_body_lists_the_records_without_links(world: World) -> None:
    world.given_record(status=DownloadStatus.COMPLETED)

    body = world.queries.user_requests(BACKEND_CALLER, OPENID, 20, None).to_body()

    assert body["open_id"] == OPENID
    assert [item["request_id"] for item in body["requests"]] == [str(REQUEST_ID)]
    assert "url" not in body["requests"][0]
    assert body["next"] is None


@pytest.mark.parametrize("caller", [OTHER_CALLER, BACKEND_CALLER])
def test_an_unknown_user_or_another_callers_user_is_an_empty_list(world: World, caller: str) -> None:
    world.given_requests(3, caller=OTHER_CALLER if caller == BACKEND_CALLER else BACKEND_CALLER)

    page = world.queries.user_requests(caller, OPENID, 20, None)

    assert (page.records, page.next) == ([], None)


def test_a_next_token_from_another_callers_list_shows_nothing_of_theirs(world: World) -> None:
    # Given both callers' requests of the user, and a `next` the other caller was given
    world.given_requests(4)
    world.given_requests(4, caller=OTHER_CALLER)
    theirs = world.queries.user_requests(OTHER_CALLER, OPENID, 1, None).next

    # When the backend uses it
    page = world.queries.user_requests(BACKEND_CALLER, OPENID, 20, theirs)

    # Then the page is the backend's own records only
    assert page.records
    assert {record.caller for record in page.records} == {BACKEND_CALLER}


@pytest.mark.parametrize(
    "forged",
    [
        "x",
        base64.urlsafe_b64encode(b"2026-03-01T12:00:00Z").decode(),
        base64.urlsafe_b64encode(b"yesterday/5").decode(),
        base64.urlsafe_b64encode(b"2026-03-01T12:00:00Z/5 OR 1=1").decode(),
    ],
)
def test_a_forged_next_is_400_and_reads_nothing(world: World, forged: str) -> None:
    world.given_requests(3)

    with pytest.raises(InvalidRequestError) as raised:
        world.queries.user_requests(BACKEND_CALLER, OPENID, 20, forged)

    assert raised.value.status == 400
    assert "records.page_of" not in world.journal.calls


def test_a_page_the_table_cut_at_its_last_record_leads_to_an_empty_last_page(world: World) -> None:
    # Given exactly one full page (DynamoDB answers a position whenever the Limit stopped it)
    world.given_requests(2)

    first = world.queries.user_requests(BACKEND_CALLER, OPENID, 2, None)
    last = world.queries.user_requests(BACKEND_CALLER, OPENID, 2, first.next)

    assert len(first.records) == 2
    assert (last.records, last.next) == ([], None)
