"""TokenService with in-memory grants, vault and TikTok: a user's refresh lineage over time.

Fresh tokens, refreshes under the lease, the generations that decide which write wins (a new consent
over a refresh in flight, an erasure only at the refused generation), the abandoned-lease rule, the
app's refusals that keep every grant — and, at the end, a hypothesis state machine that interleaves all
of it against a small model of TikTok's rotating refresh tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

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
from tiktok_archive.adapters.grant_items import Grant, Lease, SealedTokens
from tiktok_archive.adapters.grants import user_grant_id
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, REFRESH_TOKEN_PURPOSE
from tiktok_archive.logic import token_refresh
from tiktok_archive.logic.handover import Holding, TokenHandover
from tiktok_archive.logic.token_refresh import (
    ABANDONED_FOR,
    REFRESH_LEASE,
    STORE_ATTEMPTS,
    STORE_WITHIN_SECONDS,
    WAIT_FOR_OTHER_REFRESH_SECONDS,
)
from tiktok_archive.logic.tokens import (
    ASSUMED_ACCESS_LIFETIME,
    FRESH_FOR,
    TokenService,
    handed_access_token,
)
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import (
    AppCredentialsError,
    DeadlineExceededError,
    ReauthorizationRequiredError,
    RecordStoreError,
    ServiceError,
    TokenRefreshInProgressError,
    TokenVaultError,
)
from tiktok_archive.models.portability import AppCredentials, HandedTokens, TokenGrant
from tiktok_archive.models.tiktok_errors import TikTokApiError, UpstreamUnavailableError

CALLER = "arn:aws:sts::123456789012:assumed-role/tiktok-archive-backend"
OPENID = "openid-1"
GRANT = user_grant_id(CALLER, OPENID)
APP_REFUSALS = [
    "invalid_client",
    "unauthorized_client",
    "invalid_scope",
    "access_denied",
    "unsupported_grant_type",
]


class CountedMetrics:
    """Stands in for Powertools' metrics: the names added, in order."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add_metric(self, name: str, unit: object, value: float) -> None:
        self.names.append(name)


@dataclass
class World:
    clock: Clock
    journal: Journal
    grants: FakeGrants
    vault: FakeVault
    tiktok: FakeTikTok
    app: FakeAppCredentials
    metrics: CountedMetrics
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
        abandoned_ago: timedelta | None = None,
    ) -> Grant:
        now = self.clock.now()
        grant = Grant(
            grant_id=GRANT,
            generation="generation-1",
            sealed_access_token=self.seal("access-old"),
            access_expires_at=now + access_left,
            sealed_refresh_token=self.seal(refresh, REFRESH_TOKEN_PURPOSE) if refresh else None,
            refresh_expires_at=now + timedelta(days=100) if refresh else None,
            user_openid=OPENID,
            caller=CALLER,
            refresh_owner="other-invocation" if lease_held_for is not None else None,
            refresh_lease_until=now + lease_held_for if lease_held_for is not None else None,
            abandoned_refresh_at=now - abandoned_ago if abandoned_ago is not None else None,
        )
        self.grants.items[GRANT] = grant
        return grant

    def stored(self) -> tuple[str, str | None] | None:
        """The grant's tokens in the clear: (access, refresh), or None without a grant."""
        grant = self.grants.items.get(GRANT)
        if grant is None:
            return None
        refresh = grant.sealed_refresh_token
        return self.opened(grant.sealed_access_token), (
            self.opened(refresh, REFRESH_TOKEN_PURPOSE) if refresh else None
        )

    def another_invocation_stores(self, access: str, owner: str = "other-invocation") -> None:
        """What another invocation's refresh writes: rotated tokens under a new generation."""
        stored = self.grants.store_refreshed(
            self.grants.items[GRANT], owner, self.sealed(access, "refresh-theirs")
        )
        assert stored

    def sealed(self, access: str, refresh: str) -> SealedTokens:
        return SealedTokens(
            sealed_access_token=self.seal(access),
            access_expires_at=self.clock.now() + timedelta(hours=2),
            sealed_refresh_token=self.seal(refresh, REFRESH_TOKEN_PURPOSE),
            refresh_expires_at=self.clock.now() + timedelta(days=180),
        )

    def new_consent(self, access: str = "access-consent", refresh: str = "refresh-consent") -> None:
        """A handover of the user's new consent: tokens TikTok just exchanged, kept in the grant."""
        self.service.keep(GRANT, CALLER, OPENID, rotated(access, refresh), deadline())


def rotated(
    access: str = "access-new", refresh: str = "refresh-new", open_id: str | None = OPENID
) -> TokenGrant:
    return TokenGrant(access, 7200, refresh, 180 * 86400, open_id, "user.info.basic,portability.all.single")


def tiktok_error(code: str, status: int) -> TikTokApiError:
    return TikTokApiError(code, f"TikTok refused: {code}", log_id=None, upstream_status=status)


def invalid_grant() -> ReauthorizationRequiredError:
    return ReauthorizationRequiredError(
        "TikTok refused the token refresh: invalid_grant", upstream_status=400
    )


def app_refused(code: str = "invalid_client") -> AppCredentialsError:
    return AppCredentialsError(f"TikTok refused the token refresh: {code}", upstream_status=401)


class _Refusing(FakeTikTok):
    """TikTok refusing every refresh token (they were all rotated)."""

    def refresh_tokens(self, app: AppCredentials, refresh_token: str, deadline: Deadline) -> TokenGrant:
        raise invalid_grant()


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    clock = Clock()
    freeze_time(monkeypatch, clock)
    metrics = CountedMetrics()
    monkeypatch.setattr(token_refresh, "metrics", metrics)
    journal = Journal()
    grants = FakeGrants(clock, journal)
    vault = FakeVault(journal)
    tiktok = FakeTikTok(journal)
    app = FakeAppCredentials("app-secret-old", "app-secret-new")
    service = TokenService(grants, vault, tiktok, lambda: app)
    return World(clock, journal, grants, vault, tiktok, app, metrics, service)


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
    before = world.given_grant(access_left=left)
    world.tiktok.refreshes.then(rotated())

    # When a caller uses a token
    def use(token: str) -> str:
        world.journal.note("caller.use")
        return token

    token = world.service.with_access_token(GRANT, deadline(), use)

    # Then TikTok rotated the tokens with the stored refresh token and the app's secret …
    assert token == "access-new"
    assert world.tiktok.refreshes.calls == [("app-secret-old", "refresh-old")]
    # … and both rotated tokens were stored (sealed, under a new generation, lease released)
    # before the caller saw the new access token
    assert (
        world.journal.first("tiktok.refresh_tokens")
        < world.journal.first("grants.store_refreshed")
        < world.journal.first("caller.use")
    )
    grant = world.grants.items[GRANT]
    assert grant.generation not in ("", before.generation)
    assert world.stored() == ("access-new", "refresh-new")
    assert grant.access_expires_at == world.clock.now() + timedelta(seconds=7200)
    assert grant.refresh_expires_at == world.clock.now() + timedelta(days=180)
    assert (grant.refresh_owner, grant.refresh_lease_until, grant.abandoned_refresh_at) == (None, None, None)
    assert (grant.user_openid, grant.caller) == (OPENID, CALLER)


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

    # Then TikTok was not asked to refresh, no lease was taken, and the grant is still there (its
    # request's end releases it)
    assert world.tiktok.refreshes.count == 0
    assert "grants.take_refresh_lease" not in world.journal.calls
    assert world.stored() == ("access-old", None)


def test_tiktok_refusing_the_refresh_erases_the_grant(world: World) -> None:
    # Given an expiring grant whose refresh token TikTok refuses (invalid_grant), no refresh unfinished
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(invalid_grant())

    # When a token is asked for
    with pytest.raises(ReauthorizationRequiredError):
        world.service.access_token(GRANT, deadline())

    # Then the dead tokens are gone
    assert world.stored() is None
    assert world.tiktok.refreshes.calls == [("app-secret-old", "refresh-old")]


def test_a_refused_refresh_uses_the_newer_tokens_when_another_refresh_succeeded_meanwhile(
    world: World,
) -> None:
    # Given an expiring grant, and TikTok slow to refuse our refresh: our lease lapses meanwhile and
    # another invocation refreshes the grant (its rotated refresh token made ours invalid)
    world.given_grant(access_left=timedelta(minutes=5))

    def another_refresh_succeeds() -> None:
        world.clock.advance(120)
        lease = world.grants.take_refresh_lease(world.grants.items[GRANT], REFRESH_LEASE)
        assert lease is not None
        world.another_invocation_stores("access-theirs", lease.owner)

    world.tiktok.refreshes.then(invalid_grant(), meanwhile=another_refresh_succeeds)

    # When a token is asked for
    token = world.service.access_token(GRANT, deadline())

    # Then the other invocation's token is used and its grant kept
    assert token == "access-theirs"
    assert world.stored() == ("access-theirs", "refresh-theirs")
    assert "grants.erase_refused" not in world.journal.calls


def test_a_refused_refresh_keeps_a_new_consent_given_meanwhile(world: World) -> None:
    # Given an expiring grant whose refresh TikTok refuses, and the user's new consent handed over while
    # TikTok answered (a new generation)
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(invalid_grant(), meanwhile=world.new_consent)

    # When a token is asked for
    token = world.service.access_token(GRANT, deadline())

    # Then the refusal was of the older lineage: the new consent's grant stands, and its token serves
    assert token == "access-consent"
    assert world.stored() == ("access-consent", "refresh-consent")


def test_a_refusal_after_a_request_joined_the_grant_still_ends_the_refused_lineage(world: World) -> None:
    # Given an expiring grant whose refresh TikTok refuses, and another request joining the grant while
    # TikTok answered (a new generation, the same tokens: the same refresh token handed over again)
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(invalid_grant(), meanwhile=lambda: world.grants.touch(GRANT))

    # When a token is asked for; Then only a new consent helps: the tokens the grant holds are the ones
    # TikTok refused, and an expiring access token is no answer to a refused refresh
    with pytest.raises(ReauthorizationRequiredError):
        world.service.access_token(GRANT, deadline())
    assert world.stored() is None


def test_a_failed_refresh_gives_the_lease_back_and_changes_nothing(world: World) -> None:
    # Given an expiring grant and TikTok unreachable
    before = world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(UpstreamUnavailableError("TikTok did not answer"))

    # When a token is asked for
    with pytest.raises(UpstreamUnavailableError):
        world.service.access_token(GRANT, deadline())

    # Then the grant is as it was, lease released, so that the next try can refresh at once
    assert world.grants.items[GRANT] == before


def test_a_refresh_token_that_does_not_open_gives_the_lease_back(world: World) -> None:
    # Given an expiring grant, and KMS failing to open its refresh token
    before = world.given_grant(access_left=timedelta(minutes=5))
    world.vault.faults.arm("open", TokenVaultError("KMS Decrypt failed: ThrottlingException"))

    # When a token is asked for
    with pytest.raises(TokenVaultError):
        world.service.access_token(GRANT, deadline())

    # Then TikTok was not asked and the lease is free again: nothing marks this refresh as one that may
    # have rotated the token (it never reached TikTok)
    assert world.tiktok.refreshes.count == 0
    assert world.grants.items[GRANT] == before


# -- the abandoned lease --------------------------------------------------------------------------
def test_a_lapsed_lease_is_taken_over_and_marked_abandoned_while_the_refresh_runs(world: World) -> None:
    # Given an expiring grant whose last refresh took the lease and neither stored nor gave it back
    world.given_grant(access_left=timedelta(minutes=5), lease_held_for=REFRESH_LEASE)
    began = world.clock.now()
    world.clock.advance(REFRESH_LEASE.total_seconds() + 5)
    marked: list[Grant] = []
    world.tiktok.refreshes.then(rotated(), meanwhile=lambda: marked.append(world.grants.items[GRANT]))

    # When a token is asked for
    assert world.service.access_token(GRANT, deadline()) == "access-new"

    # Then the lease was taken over, marked abandoned at the other refresh's start while this one ran …
    assert marked[0].abandoned_refresh_at == began
    assert marked[0].refresh_owner not in (None, "other-invocation")
    # … and the refresh token accepted (the other refresh never reached TikTok): stored, the mark cleared
    assert world.tiktok.refreshes.calls == [("app-secret-old", "refresh-old")]
    assert world.stored() == ("access-new", "refresh-new")
    assert world.grants.items[GRANT].abandoned_refresh_at is None


def test_an_invalid_grant_after_an_abandoned_lease_keeps_the_grant_and_comes_back_later(world: World) -> None:
    # Given an expiring grant whose last refresh abandoned its lease a minute ago (it may have rotated the
    # token at TikTok and still be about to store the new one)
    world.given_grant(access_left=timedelta(minutes=5), lease_held_for=REFRESH_LEASE)
    world.clock.advance(REFRESH_LEASE.total_seconds() + 1)
    world.tiktok.refreshes.then(invalid_grant())

    # When a token is asked for
    with pytest.raises(TokenRefreshInProgressError) as raised:
        world.service.access_token(GRANT, deadline())

    # Then the refusal is not taken for the user's: the grant and its tokens are kept, the lease is free,
    # the abandonment remembered, and the work comes back later
    assert raised.value.is_transient
    grant = world.grants.items[GRANT]
    assert world.stored() == ("access-old", "refresh-old")
    assert (grant.refresh_owner, grant.refresh_lease_until) == (None, None)
    assert grant.abandoned_refresh_at is not None


def test_the_abandoned_refresh_storing_late_wins_over_the_refusal(world: World) -> None:
    # Given a refresh that abandoned its lease after TikTok rotated the token, and a second refresh,
    # refused, while the first finally stores (conditionally on the generation it read)
    first = world.given_grant(access_left=timedelta(minutes=5), lease_held_for=REFRESH_LEASE)
    world.clock.advance(REFRESH_LEASE.total_seconds() + 1)

    def the_first_stores_late() -> None:
        generation = world.grants.store_refreshed(
            first, "other-invocation", world.sealed("access-late", "refresh-late")
        )
        assert generation is not None

    world.tiktok.refreshes.then(invalid_grant(), meanwhile=the_first_stores_late)

    # When the second asks for a token
    token = world.service.access_token(GRANT, deadline())

    # Then the late tokens are the grant's and serve
    assert token == "access-late"
    assert world.stored() == ("access-late", "refresh-late")


def test_an_invalid_grant_long_after_the_abandoned_lease_erases_the_grant(world: World) -> None:
    # Given a grant marked abandoned 16 minutes ago (no invocation that took that lease is alive)
    world.given_grant(access_left=timedelta(minutes=5), abandoned_ago=ABANDONED_FOR)
    world.tiktok.refreshes.then(invalid_grant())

    # When a token is asked for and TikTok refuses the refresh token
    with pytest.raises(ReauthorizationRequiredError):
        world.service.access_token(GRANT, deadline())

    # Then the refusal is the user's: the grant is erased
    assert world.stored() is None


def test_a_later_abandoned_refresh_protects_the_grant_though_an_older_one_was_marked(world: World) -> None:
    # Given a grant marked abandoned 20 minutes ago (that refresh is dead), then another refresh that took
    # the lease a minute ago, rotated the token at TikTok and stalls (it is alive: its lease just lapsed)
    world.given_grant(
        access_left=timedelta(minutes=5),
        abandoned_ago=timedelta(minutes=20),
        lease_held_for=-timedelta(seconds=1),
    )
    world.tiktok.refreshes.then(invalid_grant())

    # When the next refresh is refused
    with pytest.raises(TokenRefreshInProgressError):
        world.service.access_token(GRANT, deadline())

    # Then the refusal is counted from the latest abandoned refresh, not the first: the grant is kept for
    # the stalled refresh to store its tokens into
    assert world.stored() == ("access-old", "refresh-old")
    started = world.clock.now() - timedelta(seconds=1) - REFRESH_LEASE
    assert world.grants.items[GRANT].abandoned_refresh_at == started


def test_an_abandoned_lease_marked_earlier_still_protects_the_grant_within_its_window(world: World) -> None:
    # Given a grant marked abandoned 10 minutes ago by a refresh since refused (the lease is free)
    world.given_grant(access_left=timedelta(minutes=5), abandoned_ago=timedelta(minutes=10))
    world.tiktok.refreshes.then(invalid_grant())

    # When the next refresh is refused too; Then the grant is still kept
    with pytest.raises(TokenRefreshInProgressError):
        world.service.access_token(GRANT, deadline())
    assert world.stored() == ("access-old", "refresh-old")


# -- a new consent during a refresh ----------------------------------------------------------------
def test_a_new_consent_during_a_refresh_wins_and_the_refresh_loses_its_store(world: World) -> None:
    # Given an expiring grant being refreshed, and the user's new consent handed over meanwhile
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(rotated(), meanwhile=world.new_consent)

    # When the refresh ends
    token = world.service.access_token(GRANT, deadline())

    # Then the refresh's access token still serves the call it was made for, but the grant holds the
    # new consent's lineage: the older one's rotated tokens were not written over it
    assert token == "access-new"
    assert world.stored() == ("access-consent", "refresh-consent")
    grant = world.grants.items[GRANT]
    assert (grant.refresh_owner, grant.refresh_lease_until) == (None, None)


def test_a_grant_deleted_during_a_refresh_stays_deleted(world: World) -> None:
    # Given an expiring grant being refreshed while its last request ends (the grant is released)
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(rotated(), meanwhile=lambda: world.grants.delete(GRANT))

    # When the refresh ends
    token = world.service.access_token(GRANT, deadline())

    # Then its token serves the call at hand, and the rotated tokens are not written back
    assert token == "access-new"
    assert world.stored() is None


def test_a_request_joining_during_a_refresh_keeps_the_refreshed_tokens(world: World) -> None:
    # Given an expiring grant being refreshed while another request joins the grant (a new generation)
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(rotated(), meanwhile=lambda: world.grants.touch(GRANT))

    # When the refresh ends; Then its rotated tokens are stored (the refresh still holds the lease)
    assert world.service.access_token(GRANT, deadline()) == "access-new"
    assert world.stored() == ("access-new", "refresh-new")


def test_a_late_refresh_stores_its_tokens_after_a_request_joined_and_its_lease_lapsed(world: World) -> None:
    # Given a refresh that stalls after TikTok rotated the token (its lease lapses), a request that joins
    # the grant meanwhile, and another invocation whose refresh TikTok refuses (the token is rotated)
    world.given_grant(access_left=timedelta(minutes=5))

    def stall_while_others_work() -> None:
        world.clock.advance(REFRESH_LEASE.total_seconds() + 1)
        world.grants.touch(GRANT)
        other = TokenService(world.grants, world.vault, _Refusing(world.journal), lambda: world.app)
        with pytest.raises(TokenRefreshInProgressError):
            other.access_token(GRANT, deadline())

    world.tiktok.refreshes.then(rotated(), meanwhile=stall_while_others_work)

    # When the stalled refresh goes on
    assert world.service.access_token(GRANT, deadline()) == "access-new"

    # Then its rotated tokens are the grant's: it held the only live refresh token
    assert world.stored() == ("access-new", "refresh-new")


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

    # Then it waited once and used the other's token — without refreshing itself (its refresh token was
    # about to stop working)
    assert token == "access-theirs"
    assert world.clock.slept == [0.25]
    assert world.tiktok.refreshes.count == 0


def test_a_request_joining_while_another_refreshes_does_not_end_the_wait_early(world: World) -> None:
    # Given an expired grant that another invocation is refreshing, a request joining the grant (a new
    # generation, the same tokens), then the other's tokens stored
    world.given_grant(access_left=-timedelta(minutes=1), lease_held_for=timedelta(seconds=60))
    world.clock.while_sleeping += [
        lambda: world.grants.touch(GRANT),
        lambda: world.another_invocation_stores("access-theirs"),
    ]

    # When a token is asked for; Then it is the other's fresh one, not the expired one it started from
    assert world.service.access_token(GRANT, deadline()) == "access-theirs"
    assert world.tiktok.refreshes.count == 0


def test_a_lease_lapsing_within_the_current_second_is_waited_for_not_spun_on(world: World) -> None:
    # Given an expired grant whose lease lapses at this very second: the lease's condition (to the whole
    # second) does not let anyone take it before the next one
    world.given_grant(access_left=-timedelta(minutes=1), lease_held_for=timedelta(0))
    world.tiktok.refreshes.then(rotated())

    # When a token is asked for
    token = world.service.access_token(GRANT, deadline())

    # Then it waited for the lease to lapse (a second at most) and took it once it could
    assert token == "access-new"
    assert 0 < sum(world.clock.slept) <= 1.0
    assert world.journal.calls.count("grants.take_refresh_lease") == 2


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
    before = world.given_grant(access_left=-timedelta(minutes=1), lease_held_for=timedelta(seconds=60))
    world.clock.while_sleeping.append(lambda: world.grants.release_refresh_lease(GRANT, "other-invocation"))
    world.tiktok.refreshes.then(rotated())

    # When a token is asked for
    token = world.service.access_token(GRANT, deadline())

    # Then this invocation refreshed it itself, with the grant's refresh token
    assert token == "access-new"
    assert world.tiktok.refreshes.calls == [("app-secret-old", "refresh-old")]
    assert world.grants.items[GRANT].generation != before.generation
    assert world.stored() == ("access-new", "refresh-new")


def test_a_grant_erased_by_the_other_invocation_requires_reauthorization(world: World) -> None:
    # Given a lease held by another invocation, whose refresh TikTok refuses (it erases the grant)
    world.given_grant(access_left=-timedelta(minutes=1), lease_held_for=timedelta(seconds=60))
    world.clock.while_sleeping.append(lambda: world.grants.erase_refused(world.grants.items[GRANT]))

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


def test_a_refresh_answering_another_user_than_the_grants_is_logged_as_an_error(
    world: World, logs: LogCapture
) -> None:
    # Given a user's grant whose refresh answer names another open_id (TikTok never should)
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(rotated(open_id="openid-2"))

    # When it refreshes: the tokens are the lineage's and go on serving the grant's requests
    assert world.service.access_token(GRANT, deadline()) == "access-new"

    # Then an operator learns of it; the grant still names the user it was made for
    assert logs.find("TikTok's refresh answer names another user than the grant's")
    assert world.grants.items[GRANT].user_openid == OPENID


# -- storing the rotated tokens -------------------------------------------------------------------
def test_rotated_tokens_not_stored_at_first_are_stored_on_the_second_try(world: World) -> None:
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(rotated())
    world.grants.faults.arm(
        "store_refreshed", RecordStoreError("DynamoDB UpdateItem failed: InternalServerError")
    )

    assert world.service.access_token(GRANT, deadline()) == "access-new"
    assert world.stored() == ("access-new", "refresh-new")


def test_rotated_tokens_that_cannot_be_stored_are_reported_as_lost(
    world: World, monkeypatch: pytest.MonkeyPatch, logs: LogCapture
) -> None:
    # Given TikTok rotating the tokens, and DynamoDB refusing every write of them
    before = world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(rotated())

    def failing(*args: object) -> str | None:
        world.journal.note("grants.store_refreshed")
        raise RecordStoreError("DynamoDB UpdateItem failed: InternalServerError")

    monkeypatch.setattr(world.grants, "store_refreshed", failing)

    # When a token is asked for
    with pytest.raises(RecordStoreError):
        world.service.access_token(GRANT, deadline())

    # Then it was tried STORE_ATTEMPTS times, and the loss is logged (without the token). The lease is
    # left to lapse: the next refresh, refused, is told apart from the user's refusal for a while
    assert world.journal.calls.count("grants.store_refreshed") == STORE_ATTEMPTS
    assert logs.find("rotated tokens not stored: the user's refresh token is lost")
    assert "refresh-new" not in "\n".join(logs.lines)
    grant = world.grants.items[GRANT]
    assert grant.refresh_owner is not None
    assert dataclasses.replace(grant, refresh_owner=None, refresh_lease_until=None) == before


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

    # Then it was tried once more, with a refreshed (and stored) token
    assert (result, seen) == ("done", ["access-old", "access-new"])
    assert world.tiktok.refreshes.calls == [("app-secret-old", "refresh-old")]
    assert world.stored() == ("access-new", "refresh-new")


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
    assert world.stored() == ("access-theirs", "refresh-theirs")


def test_a_token_refused_after_a_new_consent_uses_the_new_consents_token(world: World) -> None:
    world.given_grant()
    seen: list[str] = []

    def use(token: str) -> str:
        seen.append(token)
        if token == "access-old":
            world.new_consent()
            raise tiktok_error("access_token_invalid", 401)
        return "done"

    assert world.service.with_access_token(GRANT, deadline(), use) == "done"
    assert seen == ["access-old", "access-consent"]
    assert world.tiktok.refreshes.count == 0


def test_a_token_refused_after_a_request_joined_the_grant_is_refreshed(world: World) -> None:
    # Given a fresh-looking token that TikTok refuses, and another request joining the grant meanwhile
    # (a new generation, but the same tokens)
    world.given_grant()
    world.tiktok.refreshes.then(rotated())
    seen: list[str] = []

    def use(token: str) -> str:
        seen.append(token)
        if token == "access-old":
            world.grants.touch(GRANT)
            raise tiktok_error("access_token_invalid", 401)
        return "done"

    # When the work is done with a token
    result = world.service.with_access_token(GRANT, deadline(), use)

    # Then the refused token is not tried again: the grant's tokens are refreshed
    assert (result, seen) == ("done", ["access-old", "access-new"])
    assert world.tiktok.refreshes.calls == [("app-secret-old", "refresh-old")]


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
    assert world.tiktok.refreshes.count == 1


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


# -- the app's refusals ---------------------------------------------------------------------------
def test_app_credentials_refused_on_the_first_refresh_reads_the_secret_fresh_once(world: World) -> None:
    # Given an expiring grant, and an app secret rotated since it was cached (TikTok: invalid_client)
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(app_refused())
    world.tiktok.refreshes.then(rotated())

    # When a token is asked for
    token = world.service.access_token(GRANT, deadline())

    # Then the secret was read fresh once and the refresh sent again with it (TikTok refused the app, not
    # the refresh token: it did not rotate); nothing is counted as the app's refusal
    assert token == "access-new"
    assert world.app.reads == [False, True]
    assert world.tiktok.refreshes.calls == [
        ("app-secret-old", "refresh-old"),
        ("app-secret-new", "refresh-old"),
    ]
    assert world.metrics.names == []


@pytest.mark.parametrize("code", APP_REFUSALS)
def test_an_app_level_oauth_refusal_keeps_the_grant_and_is_counted(world: World, code: str) -> None:
    # Given an expiring grant, and TikTok refusing the app itself (with the fresh secret too)
    before = world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(app_refused(code)).then(app_refused(code))

    # When a token is asked for
    with pytest.raises(AppCredentialsError) as raised:
        world.service.access_token(GRANT, deadline())

    # Then the work comes back (transient, an operator's fix), the grant is exactly as it was (lease
    # released), and the refusal is counted for the alarm
    assert raised.value.is_transient
    assert world.grants.items[GRANT] == before
    assert world.metrics.names == ["AppRefused"]
    assert "grants.erase_refused" not in world.journal.calls


def test_checks_resume_once_the_app_is_fixed(world: World) -> None:
    # Given a grant refused as the app's (twice), then the operator's fix
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(app_refused()).then(app_refused()).then(rotated())
    with pytest.raises(AppCredentialsError):
        world.service.access_token(GRANT, deadline())

    # When the work comes back; Then the same refresh token refreshes, and the lineage goes on
    assert world.service.access_token(GRANT, deadline()) == "access-new"
    assert [call[1] for call in world.tiktok.refreshes.calls] == ["refresh-old"] * 3
    assert world.stored() == ("access-new", "refresh-new")


def test_a_malformed_app_secret_is_not_counted_as_tiktoks_refusal(world: World) -> None:
    # Given the app's secret unreadable (no TikTok answer behind the error)
    world.given_grant(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(AppCredentialsError("the secret is not JSON")).then(
        AppCredentialsError("the secret is not JSON")
    )

    # When a token is asked for; Then it fails as the app's, uncounted, the grant kept
    with pytest.raises(AppCredentialsError):
        world.service.access_token(GRANT, deadline())
    assert world.metrics.names == []
    assert world.stored() == ("access-old", "refresh-old")


# -- handed-over tokens ---------------------------------------------------------------------------
def test_a_handed_refresh_token_is_exchanged_and_nothing_stored(world: World) -> None:
    # Given a refresh token a caller handed over
    world.tiktok.refreshes.then(rotated("access-exchanged", "refresh-exchanged", open_id="openid-9"))

    # When it is exchanged
    fresh = world.service.refresh_handed("refresh-handed", deadline())

    # Then TikTok's answer comes back as it was (naming its user); no grant was touched
    assert (fresh.access_token, fresh.refresh_token, fresh.open_id) == (
        "access-exchanged",
        "refresh-exchanged",
        "openid-9",
    )
    assert world.tiktok.refreshes.calls == [("app-secret-old", "refresh-handed")]
    assert world.grants.items == {}
    assert not [call for call in world.journal.calls if call.startswith("grants.")]


def test_a_handed_refresh_token_tiktok_refuses_requires_reauthorization(world: World) -> None:
    world.tiktok.refreshes.then(invalid_grant())
    with pytest.raises(ReauthorizationRequiredError):
        world.service.refresh_handed("refresh-handed", deadline())
    assert world.metrics.names == []


def test_a_handed_refresh_token_refused_as_the_apps_is_counted(world: World) -> None:
    world.tiktok.refreshes.then(app_refused("unauthorized_client")).then(app_refused("unauthorized_client"))
    with pytest.raises(AppCredentialsError):
        world.service.refresh_handed("refresh-handed", deadline())
    assert world.metrics.names == ["AppRefused"]


def test_kept_tokens_are_sealed_for_their_grant_and_counted_from_now(world: World) -> None:
    # When tokens TikTok just issued are kept
    grant = world.service.keep(GRANT, CALLER, OPENID, rotated("access-kept", "refresh-kept"), deadline())

    # Then they are sealed (no plain token in the grant) and open only as this grant's
    assert grant == world.grants.items[GRANT]
    assert "access-kept" not in repr(dataclasses.astuple(grant))
    assert "refresh-kept" not in repr(dataclasses.astuple(grant))
    assert world.stored() == ("access-kept", "refresh-kept")
    assert grant.access_expires_at == world.clock.now() + timedelta(seconds=7200)
    assert grant.refresh_expires_at == world.clock.now() + timedelta(days=180)
    assert (grant.caller, grant.user_openid) == (CALLER, OPENID)
    assert world.service.find(GRANT) == grant


def test_an_access_token_kept_alone_lives_its_assumed_lifetime(world: World) -> None:
    # When a request's access token is kept without a refresh token
    grant = world.service.keep("request 7", CALLER, None, handed_access_token("access-alone"), deadline())

    # Then the grant holds it alone, counted from now, for no user
    assert grant.sealed_refresh_token is None
    assert grant.user_openid is None
    assert grant.access_expires_at == world.clock.now() + ASSUMED_ACCESS_LIFETIME
    assert world.vault.open(
        grant.sealed_access_token or "", ACCESS_TOKEN_PURPOSE, {"grant_id": "request 7"}
    ) == ("access-alone")


@pytest.mark.parametrize(
    ("fresh", "lives_for"),
    [
        (rotated(), timedelta(days=180) + timedelta(days=1)),
        (handed_access_token("access-alone"), ASSUMED_ACCESS_LIFETIME + timedelta(days=1)),
    ],
    ids=["with-refresh-token", "access-token-alone"],
)
def test_a_grant_lives_as_long_as_what_it_holds(
    world: World, monkeypatch: pytest.MonkeyPatch, fresh: TokenGrant, lives_for: timedelta
) -> None:
    # Given the tokens written (their expiry is the grant's TTL)
    written: list[SealedTokens] = []
    adopt = world.grants.adopt

    def recording(grant_id: str, caller: str, user_openid: str | None, tokens: SealedTokens) -> Grant:
        written.append(tokens)
        return adopt(grant_id, caller, user_openid, tokens)

    monkeypatch.setattr(world.grants, "adopt", recording)

    # When they are kept; Then the grant lives a day past its refresh token (its access token, alone)
    world.service.keep(GRANT, CALLER, OPENID, fresh, deadline())
    assert [tokens.lives_until for tokens in written] == [world.clock.now() + lives_for]


def test_a_new_consent_replaces_the_lineage_and_calls_off_the_lease_and_an_erasure(world: World) -> None:
    # Given a grant being refreshed, with an abandoned refresh behind it, being erased
    before = world.given_grant(lease_held_for=REFRESH_LEASE, abandoned_ago=timedelta(minutes=3))
    world.grants.items[GRANT] = dataclasses.replace(before, erasing=True)

    # When the user's new consent is kept
    world.new_consent()

    # Then the grant holds the new lineage under a new generation, free of lease, abandonment and erasure
    grant = world.grants.items[GRANT]
    assert world.stored() == ("access-consent", "refresh-consent")
    assert grant.generation != before.generation
    assert (grant.refresh_owner, grant.refresh_lease_until, grant.abandoned_refresh_at) == (None, None, None)
    assert not grant.erasing


def test_tokens_not_kept_at_first_are_kept_on_the_second_try(world: World) -> None:
    world.grants.faults.arm("adopt", RecordStoreError("DynamoDB UpdateItem failed: InternalServerError"))
    world.new_consent()
    assert world.stored() == ("access-consent", "refresh-consent")
    assert world.journal.calls.count("grants.adopt") == 2


@pytest.mark.parametrize(("refresh", "lost"), [("refresh-consent", True), ("", False)])
def test_tokens_that_cannot_be_kept_are_reported_lost_when_a_refresh_token_was_among_them(
    world: World, monkeypatch: pytest.MonkeyPatch, logs: LogCapture, refresh: str, lost: bool
) -> None:
    def failing(*args: object) -> Grant:
        world.journal.note("grants.adopt")
        raise RecordStoreError("DynamoDB UpdateItem failed: InternalServerError")

    monkeypatch.setattr(world.grants, "adopt", failing)

    with pytest.raises(RecordStoreError):
        world.service.keep(GRANT, CALLER, OPENID, rotated("access-consent", refresh), deadline())
    assert world.journal.calls.count("grants.adopt") == STORE_ATTEMPTS
    found = logs.find("handed-over tokens not stored: the user's refresh token is lost")
    assert bool(found) is lost
    assert world.stored() is None


def test_a_sealed_token_lifted_into_another_grant_does_not_open(world: World) -> None:
    # Given another user's grant holding a copy of this grant's sealed access token
    world.given_grant()
    other = user_grant_id(CALLER, "someone-else")
    world.grants.items[other] = dataclasses.replace(world.grants.items[GRANT], grant_id=other)

    # When a token of that grant is asked for; Then it does not open, and only a new consent helps
    with pytest.raises(ReauthorizationRequiredError, match="cannot be opened"):
        world.service.access_token(other, deadline())


def test_delete_at_a_generation_spares_a_grant_that_moved_on(world: World) -> None:
    # Given a grant read by a release, then the user's new consent
    read = world.given_grant()
    world.new_consent()

    # When the release deletes at the generation it read; Then the new consent's grant stays
    assert world.service.delete(GRANT, generation=read.generation) is False
    assert world.stored() == ("access-consent", "refresh-consent")

    # And a delete at the current generation (or at none: an erasure) removes it, once
    current = world.grants.items[GRANT].generation
    assert world.service.delete(GRANT, generation=current) is True
    assert (world.service.delete(GRANT), world.service.find(GRANT)) == (False, None)


# -- the lineage under any interleaving (hypothesis) ----------------------------------------------
class Killed(BaseException):
    """A parked invocation ended at the test's teardown (it never ran again during the test)."""


class Invocation:
    """One Lambda invocation, run on a thread of its own but never at the same time as the test.

    ``step`` runs it until it ends or parks; it parks at most once, inside TikTok's refresh call: before
    TikTok acts (``"before"``) or after TikTok rotated the token and answered (``"after"``: the stall of
    an invocation whose lease lapses before it stores). A parked invocation may be resumed later, or die.
    """

    def __init__(
        self,
        name: str,
        work: Callable[[], object],
        park_at: str | None,
        started: float,
        lifetime: float,
    ) -> None:
        self.name = name
        self.park_at = park_at
        self.started = started
        self.lifetime = lifetime  # Lambda ends it then: no code of it runs later
        self.rotations: list[tuple[str, str]] = []  # (refresh token sent, the one TikTok answered)
        self.registry_read: dict[str, float] = {}  # digests remembered (or marked) when it began → until
        self.stored_when_leased: set[str] = set()  # the refresh tokens ever stored when it took the lease
        self.error: BaseException | None = None
        self.done = False
        self._killed = False
        self._work = work
        self._turn = threading.Semaphore(0)
        self._back = threading.Semaphore(0)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._turn.acquire()
        try:
            self._work()
        except BaseException as error:  # judged by the test
            self.error = error
        finally:
            self.done = True
            self._back.release()

    def step(self) -> None:
        self._turn.release()
        assert self._back.acquire(timeout=10), f"{self.name} neither ended nor parked"

    def park(self) -> None:
        """Called on the invocation's own thread: hand control back until resumed."""
        self.park_at = None
        self._back.release()
        self._turn.acquire()
        if self._killed:
            raise Killed

    def kill(self) -> None:
        self._killed = True
        self.step()
        self._thread.join(timeout=10)


class OAuthModel:
    """TikTok's token endpoint, reduced to rotation: every consent starts a lineage, whose one live refresh
    token each refresh replaces; any other refresh token is refused (``invalid_grant``)."""

    def __init__(self) -> None:
        self.lineage_of: dict[str, int] = {}
        self.current: dict[int, str] = {}
        self.successor: dict[str, str] = {}
        self.refused: set[str] = set()
        self.access_lifetime: dict[int, int] = {}  # seconds, by lineage
        self.app_refusals = 0  # the next refreshes TikTok refuses as the app's
        self.rate_limited = False

    def consent(self, access_lifetime: int) -> str:
        lineage = len(self.current) + 1
        self.access_lifetime[lineage] = access_lifetime
        return self._issue(lineage)

    def is_live(self, token: str) -> bool:
        lineage = self.lineage_of.get(token)
        return lineage is not None and self.current[lineage] == token

    def exchange(self, token: str) -> TokenGrant:
        if not self.is_live(token):
            self.refused.add(token)
            raise invalid_grant()
        lineage = self.lineage_of[token]
        new = self._issue(lineage)
        self.successor[token] = new
        lifetime = self.access_lifetime[lineage]
        return TokenGrant(f"act.{new}", lifetime, new, 180 * 86400, OPENID, "portability.all.single")

    def _issue(self, lineage: int) -> str:
        token = f"rft.{lineage}.{len(self.lineage_of) + 1}"
        self.lineage_of[token] = lineage
        self.current[lineage] = token
        return token


class RotatingTikTok(FakeTikTok):
    """TikTok's OAuth answering from the model, as seen by the invocation running now."""

    def __init__(self, journal: Journal, machine: LineageMachine) -> None:
        super().__init__(journal)
        self._machine = machine

    def refresh_tokens(self, app: AppCredentials, refresh_token: str, deadline: Deadline) -> TokenGrant:
        invocation = self._machine.running
        if invocation.park_at == "before":
            invocation.park()
        if deadline.expired():  # the real client's budget: nothing is sent once the deadline passed
            raise DeadlineExceededError("the invocation's time budget ran out before the refresh")
        model = self._machine.model
        if model.app_refusals > 0:
            model.app_refusals -= 1
            raise app_refused("unauthorized_client")
        if model.rate_limited:
            model.rate_limited = False
            raise tiktok_error("rate_limit_exceeded", 429)
        self._machine.judge_send(refresh_token)
        answer = model.exchange(refresh_token)
        invocation.rotations.append((refresh_token, answer.refresh_token))
        if invocation.park_at == "after":
            invocation.park()
        return answer


class ObservedGrants(FakeGrants):
    """The grants fake, failing its next calls on demand and telling the machine what it stores."""

    def __init__(self, clock: Clock, journal: Journal, machine: LineageMachine) -> None:
        super().__init__(clock, journal)
        self._machine = machine
        self.failing: dict[str, int] = {}

    def _call(self, method: str) -> None:
        super()._call(method)
        if self.failing.get(method, 0) > 0:
            self.failing[method] -= 1
            raise RecordStoreError(f"DynamoDB {method} failed: InternalServerError")

    def adopt(self, grant_id: str, caller: str, user_openid: str | None, tokens: SealedTokens) -> Grant:
        grant = super().adopt(grant_id, caller, user_openid, tokens)
        self._machine.stored(grant, adopted=True)
        return grant

    def take_refresh_lease(self, grant: Grant, lease: timedelta) -> Lease | None:
        taken = super().take_refresh_lease(grant, lease)
        if taken is not None:
            self._machine.running.stored_when_leased = set(self._machine.ever_stored)
        return taken

    def store_refreshed(self, grant: Grant, owner: str, tokens: SealedTokens) -> str | None:
        generation = super().store_refreshed(grant, owner, tokens)
        if generation is not None:
            self._machine.stored(self.items[grant.grant_id], adopted=False)
        return generation

    def erase_refused(self, grant: Grant) -> bool:
        current = self.items.get(grant.grant_id)
        erased = super().erase_refused(grant)
        if erased and current is not None:
            self._machine.erased(current)
        return erased


PARKS = st.sampled_from([None, None, "before", "after"])
REFRESH_PARKS = st.sampled_from([None, "before", "after", "after"])
LAMBDA_LIFETIME = 15 * 60.0
# A handover is an API call: Lambda ends it at its deadline plus the margin (the API function's timeout).
HANDOVER_DEADLINE, HANDOVER_MARGIN = 30.0, 10.0
FRESH_SECONDS = int(FRESH_FOR.total_seconds())


class LineageMachine(RuleBasedStateMachine):
    """Adds, refreshes, stalls, deaths, lapsing leases and AWS failures, against :class:`OAuthModel`.

    Invariants: no refresh token whose successor the service stored (or whose handover it remembered) is
    ever sent to TikTok again; the grant holds the newest consent's lineage, at its live refresh token
    unless that token's successor is lost (an invocation died, or AWS refused to store it); only a
    refresh token TikTok refused, with no live invocation still holding its successor, ends the grant.
    """

    handed = Bundle("handed")

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self._patch = pytest.MonkeyPatch()
        freeze_time(self._patch, self.clock)
        self.metrics = CountedMetrics()
        self._patch.setattr(token_refresh, "metrics", self.metrics)
        journal = Journal()
        self.model = OAuthModel()
        self.grants = ObservedGrants(self.clock, journal, self)
        self.vault = FakeVault(journal)
        self._reader = FakeVault(Journal())  # opens what the grants hold without touching the faults
        app = FakeAppCredentials("app-secret")
        self.tokens = TokenService(self.grants, self.vault, RotatingTikTok(journal, self), lambda: app)
        self.handover = TokenHandover(self.tokens, self.grants)
        self.ever_stored: set[str] = set()
        self.newest_lineage: int | None = None
        self.parked: list[Invocation] = []
        self.dead: list[Invocation] = []
        self.running: Invocation
        self.violations: list[str] = []
        self.app_refused = 0  # invocations that ended on TikTok's refusal of the app

    # -- what the fakes report ---------------------------------------------------------------------
    def _refresh_of(self, grant: Grant) -> str | None:
        sealed = grant.sealed_refresh_token
        return (
            self._reader.open(sealed, REFRESH_TOKEN_PURPOSE, {"grant_id": grant.grant_id}) if sealed else None
        )

    def stored(self, grant: Grant, *, adopted: bool) -> None:
        token = self._refresh_of(grant)
        if token is None:
            return
        self.ever_stored.add(token)
        if adopted and grant.grant_id == GRANT:
            self.newest_lineage = self.model.lineage_of[token]

    def judge_send(self, token: str) -> None:
        """A refresh token on its way to TikTok: never one the service knows is rotated."""
        if self.model.is_live(token):
            return
        successor = self.model.successor.get(token)
        if token in self.ever_stored:  # from a grant
            # (A refresh that took the lease before a stalled one stored the successor cannot know.)
            if successor in self.running.stored_when_leased:
                self.violations.append(f"replayed {token}: the service had stored its successor {successor}")
        elif (
            self.running.registry_read.get(hashlib.sha256(token.encode()).hexdigest(), 0)
            > self.clock.now().timestamp()
        ):
            # (A handover that read the registry before a concurrent one marked the token cannot know; a
            # mark that lapsed is of a handover Lambda ended — whether it sent the token, nobody knows.)
            self.violations.append(
                f"sent {token} handed over again: the registry knew it was (being) exchanged"
            )

    def erased(self, grant: Grant) -> None:
        token = self._refresh_of(grant)
        if token not in self.model.refused:
            self.violations.append(f"erased a grant whose refresh token {token} TikTok never refused")
        for invocation in self.parked:
            for sent, answered in invocation.rotations:
                if sent == token and answered not in self.ever_stored:
                    self.violations.append(f"erased while {invocation.name} may still store {answered}")

    # -- invocations -------------------------------------------------------------------------------
    def _lambda_ends_what_outlived_its_timeout(self) -> None:
        for invocation in list(self.parked):
            if self.clock.monotonic() - invocation.started >= invocation.lifetime:
                self.parked.remove(invocation)
                self.dead.append(invocation)

    def _run(self, invocation: Invocation) -> None:
        self._lambda_ends_what_outlived_its_timeout()  # time moves inside invocations too (their waits)
        self.running = invocation
        invocation.step()
        if not invocation.done:
            self.parked.append(invocation)
            return
        error = invocation.error
        if error is not None and not isinstance(error, ServiceError):
            raise error  # the service may raise only its own errors
        if isinstance(error, AppCredentialsError):
            self.app_refused += 1
        held = self.grants.items.get(GRANT)
        held_token = self._refresh_of(held) if held is not None else None
        for sent, answered in invocation.rotations:
            lost_to_aws = isinstance(error, RecordStoreError | TokenVaultError)
            if answered not in self.ever_stored and held_token == sent and not lost_to_aws:
                self.violations.append(
                    f"{invocation.name} dropped {answered} while the grant still held its predecessor"
                )

    def _start(
        self, name: str, work: Callable[[], object], park_at: str | None, lifetime: float = LAMBDA_LIFETIME
    ) -> None:
        self._lambda_ends_what_outlived_its_timeout()
        invocation = Invocation(name, work, park_at, self.clock.monotonic(), lifetime)
        now = self.clock.now()
        invocation.registry_read = {
            digest: until.timestamp() for digest, (_, until) in self.grants.exchanging.items() if until > now
        }
        invocation.registry_read.update(dict.fromkeys(self.grants.handed_tokens, float("inf")))
        self._run(invocation)

    def _hand_over(self, name: str, tokens: HandedTokens, caller: str, park_at: str | None) -> None:
        lifetime = HANDOVER_DEADLINE + HANDOVER_MARGIN

        def work() -> Holding:
            deadline = Deadline.for_invocation(int(lifetime * 1000), HANDOVER_MARGIN)
            return self.handover.take(caller, tokens, deadline)

        self._start(name, work, park_at, lifetime)

    def _hand_over_a_consent(self, park_at: str | None, named: bool, access_lifetime: int) -> str:
        token = self.model.consent(access_lifetime)
        self._hand_over(
            f"hand over {token}",
            HandedTokens(f"act.handed.{token}", token, OPENID if named else None),
            CALLER,
            park_at,
        )
        return token

    @initialize(target=handed)
    def the_user_consents(self) -> str:
        return self._hand_over_a_consent(None, named=False, access_lifetime=FRESH_SECONDS)

    # Access tokens kept for less than FRESH_FOR are refreshed at every use; a minute more, once a minute.
    @rule(
        target=handed,
        park_at=PARKS,
        named=st.booleans(),
        access_lifetime=st.sampled_from([FRESH_SECONDS, FRESH_SECONDS + 60]),
    )
    def a_new_consent_is_handed_over(self, park_at: str | None, named: bool, access_lifetime: int) -> str:
        return self._hand_over_a_consent(park_at, named, access_lifetime)

    @rule(token=handed, caller=st.sampled_from([CALLER, CALLER, "arn:aws:iam::123456789012:role/other"]))
    def a_handed_refresh_token_is_handed_over_again(self, token: str, caller: str) -> None:
        self._hand_over(f"hand over {token} again", HandedTokens(f"act.handed.{token}", token), caller, None)

    @rule(park_at=REFRESH_PARKS, refused_once=st.booleans(), with_use=st.booleans())
    def an_invocation_uses_the_grant(self, park_at: str | None, refused_once: bool, with_use: bool) -> None:
        def work() -> object:
            if not with_use:
                return self.tokens.access_token(GRANT, Deadline.after(30))
            used: list[str] = []

            def use(token: str) -> str:
                used.append(token)
                if refused_once and len(used) == 1:
                    raise tiktok_error("access_token_invalid", 401)
                return token

            return self.tokens.with_access_token(GRANT, Deadline.after(30), use)

        self._start("use the grant", work, park_at)

    @precondition(lambda self: self.parked)
    @rule(data=st.data(), dies=st.sampled_from([False, False, False, False, True]))
    def a_stalled_invocation_goes_on_or_dies(self, data: st.DataObject, dies: bool) -> None:
        self._lambda_ends_what_outlived_its_timeout()
        if not self.parked:
            return
        invocation = data.draw(st.sampled_from(self.parked))
        self.parked.remove(invocation)
        if dies:
            self.dead.append(invocation)
        else:
            self._run(invocation)

    @rule(seconds=st.sampled_from([1, 20, 61, 61, 61, 300, 16 * 60, 2 * 3600]))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self._lambda_ends_what_outlived_its_timeout()

    @rule(
        failure=st.sampled_from(
            [
                # DynamoDB
                "get",
                "handed",
                "begin_exchange",
                "adopt",
                "remember_handed",
                "touch",
                "take_refresh_lease",
                "store_refreshed",
                "erase_refused",
                # KMS
                "seal",
                "open",
                # TikTok: the app refused until the operator's fix, or a rate limit
                "app",
                "rate_limit",
            ]
        ),
        times=st.integers(min_value=1, max_value=STORE_ATTEMPTS * 2),
    )
    def something_fails(self, failure: str, times: int) -> None:
        if failure in ("seal", "open"):
            self.vault.faults.arm(failure, TokenVaultError(f"KMS {failure} failed: ThrottlingException"))
        elif failure == "app":
            self.model.app_refusals = times
        elif failure == "rate_limit":
            self.model.rate_limited = True
        else:
            self.grants.failing[failure] = min(times, STORE_ATTEMPTS)

    @rule(ends=st.sampled_from([False, False, True]))
    def a_request_of_the_user_ends(self, ends: bool) -> None:
        grant = self.grants.items.get(GRANT)
        if ends and grant is not None:  # the last one: the grant is released
            self.tokens.delete(GRANT, generation=grant.generation)

    # -- invariants --------------------------------------------------------------------------------
    @invariant()
    def nothing_was_replayed_dropped_or_erased_wrongly(self) -> None:
        assert self.violations == []

    @invariant()
    def every_refusal_of_the_app_is_counted_for_the_alarm(self) -> None:
        assert self.metrics.names.count("AppRefused") == self.app_refused

    @invariant()
    def the_grant_holds_the_newest_consents_live_refresh_token(self) -> None:
        grant = self.grants.items.get(GRANT)
        token = self._refresh_of(grant) if grant is not None else None
        if token is None:
            return
        assert self.model.lineage_of[token] == self.newest_lineage
        # Rotated only when its successor never reached the grants table (still in a stalled invocation,
        # or lost with a dead one or with DynamoDB's refusal)
        assert self.model.is_live(token) or self.model.successor[token] not in self.ever_stored

    def teardown(self) -> None:
        for invocation in self.parked + self.dead:
            self.running = invocation
            invocation.kill()
        self._patch.undo()


def test_the_lineage_holds_under_any_interleaving() -> None:
    run_state_machine_as_test(
        LineageMachine,
        settings=settings(
            max_examples=200,
            stateful_step_count=35,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
