"""TokenHandover with in-memory grants, vault and TikTok: who the user is, and what the service keeps.

A refresh token handed over is exchanged at once; TikTok's answer names the user, whose grant under the
caller gets the rotated lineage. The same token handed over again is never sent to TikTok a second time.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import timedelta

import pytest

from tests.conftest import LogCapture
from tests.unit.fakes import (
    Clock,
    FakeAppCredentials,
    FakeGrants,
    FakeTikTok,
    FakeVault,
    Journal,
    freeze_time,
)
from tiktok_archive.adapters.grant_items import Grant
from tiktok_archive.adapters.grants import request_grant_id, user_grant_id
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, REFRESH_TOKEN_PURPOSE
from tiktok_archive.logic.handover import WAIT_FOR_CONCURRENT_HANDOVER_SECONDS, Holding, TokenHandover
from tiktok_archive.logic.tokens import ASSUMED_ACCESS_LIFETIME, TokenService, handed_access_token
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import (
    AppCredentialsError,
    OpenIdMismatchError,
    ReauthorizationRequiredError,
    RecordStoreError,
    ServiceError,
    TokenRefreshInProgressError,
)
from tiktok_archive.models.portability import HandedTokens, TokenGrant
from tiktok_archive.models.tiktok_errors import TikTokApiError, UpstreamUnavailableError

CALLER = "arn:aws:sts::123456789012:assumed-role/tiktok-archive-backend"
OTHER_CALLER = "arn:aws:sts::123456789012:assumed-role/another-backend"
OPENID = "openid-tiktok"
GRANT = user_grant_id(CALLER, OPENID)
HANDED = HandedTokens("access-caller", "refresh-caller")
DIGEST = hashlib.sha256(b"refresh-caller").hexdigest()


@dataclass
class World:
    clock: Clock
    journal: Journal
    grants: FakeGrants
    vault: FakeVault
    tiktok: FakeTikTok
    tokens: TokenService
    handover: TokenHandover

    def stored(self, grant_id: str = GRANT) -> tuple[str, str | None] | None:
        """The grant's tokens in the clear: (access, refresh), or None without a grant."""
        grant = self.grants.items.get(grant_id)
        if grant is None:
            return None
        binding = {"grant_id": grant_id}
        access = self.vault.open(grant.sealed_access_token or "", ACCESS_TOKEN_PURPOSE, binding)
        sealed = grant.sealed_refresh_token
        return access, self.vault.open(sealed, REFRESH_TOKEN_PURPOSE, binding) if sealed else None

    def remembered(self, refresh_token: str) -> tuple[str, str] | None:
        return self.grants.handed_tokens.get(hashlib.sha256(refresh_token.encode()).hexdigest())

    def users_grant(self, caller: str, user: str, access: str, refresh: str) -> Grant:
        """A grant of ``user`` under ``caller`` holding (access, refresh), as an earlier handover left it."""
        return self.tokens.keep(
            user_grant_id(caller, user), caller, user, exchanged(access, refresh, user), deadline()
        )


def exchanged(
    access: str = "access-new", refresh: str = "refresh-new", open_id: str | None = OPENID
) -> TokenGrant:
    return TokenGrant(access, 7200, refresh, 180 * 86400, open_id, "portability.all.single")


def invalid_grant() -> ReauthorizationRequiredError:
    return ReauthorizationRequiredError(
        "TikTok refused the token refresh: invalid_grant", upstream_status=400
    )


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    clock = Clock()
    freeze_time(monkeypatch, clock)
    journal = Journal()
    grants = FakeGrants(clock, journal)
    vault = FakeVault(journal)
    tiktok = FakeTikTok(journal)
    app = FakeAppCredentials()
    tokens = TokenService(grants, vault, tiktok, lambda: app)
    return World(clock, journal, grants, vault, tiktok, tokens, TokenHandover(tokens, grants))


def deadline(seconds: float = 30.0) -> Deadline:
    return Deadline.after(seconds)  # on the frozen clock


# -- the user is who TikTok says ------------------------------------------------------------------
@pytest.mark.parametrize("claimed", [None, OPENID])
def test_a_handed_refresh_token_is_exchanged_first_and_tiktok_names_the_user(
    world: World, claimed: str | None
) -> None:
    # Given a caller handing over a user's tokens (naming the user, or not)
    world.tiktok.refreshes.then(exchanged())

    # When the service takes them
    holding = world.handover.take(
        CALLER, HandedTokens("access-caller", "refresh-caller", claimed), deadline()
    )

    # Then the handed refresh token was exchanged at once, and the rotated lineage kept in the grant of
    # the user TikTok's answer named, under this caller; the caller's own copies are used for nothing
    assert world.tiktok.refreshes.calls == [("app-secret", "refresh-caller")]
    assert holding == Holding("access-new", GRANT, OPENID)
    assert world.stored() == ("access-new", "refresh-new")
    grant = world.grants.items[GRANT]
    assert (grant.caller, grant.user_openid) == (CALLER, OPENID)
    # … and the handed token is remembered (by its digest) as exchanged into that grant by this caller
    assert world.remembered("refresh-caller") == (GRANT, CALLER)
    assert "refresh-caller" not in repr(world.grants.handed_tokens)


def test_a_new_consent_replaces_the_lineage_of_the_users_grant(world: World) -> None:
    # Given the user's grant from an earlier consent
    before = world.users_grant(CALLER, OPENID, "access-earlier", "refresh-earlier")
    world.tiktok.refreshes.then(exchanged())

    # When the caller hands over the user's new consent
    holding = world.handover.take(CALLER, HANDED, deadline())

    # Then the newest lineage is the grant's, under a new generation
    assert holding == Holding("access-new", GRANT, OPENID)
    assert world.stored() == ("access-new", "refresh-new")
    assert world.grants.items[GRANT].generation != before.generation


def test_the_callers_open_id_contradicted_by_tiktok_changes_nothing_for_either_user(
    world: World, logs: LogCapture
) -> None:
    # Given the caller's grant of the user it names, and tokens that TikTok says are another user's
    claimed = world.users_grant(CALLER, "openid-claimed", "access-claimed", "refresh-claimed")
    world.tiktok.refreshes.then(exchanged(open_id=OPENID))

    # When the caller hands them over naming the wrong user
    with pytest.raises(OpenIdMismatchError) as raised:
        world.handover.take(
            CALLER, HandedTokens("access-caller", "refresh-caller", "openid-claimed"), deadline()
        )

    # Then it is a 400, and nothing changed for either user: no grant of TikTok's user, the named user's
    # grant as it was, and the exchanged token not remembered; the lineage dropped is logged. TikTok
    # rotated the token: its exchange mark stays until it lapses, so the same body sent again (a backend
    # retrying) does not send the dead token to TikTok while this invocation may still run
    assert (raised.value.http_status, raised.value.error_code) == (400, "open_id_mismatch")
    assert GRANT not in world.grants.items
    assert world.grants.items[user_grant_id(CALLER, "openid-claimed")] == claimed
    assert world.grants.handed_tokens == {}
    assert len(world.grants.exchanging) == 1
    assert logs.find(
        "handed-over tokens are another user's than the caller's open_id: nothing kept, "
        "the exchanged refresh token is dropped"
    )


def test_tiktoks_answer_without_open_id_keeps_the_tokens_with_their_request(
    world: World, logs: LogCapture
) -> None:
    # Given TikTok's refresh answer naming no user
    world.tiktok.refreshes.then(exchanged(open_id=None))

    # When the tokens are taken
    holding = world.handover.take(CALLER, HANDED, deadline())

    # Then no user's grant is made, nothing remembered; the rotated lineage waits for its request …
    assert (holding.access_token, holding.grant_id, holding.user_openid) == ("access-new", None, None)
    assert world.grants.items == {}
    assert (world.grants.handed_tokens, world.grants.exchanging) == ({}, {})
    assert logs.find("TikTok's refresh answer names no user: the tokens stay with their request")

    # … whose own grant then holds both rotated tokens (the refresh token is not lost)
    grant_id = world.handover.keep_for_request(CALLER, holding, 7, deadline())
    assert grant_id == request_grant_id(7)
    assert world.stored(grant_id) == ("access-new", "refresh-new")
    assert world.grants.items[grant_id].user_openid is None


def test_tiktok_refusing_the_handed_refresh_token_answers_at_once_and_keeps_nothing(world: World) -> None:
    # Given a handed refresh token TikTok refuses, and no other handover of it
    world.tiktok.refreshes.then(invalid_grant())

    # When the tokens are taken; Then only the user's new consent helps, answered without waiting: no
    # handover of the same token was exchanging it
    with pytest.raises(ReauthorizationRequiredError):
        world.handover.take(CALLER, HANDED, deadline())
    assert world.clock.slept == []
    assert world.tiktok.refreshes.count == 1
    # … and nothing is left: no grant, no mark of the exchange
    assert world.grants.items == {}
    assert (world.grants.handed_tokens, world.grants.exchanging) == ({}, {})
    assert world.journal.calls[-1] == "grants.end_exchange"


def test_tiktok_refusing_the_app_keeps_nothing_and_does_not_wait(world: World) -> None:
    world.tiktok.refreshes.then(
        AppCredentialsError("TikTok refused the token refresh: invalid_client", upstream_status=401)
    )
    world.tiktok.refreshes.then(
        AppCredentialsError("TikTok refused the token refresh: invalid_client", upstream_status=401)
    )

    with pytest.raises(AppCredentialsError):
        world.handover.take(CALLER, HANDED, deadline())
    assert world.grants.items == {}
    assert world.clock.slept == []


@pytest.mark.parametrize(
    "failure",
    [
        UpstreamUnavailableError("TikTok did not answer in time"),
        TikTokApiError("internal_error", "TikTok failed", log_id="20261203", upstream_status=500),
    ],
)
def test_an_exchange_that_may_have_reached_tiktok_keeps_its_mark_until_it_lapses(
    world: World, failure: ServiceError
) -> None:
    # Given an exchange that failed in a way that may have come after TikTok rotated the token
    world.tiktok.refreshes.then(failure)

    with pytest.raises(ServiceError):
        world.handover.take(CALLER, HANDED, deadline())

    # Then nothing is kept, but the mark stays: the same token handed over again is not sent meanwhile
    assert world.grants.items == {}
    assert len(world.grants.exchanging) == 1
    assert "grants.end_exchange" not in world.journal.calls


# -- without a refresh token ----------------------------------------------------------------------
def test_an_access_token_alone_makes_no_grant_until_its_request_keeps_it(world: World) -> None:
    # When a caller hands over an access token alone
    holding = world.handover.take(CALLER, HandedTokens("access-alone"), deadline())

    # Then TikTok is not asked, the user stays unknown, nothing is stored yet
    assert holding == Holding("access-alone", None, None, handed_access_token("access-alone"))
    assert world.tiktok.refreshes.count == 0
    assert world.grants.items == {}

    # When its request is made; Then the request's own grant holds the token for its assumed life
    grant_id = world.handover.keep_for_request(CALLER, holding, 7, deadline())
    grant = world.grants.items[grant_id]
    assert grant_id == request_grant_id(7)
    assert world.stored(grant_id) == ("access-alone", None)
    assert (grant.caller, grant.user_openid) == (CALLER, None)
    assert grant.access_expires_at == world.clock.now() + ASSUMED_ACCESS_LIFETIME


def test_a_holding_with_a_users_grant_needs_no_grant_of_its_request(world: World) -> None:
    world.tiktok.refreshes.then(exchanged())
    holding = world.handover.take(CALLER, HANDED, deadline())
    kept = dict(world.grants.items)

    assert world.handover.keep_for_request(CALLER, holding, 7, deadline()) == GRANT
    assert world.grants.items == kept


# -- the handed-token registry --------------------------------------------------------------------
def test_the_same_refresh_token_handed_again_by_the_same_caller_joins_without_calling_tiktok(
    world: World,
) -> None:
    # Given tokens handed over once (the caller lost the answer)
    world.tiktok.refreshes.then(exchanged())
    first = world.handover.take(CALLER, HANDED, deadline())
    before = world.grants.items[GRANT]

    # When the caller hands the same tokens over again
    again = world.handover.take(CALLER, HANDED, deadline())

    # Then the grant they went into is joined: TikTok is not sent the rotated token, the lineage is the
    # same, and the grant has a new generation (a release racing with the join keeps it)
    assert again == dataclasses.replace(first, joined=True)
    assert world.tiktok.refreshes.count == 1
    assert world.stored() == ("access-new", "refresh-new")
    assert world.grants.items[GRANT].generation != before.generation


def test_tokens_joined_again_act_with_a_refreshed_token_when_tiktok_refuses_the_stored_one(
    world: World,
) -> None:
    # Given tokens handed over once, whose stored access token TikTok has since stopped taking (revoked
    # early, or TikTok's clock ahead of ours)
    world.tiktok.refreshes.then(exchanged()).then(exchanged("access-later", "refresh-later"))
    world.handover.take(CALLER, HANDED, deadline())
    holding = world.handover.take(CALLER, HANDED, deadline())
    seen: list[str] = []

    def add(token: str) -> int:
        seen.append(token)
        if token == "access-new":
            raise TikTokApiError("access_token_invalid", "expired", log_id=None, upstream_status=401)
        return 7

    # When the caller's work runs with the joined holding
    result = world.handover.act(holding, deadline(), add)

    # Then TikTok's refusal made the service refresh the grant's own lineage and try once more
    assert result == 7
    assert seen == ["access-new", "access-later"]
    assert world.stored() == ("access-later", "refresh-later")


def test_tokens_just_exchanged_act_as_they_are(world: World) -> None:
    world.tiktok.refreshes.then(exchanged())
    holding = world.handover.take(CALLER, HANDED, deadline())

    assert world.handover.act(holding, deadline(), lambda token: token) == "access-new"
    assert world.journal.calls.count("vault.open") == 0


def test_joining_a_grant_whose_access_token_expires_refreshes_the_grants_lineage(world: World) -> None:
    # Given tokens handed over two hours ago (the grant's access token is expiring)
    world.tiktok.refreshes.then(exchanged()).then(exchanged("access-later", "refresh-later"))
    world.handover.take(CALLER, HANDED, deadline())
    world.clock.advance(7200)

    # When the same tokens are handed over again
    holding = world.handover.take(CALLER, HANDED, deadline())

    # Then the grant's own refresh token was refreshed — the handed one never sent again
    assert holding == Holding("access-later", GRANT, OPENID, joined=True)
    assert [call[1] for call in world.tiktok.refreshes.calls] == ["refresh-caller", "refresh-new"]
    assert world.stored() == ("access-later", "refresh-later")


def test_the_same_refresh_token_handed_again_naming_another_user_changes_nothing(world: World) -> None:
    world.tiktok.refreshes.then(exchanged())
    world.handover.take(CALLER, HANDED, deadline())
    before = world.grants.items[GRANT]

    with pytest.raises(OpenIdMismatchError):
        world.handover.take(
            CALLER, HandedTokens("access-caller", "refresh-caller", "openid-other"), deadline()
        )
    assert world.grants.items[GRANT] == before
    assert world.tiktok.refreshes.count == 1


def test_the_same_refresh_token_handed_by_another_caller_does_not_join(world: World) -> None:
    # Given tokens a caller handed over
    world.tiktok.refreshes.then(exchanged())
    world.handover.take(CALLER, HANDED, deadline())
    before = world.grants.items[GRANT]

    # When another caller hands over the same refresh token
    with pytest.raises(ReauthorizationRequiredError):
        world.handover.take(OTHER_CALLER, HANDED, deadline())

    # Then it gets nothing of the first caller's grant, which is untouched, and no grant of its own; the
    # token TikTok rotated is not sent again
    assert world.grants.items == {GRANT: before}
    assert world.tiktok.refreshes.count == 1


def test_a_refresh_token_handed_again_after_its_grant_was_released_is_not_sent_again(world: World) -> None:
    # Given tokens handed over, whose grant was released since (its requests ended)
    world.tiktok.refreshes.then(exchanged())
    world.handover.take(CALLER, HANDED, deadline())
    world.grants.delete(GRANT)

    # When the same tokens are handed over again; Then only a new consent helps, and TikTok is not sent
    # the refresh token it rotated
    with pytest.raises(ReauthorizationRequiredError):
        world.handover.take(CALLER, HANDED, deadline())
    assert world.tiktok.refreshes.count == 1
    assert world.grants.items == {}


def the_first_handover_is_exchanging(world: World, lease: timedelta = timedelta(seconds=30)) -> str:
    """Another handover of ``HANDED``'s refresh token marked it and is at TikTok; its mark's owner."""
    owner = world.grants.begin_exchange(DIGEST, lease)
    assert owner is not None
    world.journal.calls.clear()
    return owner


def test_a_concurrent_handover_of_the_same_token_waits_for_the_first_and_joins_its_grant(
    world: World,
) -> None:
    # Given a first handover of the same tokens exchanging them at TikTok, which stores its grant while
    # the second one waits
    the_first_handover_is_exchanging(world)

    def the_first_stores() -> None:
        world.tokens.keep(GRANT, CALLER, OPENID, exchanged(), deadline())
        world.grants.remember_handed(DIGEST, GRANT, CALLER)

    world.clock.while_sleeping += [lambda: None, the_first_stores]

    # When the second handover goes on
    holding = world.handover.take(CALLER, HANDED, deadline())

    # Then it never sent the token to TikTok: it waited for the first one's result and joined its grant
    assert holding == Holding("access-new", GRANT, OPENID, joined=True)
    assert world.tiktok.refreshes.count == 0
    assert 0 < sum(world.clock.slept) <= WAIT_FOR_CONCURRENT_HANDOVER_SECONDS
    assert world.stored() == ("access-new", "refresh-new")


def test_a_concurrent_handover_by_another_caller_is_not_joined(world: World) -> None:
    the_first_handover_is_exchanging(world)

    def the_other_stores() -> None:
        other = user_grant_id(OTHER_CALLER, OPENID)
        world.tokens.keep(other, OTHER_CALLER, OPENID, exchanged(), deadline())
        world.grants.remember_handed(DIGEST, other, OTHER_CALLER)

    world.clock.while_sleeping.append(the_other_stores)

    with pytest.raises(ReauthorizationRequiredError):
        world.handover.take(CALLER, HANDED, deadline())
    assert GRANT not in world.grants.items
    assert world.tiktok.refreshes.count == 0


def test_a_concurrent_handover_still_exchanging_after_the_wait_is_answered_in_progress(world: World) -> None:
    # Given a first handover of the same tokens that does not finish while the second one waits
    the_first_handover_is_exchanging(world)

    # When the second one goes on; Then it gives up after its wait: a transient 503 (the caller sends the
    # same body again), TikTok not asked, nothing kept, the first one's mark left to it
    with pytest.raises(TokenRefreshInProgressError) as raised:
        world.handover.take(CALLER, HANDED, deadline())
    assert (raised.value.status, raised.value.is_transient, raised.value.retry_after) == (503, True, "5")
    assert sum(world.clock.slept) == pytest.approx(WAIT_FOR_CONCURRENT_HANDOVER_SECONDS)
    assert world.tiktok.refreshes.count == 0
    assert world.grants.items == {}
    assert DIGEST in world.grants.exchanging


def test_a_concurrent_handover_that_failed_leaves_the_token_to_the_waiting_one(world: World) -> None:
    # Given a first handover whose exchange failed before TikTok acted (it drops its mark) while the
    # second one waits
    owner = the_first_handover_is_exchanging(world)
    world.clock.while_sleeping.append(lambda: world.grants.end_exchange(DIGEST, owner))
    world.tiktok.refreshes.then(exchanged())

    # When the second one goes on; Then it exchanges the token itself and keeps the user's grant
    holding = world.handover.take(CALLER, HANDED, deadline())
    assert holding == Holding("access-new", GRANT, OPENID)
    assert world.tiktok.refreshes.count == 1
    assert world.remembered("refresh-caller") == (GRANT, CALLER)
    assert world.grants.exchanging == {}


def test_the_mark_of_a_handover_that_died_lapses(world: World) -> None:
    # Given a handover that marked the token and died (its mark is never dropped)
    the_first_handover_is_exchanging(world, lease=timedelta(seconds=40))
    world.clock.advance(41)
    world.tiktok.refreshes.then(invalid_grant())

    # When the same tokens are handed over once its mark lapsed; Then the token is exchanged — TikTok
    # refuses it if the dead handover had rotated it — and answered at once
    with pytest.raises(ReauthorizationRequiredError):
        world.handover.take(CALLER, HANDED, deadline())
    assert world.tiktok.refreshes.count == 1
    assert world.clock.slept == []


def test_two_handovers_racing_to_mark_the_token_exchange_it_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two handovers of the same tokens that both found nothing in the registry, the other one
    # marking the token just before this one's conditional put
    mark = world.grants.begin_exchange

    def the_other_marks_first(digest: str, lease: timedelta) -> str | None:
        assert mark(digest, timedelta(seconds=30)) is not None
        monkeypatch.setattr(world.grants, "begin_exchange", mark)
        return mark(digest, lease)

    monkeypatch.setattr(world.grants, "begin_exchange", the_other_marks_first)

    def the_other_stores() -> None:
        world.tokens.keep(GRANT, CALLER, OPENID, exchanged(), deadline())
        world.grants.remember_handed(DIGEST, GRANT, CALLER)

    world.clock.while_sleeping.append(the_other_stores)

    # When this one goes on; Then its put was refused, it waited for the other's result and joined it
    holding = world.handover.take(CALLER, HANDED, deadline())
    assert holding == Holding("access-new", GRANT, OPENID, joined=True)
    assert world.tiktok.refreshes.count == 0


# -- AWS failing after TikTok rotated -------------------------------------------------------------
def test_a_store_failure_after_tiktok_rotated_is_logged_as_a_lost_lineage_and_raises(
    world: World, monkeypatch: pytest.MonkeyPatch, logs: LogCapture
) -> None:
    # Given TikTok exchanging the handed token, and DynamoDB refusing every write of the grant
    world.tiktok.refreshes.then(exchanged())

    def failing(*args: object) -> Grant:
        world.journal.note("grants.adopt")
        raise RecordStoreError("DynamoDB UpdateItem failed: InternalServerError")

    monkeypatch.setattr(world.grants, "adopt", failing)

    # When the tokens are taken
    with pytest.raises(RecordStoreError):
        world.handover.take(CALLER, HANDED, deadline())

    # Then the loss is logged (the user must consent again), nothing is kept nor remembered; the
    # rotated token's exchange mark is left to lapse (never dropped once TikTok rotated it)
    assert logs.find("handed-over tokens not stored: the user's refresh token is lost")
    assert world.grants.items == {}
    assert world.grants.handed_tokens == {}
    assert len(world.grants.exchanging) == 1
    assert "refresh-new" not in "\n".join(logs.lines)


def test_a_handed_token_not_remembered_at_first_is_remembered_at_the_second_try(
    world: World, logs: LogCapture
) -> None:
    world.tiktok.refreshes.then(exchanged())
    world.grants.faults.arm(
        "remember_handed", RecordStoreError("DynamoDB PutItem failed: InternalServerError")
    )

    assert world.handover.take(CALLER, HANDED, deadline()) == Holding("access-new", GRANT, OPENID)
    assert world.stored() == ("access-new", "refresh-new")
    assert world.remembered("refresh-caller") == (GRANT, CALLER)
    assert world.grants.exchanging == {}
    assert logs.find("handed-over token not remembered; trying again")


def test_a_handed_token_never_remembered_keeps_its_exchange_mark_until_it_lapses(
    world: World, logs: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a handover whose exchange succeeds but whose registry write fails every time
    world.tiktok.refreshes.then(exchanged())

    def failing(*args: object) -> None:
        raise RecordStoreError("DynamoDB PutItem failed: InternalServerError")

    monkeypatch.setattr(world.grants, "remember_handed", failing)

    # When the tokens are taken
    holding = world.handover.take(CALLER, HANDED, deadline())

    # Then the grant is kept, and the mark is not dropped: TikTok rotated the token, so nobody may send it
    assert holding == Holding("access-new", GRANT, OPENID)
    assert world.stored() == ("access-new", "refresh-new")
    assert world.grants.handed_tokens == {}
    assert len(world.grants.exchanging) == 1
    assert logs.find("handed-over token not remembered; its exchange mark lapses by itself")

    # And the same token handed over again while the mark holds is not sent to TikTok
    with pytest.raises(TokenRefreshInProgressError):
        world.handover.take(CALLER, HANDED, deadline(seconds=3))
    assert world.tiktok.refreshes.count == 1


def test_the_grants_table_failing_before_tiktok_is_called_changes_nothing(world: World) -> None:
    world.grants.faults.arm("handed", RecordStoreError("DynamoDB GetItem failed: InternalServerError"))

    with pytest.raises(RecordStoreError):
        world.handover.take(CALLER, HANDED, deadline())
    assert world.tiktok.refreshes.count == 0
    assert world.grants.items == {}


def test_a_grant_kept_at_the_second_try_is_the_users(world: World) -> None:
    world.tiktok.refreshes.then(exchanged())
    world.grants.faults.arm("adopt", RecordStoreError("DynamoDB UpdateItem failed: InternalServerError"))

    assert world.handover.take(CALLER, HANDED, deadline()).grant_id == GRANT
    assert world.stored() == ("access-new", "refresh-new")
    assert world.journal.calls.count("grants.adopt") == 2
    assert world.remembered("refresh-caller") == (GRANT, CALLER)


def test_the_exchange_mark_outlives_the_invocation_not_only_its_deadline(world: World) -> None:
    # Given an API invocation with 20 s to its deadline and a 60 s margin (DeadlineMarginSeconds) after it
    world.tiktok.refreshes.then(exchanged())
    marks: list[timedelta] = []
    mark = world.grants.begin_exchange

    def noted(digest: str, lease: timedelta) -> str | None:
        marks.append(lease)
        return mark(digest, lease)

    world.grants.begin_exchange = noted  # type: ignore[method-assign]

    # When tokens are handed over
    world.handover.take(CALLER, HANDED, Deadline.for_invocation(80_000, 60))

    # Then the mark lasts until Lambda ends the invocation and a little after: a handover cannot still
    # be storing its exchange's result after its mark lapsed (another would send the token again)
    (lease,) = marks
    assert lease.total_seconds() == pytest.approx(80 + 30, abs=0.5)
