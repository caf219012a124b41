"""TokenService with in-memory grants, vault and TikTok: fresh tokens, refreshes, the lease, reconsent."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta

import pytest

from tests.unit.fakes import (
    Clock,
    FakeAppCredentials,
    FakeGrants,
    FakeTikTok,
    FakeVault,
    Journal,
    freeze_time,
)
from tiktok_archive.adapters.grants import Grant, SealedTokens
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, REFRESH_TOKEN_PURPOSE
from tiktok_archive.logic.tokens import (
    FRESH_FOR,
    REFRESH_LEASE,
    STORE_ATTEMPTS,
    STORE_WITHIN_SECONDS,
    WAIT_FOR_OTHER_REFRESH_SECONDS,
    TokenService,
)
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import (
    AppCredentialsError,
    MissingTokenError,
    ReauthorizationRequiredError,
    RecordStoreError,
    TikTokApiError,
    TokenRefreshInProgressError,
    UpstreamUnavailableError,
)
from tiktok_archive.models.portability import AppCredentials, TokenGrant

GRANT = "user:openid-1"
OPENID = "openid-1"


@dataclass
class World:
    clock: Clock
    journal: Journal
    grants: FakeGrants
    vault: FakeVault
    tiktok: FakeTikTok
    app: FakeAppCredentials
    service: TokenService

    def seal(self, token: str, purpose: str = ACCESS_TOKEN_PURPOSE, grant_id: str = GRANT) -> str:
        return self.vault.seal(token, purpose, {"grant_id": grant_id})

    def opened(self, sealed: str | None, purpose: str = ACCESS_TOKEN_PURPOSE) -> str:
        assert sealed is not None
        return self.vault.open(sealed, purpose, {"grant_id": GRANT})

    def given_grant(
        self,
        *,
        access_left: timedelta = timedelta(hours=1),
        refresh: str | None = "refresh-old",
        lease_held_for: timedelta | None = None,
        version: int = 1,
    ) -> Grant:
        now = self.clock.now()
        grant = Grant(
            grant_id=GRANT,
            version=version,
            sealed_access_token=self.seal("access-old"),
            access_expires_at=now + access_left,
            sealed_refresh_token=self.seal(refresh, REFRESH_TOKEN_PURPOSE) if refresh else None,
            refresh_expires_at=now + timedelta(days=100) if refresh else None,
            user_openid=OPENID,
            refresh_owner="other-invocation" if lease_held_for else None,
            refresh_lease_until=now + lease_held_for if lease_held_for else None,
        )
        self.grants.items[GRANT] = grant
        return grant

    def another_invocation_stores(self, access: str, owner: str = "other-invocation") -> None:
        """What another invocation's refresh writes: rotated tokens, the grant's next version."""
        grant = self.grants.items[GRANT]
        stored = self.grants.store_refreshed(
            grant,
            owner,
            SealedTokens(
                sealed_access_token=self.seal(access),
                access_expires_at=self.clock.now() + timedelta(hours=2),
                sealed_refresh_token=self.seal("refresh-theirs", REFRESH_TOKEN_PURPOSE),
                refresh_expires_at=self.clock.now() + timedelta(days=180),
                user_openid=OPENID,
            ),
        )
        assert stored


def rotated(access: str = "access-new", refresh: str = "refresh-new") -> TokenGrant:
    return TokenGrant(access, 7200, refresh, 180 * 86400, OPENID, "user.info.basic,portability.all.single")


def tiktok_error(code: str, status: int) -> TikTokApiError:
    return TikTokApiError(code, f"TikTok refused: {code}", log_id=None, upstream_status=status)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    clock = Clock()
    freeze_time(monkeypatch, clock)
    journal = Journal()
    grants = FakeGrants(clock, journal)
    vault = FakeVault(journal)
    tiktok = FakeTikTok(journal)
    app = FakeAppCredentials("app-secret-old", "app-secret-new")
    return World(clock, journal, grants, vault, tiktok, app, TokenService(grants, vault, tiktok, lambda: app))


def deadline(seconds: float = 30.0) -> Deadline:
    return Deadline.after(seconds)  # on the frozen clock


# -- a fresh token --------------------------------------------------------------------------------
@pytest.mark.parametrize("left", [FRESH_FOR + timedelta(seconds=1), timedelta(hours=2)])
def test_a_fresh_stored_token_is_returned_without_refreshing(world: World, left: timedelta) -> None:
    # Given a grant whose access token has more than 20 minutes ahead of it
    before = world.given_grant(access_left=left)

    # When a token is asked for
    token = world.service.access_token(GRANT, deadline())

    # Then the stored one comes back; TikTok was not asked, the grant not touched
    assert token == "access-old"
    assert world.tiktok.refreshes.count == 0
    assert "grants.take_refresh_lease" not in world.journal.calls
    assert world.grants.items[GRANT] == before


def test_no_grant_requires_reauthorization(world: World) -> None:
    # Given no grant at all; When a token is asked for; Then only a new consent helps
    with pytest.raises(ReauthorizationRequiredError):
        world.service.access_token(GRANT, deadline())
    assert world.tiktok.refreshes.count == 0


# -- refreshing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("left", [FRESH_FOR, timedelta(minutes=19), timedelta(0), -timedelta(hours=3)])
def test_a_token_near_expiry_is_refreshed_and_stored_before_the_caller_sees_it(
    world: World, left: timedelta
) -> None:
    # Given a grant whose access token has 20 minutes or less ahead of it
    world.given_grant(access_left=left)
    world.tiktok.refreshes.then(rotated())

    # When a caller uses a token
    def use(token: str) -> str:
        world.journal.note("caller.use")
        return token

    token = world.service.with_access_token(GRANT, deadline(), use)

    # Then TikTok rotated the tokens with the stored refresh token and the app's secret …
    assert token == "access-new"
    assert world.tiktok.refreshes.calls == [("app-secret-old", "refresh-old")]
    # … and both rotated tokens were stored (sealed, under the next version, lease released)
    # before the caller saw the new access token
    assert (
        world.journal.first("tiktok.refresh_tokens")
        < world.journal.first("grants.store_refreshed")
        < world.journal.first("caller.use")
    )
    grant = world.grants.items[GRANT]
    assert grant.version == 2
    assert world.opened(grant.sealed_access_token) == "access-new"
    assert world.opened(grant.sealed_refresh_token, REFRESH_TOKEN_PURPOSE) == "refresh-new"
    assert grant.access_expires_at == world.clock.now() + timedelta(seconds=7200)
    assert (grant.refresh_owner, grant.refresh_lease_until) == (None, None)


def test_an_access_token_without_a_refresh_token_is_used_past_its_assumed_lifetime(world: World) -> None:
    # Given a grant past the assumed 2 hours and no refresh token (the token may live 24 h)
    world.given_grant(access_left=-timedelta(minutes=1), refresh=None)

    # When a token is asked for: the stored one, TikTok will say whether it still works
    assert world.service.access_token(GRANT, deadline()) == "access-old"
    assert world.tiktok.refreshes.count == 0


def test_an_access_token_tiktok_refuses_without_a_refresh_token_requires_reauthorization(
    world: World,
) -> None:
    # Given a grant without a refresh token, whose access token TikTok refuses
    world.given_grant(access_left=-timedelta(minutes=1), refresh=None)

    def use(token: str) -> str:
        raise tiktok_error("access_token_invalid", 401)

    # When the work is done with a token
    with pytest.raises(ReauthorizationRequiredError):
        world.service.with_access_token(GRANT, deadline(), use)

    # Then TikTok was not asked to refresh and no lease was taken
    assert world.tiktok.refreshes.count == 0
    assert "grants.take_refresh_lease" not in world.journal.calls


def test_tiktok_refusing_the_refresh_erases_the_grant(world: World) -> None:
    # Given an expiring grant whose refresh token TikTok refuses (invalid_grant)
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(
        ReauthorizationRequiredError("TikTok refused the token refresh: invalid_grant")
    )

    # When a token is asked for
    with pytest.raises(ReauthorizationRequiredError):
        world.service.access_token(GRANT, deadline())

    # Then the dead tokens are gone
    assert GRANT not in world.grants.items
    assert world.tiktok.refreshes.count == 1


def test_a_refused_refresh_uses_the_newer_tokens_when_another_refresh_succeeded_meanwhile(
    world: World,
) -> None:
    # Given an expiring grant, and TikTok slow to refuse our refresh: our lease lapses meanwhile and
    # another invocation refreshes the grant (its rotated refresh token made ours invalid)
    world.given_grant(access_left=timedelta(minutes=5))

    def another_refresh_succeeds() -> None:
        world.clock.advance(120)
        owner = world.grants.take_refresh_lease(world.grants.items[GRANT], timedelta(seconds=60))
        assert owner is not None
        world.another_invocation_stores("access-theirs", owner)

    world.tiktok.refreshes.then(
        ReauthorizationRequiredError("TikTok refused the token refresh: invalid_grant"),
        meanwhile=another_refresh_succeeds,
    )

    # When a token is asked for
    token = world.service.access_token(GRANT, deadline())

    # Then the other invocation's token is used and its grant kept
    assert token == "access-theirs"
    assert world.grants.items[GRANT].version == 2
    assert "grants.erase" not in world.journal.calls


def test_a_failed_refresh_gives_the_lease_back_and_changes_nothing(world: World) -> None:
    # Given an expiring grant and TikTok unreachable
    before = world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(UpstreamUnavailableError("TikTok did not answer"))

    # When a token is asked for
    with pytest.raises(UpstreamUnavailableError):
        world.service.access_token(GRANT, deadline())

    # Then the grant is as it was, lease released, so that the next try can refresh at once
    assert world.grants.items[GRANT] == before


# -- one refresh at a time ------------------------------------------------------------------------
def test_an_invocation_that_finds_the_lease_taken_waits_for_the_tokens_the_other_stores(
    world: World,
) -> None:
    # Given an expired grant that another invocation is refreshing right now; it stores its tokens
    # while this one waits
    world.given_grant(access_left=-timedelta(minutes=1), lease_held_for=timedelta(seconds=60))
    world.clock.while_sleeping.append(lambda: world.another_invocation_stores("access-theirs"))

    # When a token is asked for
    token = world.service.access_token(GRANT, deadline())

    # Then it waited once, read the newer version, and used its token — without refreshing itself
    # (its refresh token was about to stop working)
    assert token == "access-theirs"
    assert world.clock.slept == [0.25]
    assert world.journal.calls.count("grants.get") == 3
    assert world.tiktok.refreshes.count == 0


def test_a_lease_held_past_the_wait_hands_the_work_back_as_transient(world: World) -> None:
    # Given a grant whose lease another invocation holds longer than this one waits
    before = world.given_grant(access_left=-timedelta(minutes=1), lease_held_for=timedelta(seconds=60))

    # When a token is asked for, with plenty of the invocation left
    with pytest.raises(TokenRefreshInProgressError) as raised:
        world.service.access_token(GRANT, deadline(60))

    # Then it waited WAIT_FOR_OTHER_REFRESH_SECONDS, then gave the work back to come again
    assert sum(world.clock.slept) == pytest.approx(WAIT_FOR_OTHER_REFRESH_SECONDS)
    assert raised.value.is_transient
    assert raised.value.retry_after == "5"
    assert world.tiktok.refreshes.count == 0
    assert world.grants.items[GRANT] == before


def test_the_wait_for_another_refresh_ends_with_the_invocations_deadline(world: World) -> None:
    # Given a lease held by another invocation and only 1 s left of this one
    world.given_grant(access_left=-timedelta(minutes=1), lease_held_for=timedelta(seconds=60))

    # When a token is asked for; Then it waits no longer than its deadline
    with pytest.raises(TokenRefreshInProgressError):
        world.service.access_token(GRANT, deadline(1.0))
    assert sum(world.clock.slept) == pytest.approx(1.0)


def test_a_lease_given_up_by_the_other_invocation_is_taken_and_refreshed_here(world: World) -> None:
    # Given a lease held by another invocation that gives it back without storing anything
    world.given_grant(access_left=-timedelta(minutes=1), lease_held_for=timedelta(seconds=60))
    world.clock.while_sleeping.append(lambda: world.grants.release_refresh_lease(GRANT, "other-invocation"))
    world.tiktok.refreshes.then(rotated())

    # When a token is asked for
    token = world.service.access_token(GRANT, deadline())

    # Then this invocation refreshed it itself
    assert token == "access-new"
    assert world.tiktok.refreshes.count == 1
    assert world.grants.items[GRANT].version == 2


def test_a_grant_erased_by_the_other_invocation_requires_reauthorization(world: World) -> None:
    # Given a lease held by another invocation, whose refresh TikTok refuses (it erases the grant)
    world.given_grant(access_left=-timedelta(minutes=1), lease_held_for=timedelta(seconds=60))

    def the_other_erases_it() -> None:
        world.grants.erase(GRANT)

    world.clock.while_sleeping.append(the_other_erases_it)

    # When a token is asked for; Then only a new consent helps
    with pytest.raises(ReauthorizationRequiredError):
        world.service.access_token(GRANT, deadline())
    assert world.tiktok.refreshes.count == 0


def test_a_refresh_call_ends_well_within_its_lease(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an expiring grant, and an invocation with minutes left (a worker)
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(rotated())
    budgets: list[float] = []
    answer = world.tiktok.refresh_tokens

    def timed(app: AppCredentials, refresh_token: str, call_deadline: Deadline) -> TokenGrant:
        budgets.append(call_deadline.remaining())
        return answer(app, refresh_token, call_deadline)

    monkeypatch.setattr(world.tiktok, "refresh_tokens", timed)

    # When it refreshes
    world.service.access_token(GRANT, deadline(600))

    # Then TikTok's call had to end with time left in the lease to store the rotated tokens: no other
    # invocation can take the lease and replay the same refresh token while this one still waits
    assert budgets == [REFRESH_LEASE.total_seconds() - STORE_WITHIN_SECONDS]


def test_a_refresh_answering_another_user_than_the_grants_open_id_is_logged_as_an_error(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a user's grant started with a wrong open_id (the first caller's word), now expiring
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(dataclasses.replace(rotated(), open_id="openid-2"))

    # When it refreshes: the tokens are theirs and go on serving the grant's requests
    assert world.service.access_token(GRANT, deadline()) == "access-new"

    # Then an operator learns that the grant's open_id was not its tokens' user
    assert "the grant's tokens are another TikTok user's than its open_id" in caplog.text


def test_rotated_tokens_not_stored_at_first_are_stored_on_the_second_try(world: World) -> None:
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(rotated())
    world.grants.faults.arm(
        "store_refreshed", RecordStoreError("DynamoDB UpdateItem failed: InternalServerError")
    )

    assert world.service.access_token(GRANT, deadline()) == "access-new"
    assert (
        world.opened(world.grants.items[GRANT].sealed_refresh_token, REFRESH_TOKEN_PURPOSE) == "refresh-new"
    )


def test_rotated_tokens_that_cannot_be_stored_are_reported_as_lost(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(rotated())
    refused = RecordStoreError("DynamoDB UpdateItem failed: InternalServerError")

    def failing(*args: object) -> bool:
        world.journal.note("grants.store_refreshed")
        raise refused

    monkeypatch.setattr(world.grants, "store_refreshed", failing)

    with pytest.raises(RecordStoreError):
        world.service.access_token(GRANT, deadline())
    assert world.journal.calls.count("grants.store_refreshed") == STORE_ATTEMPTS
    assert "the user's refresh token is lost" in caplog.text
    assert "refresh-new" not in caplog.text


# -- with_access_token ----------------------------------------------------------------------------
def test_a_token_tiktok_refuses_is_refreshed_and_the_work_done_once_more(world: World) -> None:
    # Given a fresh-looking token that TikTok refuses (revoked before its time)
    world.given_grant()
    world.tiktok.refreshes.then(rotated())
    seen: list[str] = []

    def use(token: str) -> str:
        seen.append(token)
        if token == "access-old":
            raise tiktok_error("access_token_invalid", 401)
        return "done"

    # When the work is done with a token
    result = world.service.with_access_token(GRANT, deadline(), use)

    # Then it was tried once more, with a refreshed token
    assert (result, seen) == ("done", ["access-old", "access-new"])
    assert world.tiktok.refreshes.count == 1


def test_a_token_refused_after_another_invocation_refreshed_the_grant_is_not_refreshed_again(
    world: World,
) -> None:
    # Given a fresh-looking token that TikTok refuses, and another invocation that refreshed the grant
    # while our call was on its way (the race of two checks of one user whose token expired early)
    world.given_grant()
    seen: list[str] = []

    def use(token: str) -> str:
        seen.append(token)
        if token == "access-old":
            world.another_invocation_stores("access-theirs", owner="nobody")
            raise tiktok_error("access_token_invalid", 401)
        return "done"

    # When the work is done with a token
    result = world.service.with_access_token(GRANT, deadline(), use)

    # Then the other invocation's token is used: no second refresh rotates the user's tokens again
    assert (result, seen) == ("done", ["access-old", "access-theirs"])
    assert world.tiktok.refreshes.count == 0


def test_a_refreshed_token_tiktok_refuses_too_is_not_tried_a_third_time(world: World) -> None:
    world.given_grant()
    world.tiktok.refreshes.then(rotated())
    seen: list[str] = []

    def use(token: str) -> str:
        seen.append(token)
        raise tiktok_error("access_token_invalid", 401)

    with pytest.raises(TikTokApiError, match="access_token_invalid"):
        world.service.with_access_token(GRANT, deadline(), use)
    assert seen == ["access-old", "access-new"]


@pytest.mark.parametrize(
    ("code", "status"),
    [("scope_not_authorized", 401), ("rate_limit_exceeded", 429), ("invalid_params", 400)],
)
def test_other_tiktok_errors_are_not_retried_with_a_refreshed_token(
    world: World, code: str, status: int
) -> None:
    # Given a fresh token, and work that TikTok refuses for another reason
    world.given_grant()
    calls: list[str] = []

    def use(token: str) -> str:
        calls.append(token)
        raise tiktok_error(code, status)

    # When the work is done with a token; Then TikTok's error comes back as it was, nothing refreshed
    with pytest.raises(TikTokApiError) as raised:
        world.service.with_access_token(GRANT, deadline(), use)
    assert raised.value.error_code == code
    assert calls == ["access-old"]
    assert world.tiktok.refreshes.count == 0


# -- the app's secret -----------------------------------------------------------------------------
def test_app_credentials_refused_on_the_first_refresh_reads_the_secret_fresh_once(world: World) -> None:
    # Given an expiring grant, and an app secret rotated since it was cached (TikTok: invalid_client)
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(AppCredentialsError("TikTok refused the token refresh: invalid_client"))
    world.tiktok.refreshes.then(rotated())

    # When a token is asked for
    token = world.service.access_token(GRANT, deadline())

    # Then the secret was read fresh once and the refresh sent again with it
    assert token == "access-new"
    assert world.app.reads == [False, True]
    assert world.tiktok.refreshes.calls == [
        ("app-secret-old", "refresh-old"),
        ("app-secret-new", "refresh-old"),
    ]


def test_app_credentials_refused_twice_fail_and_give_the_lease_back(world: World) -> None:
    before = world.given_grant(access_left=timedelta(minutes=5))
    for _ in range(2):
        world.tiktok.refreshes.then(AppCredentialsError("TikTok refused the token refresh: invalid_client"))

    with pytest.raises(AppCredentialsError):
        world.service.access_token(GRANT, deadline())

    assert world.app.reads == [False, True]
    assert world.grants.items[GRANT] == before  # the user's grant is not at fault: kept, lease released


# -- storing --------------------------------------------------------------------------------------
def test_stored_tokens_are_sealed_for_their_grant_and_counted_from_now(world: World) -> None:
    # When a caller's tokens are kept
    world.service.store(GRANT, "access-caller", "refresh-caller", OPENID)

    # Then they are sealed (no plain token in the grant) and open only as this grant's
    grant = world.grants.items[GRANT]
    assert "access-caller" not in repr(dataclasses.astuple(grant))
    assert world.opened(grant.sealed_access_token) == "access-caller"
    assert world.opened(grant.sealed_refresh_token, REFRESH_TOKEN_PURPOSE) == "refresh-caller"
    assert grant.access_expires_at == world.clock.now() + timedelta(hours=2)
    assert (grant.user_openid, world.service.user_of(GRANT)) == (OPENID, OPENID)


def test_a_sealed_token_lifted_into_another_grant_does_not_open(world: World) -> None:
    # Given another user's grant holding a copy of this grant's sealed access token
    world.given_grant()
    world.grants.items["user:someone-else"] = dataclasses.replace(
        world.grants.items[GRANT], grant_id="user:someone-else"
    )

    # When a token of that grant is asked for; Then it does not open
    with pytest.raises(MissingTokenError):
        world.service.access_token("user:someone-else", deadline())


def test_erase_forgets_the_grant(world: World) -> None:
    world.given_grant()
    assert (world.service.erase(GRANT), world.service.erase(GRANT)) == (1, 0)
    assert world.service.user_of(GRANT) is None
