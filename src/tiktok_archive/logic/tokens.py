"""A user's tokens over time: stored sealed, refreshed before they expire, one refresh at a time.

TikTok's access tokens live 2 hours (24 h on older pages); its refresh tokens 180 days (365), and they
rotate: every refresh answers a new refresh token and the one sent stops working. The service keeps
both in the user's grant, sealed with KMS, and hands out an access token that still has
:data:`FRESH_FOR` ahead of it — refreshing first when it has not, or when TikTok refused it.

The lineage rules (see docs/reliability.md, *Tokens*):

- one refresh at a time: a refresh takes the grant's lease with a conditional write, calls TikTok
  within the lease, and stores the rotated tokens — conditionally on its lease, or on the refresh token
  it sent still being the grant's — before anyone uses the new access token. An invocation that finds
  the lease taken waits for the other's result instead of replaying a refresh token that is about to
  stop working;
- a newer consent wins: tokens handed over again replace the lineage (a new generation), and a refresh
  of the older lineage still in flight loses its write;
- only ``invalid_grant`` ends a grant, and only at the generation TikTok refused. When the refused
  refresh token may have been rotated by an earlier refresh that never stored its answer (its lease
  lapsed), nothing is erased until that refresh cannot be alive any more (:data:`ABANDONED_FOR`);
- a refusal that is the app's (``invalid_client``, ``unauthorized_client`` …) keeps every grant: it is
  counted (``AppRefused``, alarmed) and the work waits for the operator's fix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from aws_lambda_powertools.metrics import MetricUnit

from tiktok_archive.adapters.app_credentials import AppCredentialsSource
from tiktok_archive.adapters.grants import Grant, Grants, Lease, SealedTokens
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, REFRESH_TOKEN_PURPOSE, TokenVault
from tiktok_archive.models.clock import utc_now as _now  # tests freeze this module's clock
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import (
    AppCredentialsError,
    MissingTokenError,
    ReauthorizationRequiredError,
    ServiceError,
    TikTokApiError,
    TokenRefreshInProgressError,
)
from tiktok_archive.models.portability import AppCredentials, TokenGrant
from tiktok_archive.observability import logger, metrics

T = TypeVar("T")
# An access token handed out has at least this long ahead of it: a 15-minute download, resumed with a
# ranged request near its end, still carries a valid token.
FRESH_FOR = timedelta(minutes=20)
# A caller's access token's lifetime is unknown: TikTok's pages say 2 hours; count from when it was given.
ASSUMED_ACCESS_LIFETIME = timedelta(hours=2)
# How long a refresh may hold the grant. TikTok's call must end within it, leaving time to seal and
# store the rotated tokens: a refresh outliving its lease would let another replay the same token.
REFRESH_LEASE = timedelta(seconds=60)
STORE_WITHIN_SECONDS = 15.0
# Sealing and storing tokens TikTok just rotated is tried this often (botocore retrying inside each), the
# tries after the first drawn from the unit of work's attempts: a refresh token not stored is the user's
# lineage lost.
STORE_ATTEMPTS = 2
# How long an invocation waits for another's refresh before handing its work back.
WAIT_FOR_OTHER_REFRESH_SECONDS = 6.0
# A refresh whose lease lapsed unfinished may still store its tokens while its invocation lives: at most
# Lambda's 15 minutes (and a minute's margin) after it began.
ABANDONED_FOR = timedelta(minutes=16)
_INVALID_TOKEN = "access_token_invalid"  # noqa: S105 - TikTok's error code


class TokenService:
    """Stores, opens and refreshes users' tokens.

    Args:
        grants: the grants table.
        vault: seals and opens tokens.
        tiktok: TikTok's OAuth endpoint (through the client).
        app: the app's credentials, read on first need (only a refresh needs them).
    """

    def __init__(
        self,
        grants: Grants,
        vault: TokenVault,
        tiktok: TikTokClient,
        app: Callable[[], AppCredentialsSource],
    ) -> None:
        self._grants = grants
        self._vault = vault
        self._tiktok = tiktok
        self._app = app

    # -- keeping ---------------------------------------------------------------------------------
    def keep(
        self, grant_id: str, caller: str, user_openid: str | None, fresh: TokenGrant, deadline: Deadline
    ) -> Grant:
        """Make ``fresh`` (tokens TikTok just issued, or an access token a caller handed over) the grant's.

        Tried up to :data:`STORE_ATTEMPTS` times (within ``deadline``'s attempts): tokens TikTok just
        rotated exist nowhere else.

        Raises:
            TokenVaultError / RecordStoreError: KMS or DynamoDB failed every time (logged as a lost
                lineage when a refresh token was among them).
        """
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                return self._grants.adopt(grant_id, caller, user_openid, self._sealed(grant_id, fresh))
            except ServiceError as error:
                if attempt == STORE_ATTEMPTS or not deadline.take_attempt():
                    if fresh.refresh_token:
                        logger.error(
                            "handed-over tokens not stored: the user's refresh token is lost",
                            extra=error.log_fields(),
                        )
                    raise
                logger.warning("tokens not stored; trying again", extra=error.log_fields())
        raise AssertionError("unreachable")

    def refresh_handed(self, refresh_token: str, deadline: Deadline) -> TokenGrant:
        """Exchange a refresh token a caller handed over (TikTok names its user and rotates it).

        Raises:
            ReauthorizationRequiredError: TikTok refused it (``invalid_grant``).
            AppCredentialsError: TikTok refused the app (counted); the secret is unusable.
            TikTokApiError / ServiceError: TikTok failed otherwise.
        """
        return self._exchange(refresh_token, deadline)

    def find(self, grant_id: str) -> Grant | None:
        """The grant as stored (sealed), or None.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        return self._grants.get(grant_id)

    def delete(self, grant_id: str, *, generation: str | None = None, forget_handed: bool = False) -> bool:
        """Delete the grant's tokens (at ``generation`` only, when given); whether there were any.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        return self._grants.delete(grant_id, generation=generation, forget_handed=forget_handed)

    # -- using -----------------------------------------------------------------------------------
    def access_token(self, grant_id: str, deadline: Deadline) -> str:
        """An access token of the grant with :data:`FRESH_FOR` ahead of it.

        Raises:
            ReauthorizationRequiredError: no grant, no refresh token for an expiring access token, or
                TikTok refused the refresh (the grant is erased).
            TokenRefreshInProgressError: another invocation's refresh did not finish in time (transient).
            AppCredentialsError / TikTokApiError / ServiceError: the refresh failed otherwise.
        """
        return self._token(self._grant(grant_id), deadline)

    def with_access_token(self, grant_id: str, deadline: Deadline, use: Callable[[str], T]) -> T:
        """``use(token)`` with a fresh access token of the grant.

        Once more with a refreshed one when TikTok answers ``access_token_invalid`` (a token revoked or
        expired before its time).

        ``use`` must change nothing before TikTok accepted the token (every call of the service asks
        TikTok first), so that running it twice is safe.

        Raises:
            whatever :meth:`access_token` or ``use`` raises.
        """
        token = self._token(self._grant(grant_id), deadline)
        try:
            return use(token)
        except TikTokApiError as error:
            if error.error_code != _INVALID_TOKEN:
                raise
        latest = self._grant(grant_id)
        stored = self._opened(latest) if latest.sealed_access_token else None
        if stored is not None and stored != token:
            # Another invocation refreshed the grant (or the user consented again) since our token was
            # read: its token is the new one (refreshing again would only rotate the user's tokens once
            # more). A new generation alone is no such sign: a request joining the grant makes one too.
            logger.info("TikTok refused the stored access token; using the one refreshed meanwhile")
            return use(stored)
        logger.info("TikTok refused the stored access token; refreshing it")
        return use(self._token(latest, deadline, refresh=True))

    def _token(self, grant: Grant, deadline: Deadline, *, refresh: bool = False) -> str:
        """An access token of ``grant``."""
        if (
            not refresh
            and grant.sealed_access_token
            and (_fresh(grant.access_expires_at) or not grant.sealed_refresh_token)
        ):
            # Without a refresh token nothing better exists: the token's real lifetime is unknown (2 h,
            # or 24 h on older pages), so it is used until TikTok refuses it.
            return self._opened(grant)
        return self._refreshed(grant, deadline)

    # -- refresh ---------------------------------------------------------------------------------
    def _refreshed(self, grant: Grant, deadline: Deadline) -> str:
        if not grant.sealed_refresh_token:
            raise ReauthorizationRequiredError(
                "the user's access token expired and no refresh token was given; the user must consent again"
            )
        lease = self._grants.take_refresh_lease(grant, REFRESH_LEASE)
        if lease is None:
            return self._after_other_refresh(grant, deadline)
        within_lease = Deadline.after(
            min(deadline.remaining(), REFRESH_LEASE.total_seconds() - STORE_WITHIN_SECONDS)
        )
        try:
            refresh_token = self._open(grant.sealed_refresh_token, REFRESH_TOKEN_PURPOSE, grant.grant_id)
            fresh = self._exchange(refresh_token, within_lease)
        except ReauthorizationRequiredError:
            return self._refused(grant, lease)
        except BaseException:
            self._grants.release_refresh_lease(grant.grant_id, lease.owner)
            raise
        if grant.user_openid and fresh.open_id and fresh.open_id != grant.user_openid:
            # Cannot happen for a grant TikTok named: the same refresh lineage is always one user's.
            logger.error(
                "TikTok's refresh answer names another user than the grant's",
                extra={"grant_id": grant.grant_id},
            )
        generation = self._store_rotated(grant, lease.owner, fresh, deadline)
        if generation is None:
            # A new consent or an erasure wrote the grant meanwhile: that stands. Our access token is
            # still valid for the work at hand; the older lineage it belongs to is dropped.
            logger.warning("refreshed tokens not stored: the grant moved on meanwhile")
            return fresh.access_token
        logger.info("access token refreshed")
        return fresh.access_token

    def _refused(self, grant: Grant, lease: Lease) -> str:
        """TikTok refused the refresh token: the grant ends — unless something else explains it."""
        latest = self._grants.get(grant.grant_id)
        if (
            latest is not None
            and latest.sealed_access_token
            and latest.sealed_refresh_token != grant.sealed_refresh_token
        ):
            return self._opened(latest)  # refreshed or consented again meanwhile: theirs stands
        if lease.abandoned_at is not None and _now() - lease.abandoned_at < ABANDONED_FOR:
            # An earlier refresh took the lease and never finished: it may have rotated this refresh
            # token at TikTok and still be about to store the new one. Not the user's refusal yet.
            self._grants.release_refresh_lease(grant.grant_id, lease.owner)
            logger.warning(
                "TikTok refused the refresh token an unfinished refresh may have rotated; "
                "the grant is kept until that refresh cannot store its tokens any more"
            )
            raise TokenRefreshInProgressError(
                "an earlier refresh of this user's tokens did not finish; the work comes back later"
            )
        # The grant still holds the refused refresh token: erased at the generation just read (a request
        # joining the grant makes a new generation, not a new lineage), so a new consent since keeps it.
        if self._grants.erase_refused(latest or grant):
            logger.warning("TikTok refused the refresh token; the grant is erased")
        else:
            self._grants.release_refresh_lease(grant.grant_id, lease.owner)
            logger.info("TikTok refused the refresh token; the grant had moved on and is kept")
        raise ReauthorizationRequiredError(
            "TikTok refused to refresh the user's tokens (invalid_grant); the user must consent again"
        )

    def _store_rotated(self, grant: Grant, owner: str, fresh: TokenGrant, deadline: Deadline) -> str | None:
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                return self._grants.store_refreshed(grant, owner, self._sealed(grant.grant_id, fresh))
            except ServiceError as error:
                if attempt == STORE_ATTEMPTS or not deadline.take_attempt():
                    # TikTok rotated the refresh token and the new one could not be kept: the next
                    # refresh will be refused and the user asked to consent again.
                    logger.error(
                        "rotated tokens not stored: the user's refresh token is lost",
                        extra=error.log_fields(),
                    )
                    raise
                logger.warning("rotated tokens not stored; trying again", extra=error.log_fields())
        raise AssertionError("unreachable")

    def _exchange(self, refresh_token: str, deadline: Deadline) -> TokenGrant:
        """One refresh at TikTok; a refusal that is the app's is counted and keeps every grant."""
        source = self._app()
        try:
            try:
                return self._tiktok.refresh_tokens(source.get(), refresh_token, deadline)
            except AppCredentialsError:
                # A rotated app secret: read it again at once (TikTok refused nothing of the user's).
                fresh: AppCredentials = source.get(fresh=True)
                return self._tiktok.refresh_tokens(fresh, refresh_token, deadline)
        except AppCredentialsError as error:
            if error.upstream_status is not None:
                metrics.add_metric(name="AppRefused", unit=MetricUnit.Count, value=1)
                logger.error(
                    "TikTok refused the app, not the user: every grant is kept", extra=error.log_fields()
                )
            raise

    def _after_other_refresh(self, grant: Grant, deadline: Deadline) -> str:
        """Another invocation holds the lease: wait (briefly) for the tokens it stores."""
        waited = Deadline.after(min(WAIT_FOR_OTHER_REFRESH_SECONDS, max(0.0, deadline.remaining())))
        while True:
            latest = self._grant(grant.grant_id)
            if latest.sealed_access_token and latest.sealed_access_token != grant.sealed_access_token:
                return self._opened(latest)  # the other's tokens, or a new consent's
            if not latest.being_refreshed(_now()):
                # The other one gave up, or its lease lapsed (or only a request joined the grant, making a
                # new generation of the same tokens): refresh ourselves.
                return self._refreshed(latest, deadline)
            if waited.expired():
                raise TokenRefreshInProgressError("another invocation is refreshing this user's tokens")
            time.sleep(0.25)

    # -- sealing ---------------------------------------------------------------------------------
    def _grant(self, grant_id: str) -> Grant:
        grant = self._grants.get(grant_id)
        if grant is None:
            raise ReauthorizationRequiredError("the service holds no tokens of this user; consent again")
        return grant

    def _opened(self, grant: Grant) -> str:
        return self._open(grant.sealed_access_token or "", ACCESS_TOKEN_PURPOSE, grant.grant_id)

    def _sealed(self, grant_id: str, fresh: TokenGrant) -> SealedTokens:
        now = _now()
        refresh = fresh.refresh_token or None
        return SealedTokens(
            sealed_access_token=self._seal(fresh.access_token, ACCESS_TOKEN_PURPOSE, grant_id),
            access_expires_at=now + timedelta(seconds=fresh.expires_in),
            sealed_refresh_token=self._seal(refresh, REFRESH_TOKEN_PURPOSE, grant_id) if refresh else None,
            refresh_expires_at=now + timedelta(seconds=fresh.refresh_expires_in) if refresh else None,
        )

    def _seal(self, token: str, purpose: str, grant_id: str) -> str:
        return self._vault.seal(token, purpose, {"grant_id": grant_id})

    def _open(self, sealed: str, purpose: str, grant_id: str) -> str:
        try:
            return self._vault.open(sealed, purpose, {"grant_id": grant_id})
        except MissingTokenError:
            # KMS refuses the stored ciphertext (not this grant's, or damaged): nothing can be done with
            # these tokens but a new consent. (KMS being unreachable is TokenVaultError, transient.)
            logger.error("the grant's sealed tokens do not open", extra={"grant_id": grant_id})
            raise ReauthorizationRequiredError(
                "the tokens the service holds for this user cannot be opened; the user must consent again"
            ) from None


def handed_access_token(access_token: str) -> TokenGrant:
    """An access token a caller handed over alone, as a grant's tokens: its life counts from now."""
    return TokenGrant(
        access_token=access_token,
        expires_in=int(ASSUMED_ACCESS_LIFETIME.total_seconds()),
        refresh_token="",
        refresh_expires_in=0,
        open_id=None,
        scope=None,
    )


def _fresh(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at - _now() > FRESH_FOR
