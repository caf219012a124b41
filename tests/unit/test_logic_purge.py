"""UserPurge with in-memory collaborators: TikTok's authorization.removed, a caller's erasure, the second
pass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import BACKEND_CALLER, OTHER_CALLER
from tests.unit.fakes import (
    Clock,
    FakeAppCredentials,
    FakeDownloadRecords,
    FakeEvents,
    FakeGrants,
    FakeLifecycleQueue,
    FakeTikTok,
    FakeTransfer,
    FakeVault,
    Journal,
    freeze_time,
)
from tiktok_archive.adapters.grant_items import Grant
from tiktok_archive.adapters.grants import request_grant_id, user_grant_id
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, REFRESH_TOKEN_PURPOSE
from tiktok_archive.logic.purge import SECOND_PASS_AFTER, UserPurge
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus, RecordedError
from tiktok_archive.models.errors import ReauthorizationRequiredError, StorageError
from tiktok_archive.models.messages import EraseUser, PurgeAgain, RevokeAtTikTok
from tiktok_archive.models.portability import TokenGrant
from tiktok_archive.models.tiktok_errors import TikTokApiError

OPENID = "openid-1"
ANOTHER_USER = "openid-2"
GRANT = user_grant_id(BACKEND_CALLER, OPENID)
OTHER_GRANT = user_grant_id(OTHER_CALLER, OPENID)
WAITING_ID = 7_234_567_890_123_450_001
COMPLETED_ID = 7_234_567_890_123_450_002
FAILED_ID = 7_234_567_890_123_450_003
OTHERS_ID = 7_234_567_890_123_450_004
ANOTHER_USERS_ID = 7_234_567_890_123_450_005
OWN_GRANT_ID = 7_234_567_890_123_450_006
LATE_ID = 7_234_567_890_123_450_007
REVOKED = "revoked"


@dataclass
class World:
    clock: Clock
    journal: Journal
    records: FakeDownloadRecords
    grants: FakeGrants
    vault: FakeVault
    tiktok: FakeTikTok
    events: FakeEvents
    queue: FakeLifecycleQueue
    transfer: FakeTransfer
    purge: UserPurge

    def deadline(self) -> Deadline:
        return Deadline.after(60)

    def status(self, request_id: int) -> str:
        return self.records.items[request_id].status.value

    def given_grant(self, grant_id: str, caller: str, user: str | None = OPENID) -> Grant:
        now = self.clock.now()
        binding = {"grant_id": grant_id}
        grant = Grant(
            grant_id=grant_id,
            generation=f"generation-of-{grant_id}",
            sealed_access_token=self.vault.seal(f"access-of-{grant_id}", ACCESS_TOKEN_PURPOSE, binding),
            access_expires_at=now + timedelta(hours=1),
            sealed_refresh_token=self.vault.seal("refresh-stored", REFRESH_TOKEN_PURPOSE, binding),
            refresh_expires_at=now + timedelta(days=100),
            user_openid=user,
            caller=caller,
        )
        self.grants.items[grant_id] = grant
        return grant

    def given_record(
        self,
        request_id: int,
        status: DownloadStatus,
        *,
        caller: str | None = BACKEND_CALLER,
        user: str | None = OPENID,
        grant_id: str | None = GRANT,
        transient_error: bool = False,
    ) -> DownloadRecord:
        now = self.clock.now()
        stored = status is DownloadStatus.COMPLETED
        record = DownloadRecord(
            request_id=request_id,
            status=status,
            created_at=now,
            updated_at=now,
            attempts=1,
            bucket=FakeTransfer.BUCKET if stored else None,
            key=f"archives/{request_id}.zip" if stored else None,
            size_bytes=1024 if stored else None,
            error=RecordedError("upstream_unavailable", "TikTok down", None, transient_error)
            if status is DownloadStatus.FAILED
            else None,
            caller=caller,
            user_openid=user,
            grant_id=grant_id,
        )
        self.records.items[request_id] = record
        return record

    def given_the_users_data(self) -> None:
        """Two callers' records and grants of the user, and one record of another user."""
        self.given_grant(GRANT, BACKEND_CALLER)
        self.given_grant(OTHER_GRANT, OTHER_CALLER)
        self.given_record(WAITING_ID, DownloadStatus.WAITING)
        self.given_record(COMPLETED_ID, DownloadStatus.COMPLETED)
        self.given_record(FAILED_ID, DownloadStatus.FAILED, transient_error=True)
        self.given_record(OTHERS_ID, DownloadStatus.QUEUED, caller=OTHER_CALLER, grant_id=OTHER_GRANT)
        self.given_grant(user_grant_id(BACKEND_CALLER, ANOTHER_USER), BACKEND_CALLER, ANOTHER_USER)
        self.given_record(
            ANOTHER_USERS_ID,
            DownloadStatus.WAITING,
            user=ANOTHER_USER,
            grant_id=user_grant_id(BACKEND_CALLER, ANOTHER_USER),
        )
        self.transfer.open_uploads[WAITING_ID] = 1  # a crashed download left a multipart upload
        self.journal.calls.clear()

    def events_by_caller(self) -> dict[str | None, tuple[str, dict[str, Any]]]:
        return {detail["caller"]: (detail_type, detail) for detail_type, detail in self.events.sent}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    clock = Clock()
    freeze_time(monkeypatch, clock)
    journal = Journal()
    records = FakeDownloadRecords(clock, journal)
    grants = FakeGrants(clock, journal)
    vault = FakeVault(journal)
    tiktok = FakeTikTok(journal)
    events = FakeEvents(journal)
    queue = FakeLifecycleQueue(journal)
    transfer = FakeTransfer(journal)
    app = FakeAppCredentials()
    tokens = TokenService(grants, vault, tiktok, lambda: app)
    purge = UserPurge(records, grants, tokens, transfer, events, queue, tiktok, lambda: app)
    return World(clock, journal, records, grants, vault, tiktok, events, queue, transfer, purge)


def tiktok_error(code: str, http_status: int) -> TikTokApiError:
    return TikTokApiError(code, f"TikTok refused: {code}", log_id="LOG", upstream_status=http_status)


# -- authorization.removed ------------------------------------------------------------------------
def test_a_user_who_disconnected_the_app_loses_every_callers_records_archives_and_grants(
    world: World,
) -> None:
    # Given two callers' records and grants of the user (and another user's)
    world.given_the_users_data()

    # When TikTok says the user removed the app
    purged = world.purge.authorization_removed(OPENID, reason=1)

    # Then every record of the user is a tombstone, its archive deleted and open upload aborted …
    for request_id in (WAITING_ID, COMPLETED_ID, FAILED_ID, OTHERS_ID):
        assert world.status(request_id) == REVOKED
        assert world.records.items[request_id].key is None
    assert sorted(world.transfer.discarded) == sorted([WAITING_ID, COMPLETED_ID, FAILED_ID, OTHERS_ID])
    assert purged.uploads_aborted == 1
    # … a record ended before its archive went (a download finishing meanwhile finds its claim gone)
    assert world.journal.first("records.end") < world.journal.first("transfer.discard")
    # … every caller's grant of the user is gone; the other user's record and grant are untouched
    assert set(world.grants.items) == {user_grant_id(BACKEND_CALLER, ANOTHER_USER)}
    assert world.status(ANOTHER_USERS_ID) == "waiting"
    # … and TikTok was not called (the user's authorization is gone already)
    assert world.tiktok.checks.count + world.tiktok.cancels.count + world.tiktok.revokes.count == 0


def test_a_disconnected_users_purge_runs_again_after_the_index_caught_up(world: World) -> None:
    world.given_the_users_data()
    started = world.clock.now()

    world.purge.authorization_removed(OPENID, reason=1)

    assert world.queue.messages == [(PurgeAgain(OPENID, None, 1, started), SECOND_PASS_AFTER)]
    assert SECOND_PASS_AFTER == 900


def test_each_caller_learns_which_of_its_requests_a_disconnect_revoked(world: World) -> None:
    world.given_the_users_data()

    world.purge.authorization_removed(OPENID, reason=1)

    by_caller = world.events_by_caller()
    assert set(by_caller) == {BACKEND_CALLER, OTHER_CALLER}
    detail_type, backend = by_caller[BACKEND_CALLER]
    assert detail_type == "Authorization Removed"
    assert backend["open_id"] == OPENID
    assert backend["reason"] == 1
    assert backend["requests_revoked"] == 3
    assert sorted(backend["request_ids"]) == sorted(str(i) for i in (WAITING_ID, COMPLETED_ID, FAILED_ID))
    _, other = by_caller[OTHER_CALLER]
    assert (other["requests_revoked"], other["request_ids"]) == (1, [str(OTHERS_ID)])
    assert len(world.events.sent) == 2


def test_a_caller_holding_only_the_users_grant_is_told_too(world: World) -> None:
    # Given a caller with the user's grant and no record (yet)
    world.given_grant(OTHER_GRANT, OTHER_CALLER)

    world.purge.authorization_removed(OPENID, reason=None)

    assert world.grants.items == {}
    _, detail = world.events_by_caller()[OTHER_CALLER]
    assert (detail["requests_revoked"], detail["request_ids"], detail["reason"]) == (0, [], None)


def test_a_request_grant_of_a_record_the_webhook_named_is_deleted_with_the_user(world: World) -> None:
    # Given a request added without a refresh token, whose user TikTok's webhook named later
    own = request_grant_id(OWN_GRANT_ID)
    world.given_grant(own, BACKEND_CALLER, user=None)
    world.given_record(OWN_GRANT_ID, DownloadStatus.WAITING, grant_id=own)

    purged = world.purge.authorization_removed(OPENID, reason=1)

    assert world.status(OWN_GRANT_ID) == REVOKED
    assert world.grants.items == {}
    assert purged.grants_deleted == 1


def test_a_redelivered_disconnect_finishes_the_purge_and_tells_each_caller_once(world: World) -> None:
    # Given a purge whose archive delete failed after a record was revoked (the message comes back)
    world.given_the_users_data()
    world.transfer.faults.arm("discard", StorageError("S3 DeleteObject failed: SlowDown"))
    with pytest.raises(StorageError):
        world.purge.authorization_removed(OPENID, reason=1)

    # When the message is delivered again
    world.purge.authorization_removed(OPENID, reason=1)

    # Then every archive is deleted this time, no grant is left, and each caller got one event
    assert set(world.transfer.discarded) == {WAITING_ID, COMPLETED_ID, FAILED_ID, OTHERS_ID}
    assert set(world.grants.items) == {user_grant_id(BACKEND_CALLER, ANOTHER_USER)}
    assert sorted(str(detail["caller"]) for _, detail in world.events.sent) == sorted(
        [BACKEND_CALLER, OTHER_CALLER]
    )


def test_a_disconnect_of_a_user_the_service_never_held_publishes_nothing(world: World) -> None:
    world.purge.authorization_removed(OPENID, reason=1)

    assert world.events.sent == []
    assert [type(message) for message, _ in world.queue.messages] == [PurgeAgain]


# -- DELETE /users/{open_id} ------------------------------------------------------------------------
def test_an_erasure_revokes_only_the_callers_records_and_queues_the_tiktok_side(world: World) -> None:
    # Given two callers' records and grants of the user
    world.given_the_users_data()
    started = world.clock.now()

    # When the backend erases the user
    purged = world.purge.erase(EraseUser(BACKEND_CALLER, OPENID))

    # Then the backend's records of the user are tombstones, their archives and uploads gone …
    for request_id in (WAITING_ID, COMPLETED_ID, FAILED_ID):
        assert world.status(request_id) == REVOKED
    assert sorted(world.transfer.discarded) == sorted([WAITING_ID, COMPLETED_ID, FAILED_ID])
    assert sorted(purged.revoked) == sorted([WAITING_ID, COMPLETED_ID, FAILED_ID])
    # … the other caller's record and grant of the same user are untouched
    assert world.status(OTHERS_ID) == "queued"
    assert world.grants.items[OTHER_GRANT].erasing is False
    # … the backend's grant is kept, marked erasing, only to cancel and revoke at TikTok: queued, with
    # the requests TikTok may still be preparing (not the stored one), and the second pass 900 s later
    assert world.grants.items[GRANT].erasing is True
    (revoke, now), second_pass = world.queue.messages
    assert isinstance(revoke, RevokeAtTikTok)
    assert (revoke.caller, revoke.open_id, set(revoke.cancel), now) == (
        BACKEND_CALLER,
        OPENID,
        {WAITING_ID, FAILED_ID},
        0,
    )
    assert second_pass == (PurgeAgain(OPENID, BACKEND_CALLER, None, started), SECOND_PASS_AFTER)
    # … and nothing called TikTok here: the local purge never waits for its rate limit
    assert world.tiktok.cancels.count + world.tiktok.revokes.count == 0


def test_an_erasure_tells_the_caller_what_it_removed(world: World) -> None:
    world.given_the_users_data()

    world.purge.erase(EraseUser(BACKEND_CALLER, OPENID))

    assert world.events.detail_types == ["User Erased"]
    detail = world.events.sent[0][1]
    assert (detail["caller"], detail["open_id"], detail["requests_revoked"]) == (BACKEND_CALLER, OPENID, 3)
    assert sorted(detail["request_ids"]) == sorted(str(i) for i in (WAITING_ID, COMPLETED_ID, FAILED_ID))
    assert "reason" not in detail


def test_erasing_a_user_the_caller_holds_nothing_of_still_answers_user_erased(world: World) -> None:
    # Given another caller's data of the user only
    world.given_grant(OTHER_GRANT, OTHER_CALLER)
    world.given_record(OTHERS_ID, DownloadStatus.WAITING, caller=OTHER_CALLER, grant_id=OTHER_GRANT)

    world.purge.erase(EraseUser(BACKEND_CALLER, OPENID))

    # Then nothing of the other caller's changed, nothing to revoke, and the event still says so
    assert world.status(OTHERS_ID) == "waiting"
    assert world.grants.items[OTHER_GRANT].erasing is False
    assert [type(message) for message, _ in world.queue.messages] == [PurgeAgain]
    assert world.events.detail_types == ["User Erased"]
    assert world.events.sent[0][1]["requests_revoked"] == 0


def test_an_erasure_that_failed_halfway_still_cancels_the_requests_at_tiktok(world: World) -> None:
    # Given an erasure whose archive delete failed after the first record was revoked
    world.given_the_users_data()
    world.transfer.faults.arm("discard", StorageError("S3 DeleteObject failed: SlowDown"))
    with pytest.raises(StorageError):
        world.purge.erase(EraseUser(BACKEND_CALLER, OPENID))

    # When the message comes back
    world.purge.erase(EraseUser(BACKEND_CALLER, OPENID))

    # Then the requests TikTok was preparing are on their way to be cancelled there
    cancels = {
        request_id
        for message, _ in world.queue.messages
        if isinstance(message, RevokeAtTikTok)
        for request_id in message.cancel
    }
    assert cancels == {WAITING_ID, FAILED_ID}
    assert {WAITING_ID, COMPLETED_ID, FAILED_ID} <= set(world.transfer.discarded)


def test_an_erasure_cancels_and_drops_a_request_grant_the_webhook_tied_to_the_user(world: World) -> None:
    # Given the user's grant, and a request of theirs added with an access token alone (its own grant),
    # whose user TikTok's webhook named later
    world.given_grant(GRANT, BACKEND_CALLER)
    own = request_grant_id(OWN_GRANT_ID)
    world.given_grant(own, BACKEND_CALLER, user=None)
    world.given_record(OWN_GRANT_ID, DownloadStatus.WAITING, grant_id=own)

    world.purge.erase(EraseUser(BACKEND_CALLER, OPENID))

    # Then no token of the user is left but the erasing grant's, and the request is cancelled at TikTok
    assert set(world.grants.items) == {GRANT}
    assert world.queue.messages[0] == (RevokeAtTikTok(BACKEND_CALLER, OPENID, (OWN_GRANT_ID,)), 0)


# -- the TikTok side of an erasure --------------------------------------------------------------------
def given_an_erasure(world: World, *, shared: bool = False) -> RevokeAtTikTok:
    """The backend's erasure of the user, its local part done; ``shared``: another caller of the stack
    holds the user's tokens too."""
    world.given_the_users_data()
    if not shared:
        del world.grants.items[OTHER_GRANT]
    world.purge.erase(EraseUser(BACKEND_CALLER, OPENID))
    message = world.queue.messages[0][0]
    assert isinstance(message, RevokeAtTikTok)
    world.journal.calls.clear()
    return message


def test_the_tiktok_side_cancels_then_revokes_then_deletes_the_grant(world: World) -> None:
    message = given_an_erasure(world)
    world.tiktok.cancels.then(None).then(tiktok_error("invalid_params", 400))  # the second: ended already
    world.tiktok.revokes.then(True)

    revoked = world.purge.revoke_at_tiktok(message, world.deadline())

    # Each unfinished request was cancelled with the grant's token, then the user's authorization was
    # revoked with it, and only then the grant deleted
    token = f"access-of-{GRANT}"
    assert revoked is True
    assert sorted(world.tiktok.cancels.calls) == sorted([(WAITING_ID, token), (FAILED_ID, token)])
    assert world.tiktok.revokes.calls == [("app-secret", token)]
    assert world.journal.first("tiktok.revoke_tokens") < world.journal.first("grants.delete")
    assert world.journal.calls.index("tiktok.cancel_request") < world.journal.first("tiktok.revoke_tokens")
    assert GRANT not in world.grants.items


def test_an_authorization_another_caller_shares_is_not_revoked_at_tiktok(world: World) -> None:
    # Given the erasure of a user whose tokens another caller of the stack holds as well
    message = given_an_erasure(world, shared=True)
    world.tiktok.cancels.then(None).then(None)

    # When the TikTok side runs
    revoked = world.purge.revoke_at_tiktok(message, world.deadline())

    # Then the backend's own requests are cancelled and its grant dropped, but the user's authorization
    # of the app — every token of it, the other caller's too — is not revoked
    assert revoked is False
    assert world.tiktok.cancels.count == 2
    assert world.tiktok.revokes.count == 0
    assert GRANT not in world.grants.items
    assert OTHER_GRANT in world.grants.items


def test_an_erased_user_leaves_no_item_remembering_their_handed_tokens(world: World) -> None:
    # Given the user's refresh token, once handed over, remembered with the grant it went into (the
    # item names the user), and another caller's handed token of the same user
    message = given_an_erasure(world)
    world.grants.remember_handed("digest-of-the-erased", GRANT, BACKEND_CALLER)
    world.grants.remember_handed("digest-of-the-others", OTHER_GRANT, OTHER_CALLER)
    world.tiktok.cancels.then(None).then(None)
    world.tiktok.revokes.then(True)

    # When the erasure's TikTok side ends with the grant
    world.purge.revoke_at_tiktok(message, world.deadline())

    # Then the item naming the erased user went with it; the other caller's stays
    assert world.grants.handed_tokens == {"digest-of-the-others": (OTHER_GRANT, OTHER_CALLER)}


def test_a_disconnected_user_leaves_no_item_remembering_their_handed_tokens(world: World) -> None:
    world.given_grant(GRANT, BACKEND_CALLER)
    world.given_grant(OTHER_GRANT, OTHER_CALLER)
    world.grants.remember_handed("digest-1", GRANT, BACKEND_CALLER)
    world.grants.remember_handed("digest-2", OTHER_GRANT, OTHER_CALLER)

    world.purge.authorization_removed(OPENID, 1)

    assert world.grants.handed_tokens == {}
    assert world.grants.items == {}


def test_a_new_consent_since_the_erasure_is_not_revoked(world: World) -> None:
    # Given an erasure, then the user consenting again through the backend (the grant is adopted anew)
    message = given_an_erasure(world)
    world.grants.items[GRANT] = dataclasses.replace(
        world.grants.items[GRANT], erasing=False, generation="a-new-consent"
    )

    revoked = world.purge.revoke_at_tiktok(message, world.deadline())

    # Then nothing is cancelled or revoked, and the new grant stays
    assert revoked is False
    assert world.tiktok.cancels.count + world.tiktok.revokes.count == 0
    assert world.grants.items[GRANT].generation == "a-new-consent"


def test_tokens_already_dead_drop_the_grant_without_revoking(world: World) -> None:
    # Given an erasure whose grant's refresh TikTok refuses (the user's tokens are gone)
    message = given_an_erasure(world)
    world.grants.items[GRANT] = dataclasses.replace(
        world.grants.items[GRANT], access_expires_at=world.clock.now() - timedelta(minutes=1)
    )
    world.tiktok.refreshes.then(
        ReauthorizationRequiredError("TikTok refused the token refresh: invalid_grant")
    )

    revoked = world.purge.revoke_at_tiktok(message, world.deadline())

    assert revoked is False
    assert world.tiktok.revokes.count == 0
    assert GRANT not in world.grants.items


def test_a_grant_already_gone_revokes_nothing(world: World) -> None:
    message = given_an_erasure(world)
    del world.grants.items[GRANT]

    assert world.purge.revoke_at_tiktok(message, world.deadline()) is False
    assert world.tiktok.cancels.count + world.tiktok.revokes.count == 0


def test_a_rate_limited_revocation_comes_back_and_keeps_the_grant(world: World) -> None:
    # Given TikTok rate-limiting the revocation after the cancellations went through
    message = given_an_erasure(world)
    world.tiktok.cancels.then(None).then(None)
    world.tiktok.revokes.then(tiktok_error("rate_limit_exceeded", 429))

    with pytest.raises(TikTokApiError) as raised:
        world.purge.revoke_at_tiktok(message, world.deadline())

    # Then the message comes back (transient) and the grant is kept for it
    assert raised.value.is_transient
    assert world.grants.items[GRANT].erasing is True


def test_the_tiktok_side_runs_with_fresh_tokens_when_the_stored_ones_expired(world: World) -> None:
    message = RevokeAtTikTok(BACKEND_CALLER, OPENID, ())
    world.given_grant(GRANT, BACKEND_CALLER)
    world.grants.mark_erasing(GRANT)
    world.grants.items[GRANT] = dataclasses.replace(
        world.grants.items[GRANT], access_expires_at=world.clock.now() - timedelta(minutes=1)
    )
    world.tiktok.refreshes.then(
        TokenGrant("access-fresh", 7200, "refresh-rotated", 86400, OPENID, "portability.all.single")
    )
    world.tiktok.revokes.then(True)

    assert world.purge.revoke_at_tiktok(message, world.deadline()) is True

    assert world.tiktok.revokes.calls == [("app-secret", "access-fresh")]
    assert GRANT not in world.grants.items


# -- the second pass --------------------------------------------------------------------------------
def test_the_second_pass_revokes_only_records_made_before_the_first_began(world: World) -> None:
    # Given the first pass of an erasure, a record it missed (the index had not caught up), and a new
    # request of the user made after it (a new consent)
    started = world.clock.now()
    world.given_record(LATE_ID, DownloadStatus.WAITING, grant_id=None)
    world.clock.advance(60)
    world.given_record(WAITING_ID, DownloadStatus.WAITING, grant_id=None)

    # When the second pass comes
    purged = world.purge.again(PurgeAgain(OPENID, BACKEND_CALLER, None, started))

    # Then only the missed record is revoked, and the caller is told about it
    assert purged.revoked == (LATE_ID,)
    assert world.status(LATE_ID) == REVOKED
    assert world.status(WAITING_ID) == "waiting"
    assert world.events.detail_types == ["User Erased"]
    assert world.events.sent[0][1]["request_ids"] == [str(LATE_ID)]


def test_the_second_pass_of_an_erasure_leaves_other_callers_alone(world: World) -> None:
    started = world.clock.now()
    world.given_record(OTHERS_ID, DownloadStatus.WAITING, caller=OTHER_CALLER, grant_id=None)

    world.purge.again(PurgeAgain(OPENID, BACKEND_CALLER, None, started))

    assert world.status(OTHERS_ID) == "waiting"
    assert world.events.sent == []


def test_the_second_pass_of_a_disconnect_covers_every_caller(world: World) -> None:
    started = world.clock.now()
    world.given_record(OTHERS_ID, DownloadStatus.WAITING, caller=OTHER_CALLER, grant_id=None)
    own = request_grant_id(OWN_GRANT_ID)
    world.given_grant(own, BACKEND_CALLER, user=None)
    world.given_record(OWN_GRANT_ID, DownloadStatus.QUEUED, grant_id=own)

    world.purge.again(PurgeAgain(OPENID, None, 2, started))

    assert (world.status(OTHERS_ID), world.status(OWN_GRANT_ID)) == (REVOKED, REVOKED)
    assert world.grants.items == {}
    by_caller = world.events_by_caller()
    assert set(by_caller) == {BACKEND_CALLER, OTHER_CALLER}
    assert {detail_type for detail_type, _ in by_caller.values()} == {"Authorization Removed"}
    assert by_caller[OTHER_CALLER][1]["reason"] == 2


def test_the_second_pass_of_a_disconnect_deletes_a_grant_the_index_hid_but_not_a_new_consent(
    world: World,
) -> None:
    # Given a grant consented to before the purge began, which the first pass's index did not show,
    # and another caller's grant the user consented to after it
    missed = dataclasses.replace(world.given_grant(GRANT, BACKEND_CALLER), adopted_at=world.clock.now())
    world.grants.items[GRANT] = missed
    world.clock.advance(5)
    started = world.clock.now()
    world.clock.advance(60)
    consented = dataclasses.replace(
        world.given_grant(OTHER_GRANT, OTHER_CALLER), adopted_at=world.clock.now()
    )
    world.grants.items[OTHER_GRANT] = consented

    # When the second pass runs
    world.purge.again(PurgeAgain(OPENID, None, 1, started))

    # Then the grant from before the purge is gone; the new consent stays
    assert list(world.grants.items) == [OTHER_GRANT]


def test_a_second_pass_that_finds_nothing_new_publishes_nothing(world: World) -> None:
    # Given a first pass that revoked everything
    world.given_the_users_data()
    started = world.clock.now()
    world.purge.authorization_removed(OPENID, reason=1)
    world.events.sent.clear()

    # When the second pass comes; Then it finds nothing new and says nothing
    purged = world.purge.again(PurgeAgain(OPENID, None, 1, started))

    assert purged.revoked == ()
    assert world.events.sent == []
