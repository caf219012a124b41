"""A user's tokens over time: stored sealed, refreshed before they expire, one refresh at a time.

TikTok's access tokens live 2 hours (24 h on older pages); its refresh tokens 180 days (365), and they
rotate: every refresh answers a new refresh token and the one sent stops working. The service keeps
both in the user's grant, sealed with KMS, and hands out an access token that still has
:data:`FRESH_FOR` ahead of it — refreshing first when it has not, or when TikTok refused it.

A refresh takes the grant's lease with a conditional write, calls TikTok, and stores the rotated tokens
before anyone uses the new access token. An invocation that finds the lease taken waits for the other's
result instead of refreshing with a refresh token that is about to stop working. TikTok refusing the
refresh (``invalid_grant``) erases the grant: only the user's new consent helps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from tiktok_archive.adapters.app_credentials import AppCredentialsSource
from tiktok_archive.adapters.grants import Grant, Grants, SealedTokens
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, REFRESH_TOKEN_PURPOSE, TokenVault
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import utc_now as _now  # tests freeze this module's clock
from tiktok_archive.models.errors import (
    AppCredentialsError,
    ReauthorizationRequiredError,
    TikTokApiError,
    TokenRefreshInProgressError,
    TransferError,
)
from tiktok_archive.models.portability import TokenGrant
from tiktok_archive.observability import logger

T = TypeVar("T")
# An access token handed out has at least this long ahead of it: a 15-minute download, resumed with a
# ranged request near its end, still carries a valid token.
FRESH_FOR = timedelta(minutes=20)
# A caller's access token's lifetime is unknown: TikTok's pages say 2 hours; count from when it was given.
ASSUMED_ACCESS_LIFETIME = timedelta(hours=2)
ASSUMED_REFRESH_LIFETIME = timedelta(days=180)
# How long a refresh may hold the grant. TikTok's call must end within it, leaving time to seal and
# store the rotated tokens: a refresh outliving its lease would let another replay the same token.
REFRESH_LEASE = timedelta(seconds=60)
STORE_WITHIN_SECONDS = 15.0
# Sealing and storing the rotated tokens is tried this often: TikTok has already rotated them, and a
# refresh token not stored is the user's lineage lost.
STORE_ATTEMPTS = 2
# How long an invocation waits for another's refresh before handing its work back.
WAIT_FOR_OTHER_REFRESH_SECONDS = 6.0
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

    def store(
        self,
        grant_id: str,
        access_token: str,
        refresh_token: str | None,
        user_openid: str | None,
        request_id: int | None = None,
    ) -> None:
        """Keep a caller's tokens for ``grant_id`` (sealed); the access token's life counts from now.

        ``request_id``: the request they came with (the grant's latest, to confirm later callers by).

        Raises:
            TokenVaultError / RecordStoreError: KMS or DynamoDB failed.
        """
        now = _now()
        self._grants.store(
            grant_id,
            SealedTokens(
                sealed_access_token=self._seal(access_token, ACCESS_TOKEN_PURPOSE, grant_id),
                access_expires_at=now + ASSUMED_ACCESS_LIFETIME,
                sealed_refresh_token=self._seal(refresh_token, REFRESH_TOKEN_PURPOSE, grant_id)
                if refresh_token
                else None,
                refresh_expires_at=now + ASSUMED_REFRESH_LIFETIME if refresh_token else None,
                user_openid=user_openid,
                request_id=request_id,
            ),
        )

    def find(self, grant_id: str) -> Grant | None:
        """The grant as stored (sealed), or None.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        return self._grants.get(grant_id)

    def user_of(self, grant_id: str) -> str | None:
        """The grant's user, when a refresh has told it (``None`` otherwise, or without a grant)."""
        grant = self.find(grant_id)
        return grant.user_openid if grant else None

    def access_token(self, grant_id: str, deadline: Deadline) -> str:
        """An access token of the grant with :data:`FRESH_FOR` ahead of it.

        Raises:
            ReauthorizationRequiredError: no grant, no refresh token for an expiring access token, or
                TikTok refused the refresh (the grant is erased).
            TokenRefreshInProgressError: another invocation's refresh did not finish in time (transient).
            AppCredentialsError / TikTokApiError / TransferError: the refresh failed otherwise.
        """
        return self._token(self._grant(grant_id), deadline)[0]

    def with_access_token(self, grant_id: str, deadline: Deadline, use: Callable[[str], T]) -> T:
        """``use(token)`` with a fresh access token of the grant.

        Once more with a refreshed one when TikTok answers ``access_token_invalid`` (a token revoked or
        expired before its time).

        ``use`` must change nothing before TikTok accepted the token (every call of the service asks
        TikTok first), so that running it twice is safe.

        Raises:
            whatever :meth:`access_token` or ``use`` raises.
        """
        token, version = self._token(self._grant(grant_id), deadline)
        try:
            return use(token)
        except TikTokApiError as error:
            if error.error_code != _INVALID_TOKEN:
                raise
        latest = self._grant(grant_id)
        if latest.version != version and latest.sealed_access_token:
            # Another invocation refreshed the grant since our token was read: its token is the new one
            # (refreshing again would only rotate the user's tokens once more).
            logger.info("TikTok refused the stored access token; using the one refreshed meanwhile")
            return use(self._opened(latest)[0])
        logger.info("TikTok refused the stored access token; refreshing it")
        return use(self._token(latest, deadline, refresh=True)[0])

    def erase(self, grant_id: str) -> int:
        """Delete the grant's tokens; 1 when there were any, 0 otherwise.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        return self._grants.erase(grant_id)

    def _token(self, grant: Grant, deadline: Deadline, *, refresh: bool = False) -> tuple[str, int]:
        """An access token of ``grant`` and the grant version it belongs to."""
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
    def _refreshed(self, grant: Grant, deadline: Deadline) -> tuple[str, int]:
        if not grant.sealed_refresh_token:
            raise ReauthorizationRequiredError(
                "the user's access token expired and no refresh token was given; the user must consent again"
            )
        owner = self._grants.take_refresh_lease(grant, REFRESH_LEASE)
        if owner is None:
            return self._after_other_refresh(grant, deadline)
        within_lease = Deadline.after(
            min(deadline.remaining(), REFRESH_LEASE.total_seconds() - STORE_WITHIN_SECONDS)
        )
        try:
            fresh = self._call_tiktok(grant, within_lease)
        except ReauthorizationRequiredError:
            # Refused — unless someone refreshed the grant meanwhile (our lease lapsed): then theirs stands.
            latest = self._grants.get(grant.grant_id)
            if latest is not None and latest.version != grant.version and latest.sealed_access_token:
                return self._opened(latest)
            logger.warning("TikTok refused the refresh token; the grant is erased")
            self._grants.erase(grant.grant_id)
            raise
        except BaseException:
            self._grants.release_refresh_lease(grant.grant_id, owner)
            raise
        stored = self._store_rotated(grant, owner, fresh)
        if grant.user_openid and fresh.open_id and fresh.open_id != grant.user_openid:
            # The open_id the grant was started with was not this user's (the first caller's word):
            # its requests go on with these tokens, which are theirs; an operator should know.
            logger.error(
                "the grant's tokens are another TikTok user's than its open_id",
                extra={"grant_id": grant.grant_id, "tokens_open_id": fresh.open_id},
            )
        if not stored:
            # Cannot happen while the lease or the version holds; if it does, TikTok has rotated the
            # token to one nobody stored: the user has to consent again sooner or later.
            logger.error("refreshed tokens were not stored: the grant moved on meanwhile")
        logger.info("access token refreshed", extra={"grant_version": grant.version + 1})
        return fresh.access_token, grant.version + 1

    def _store_rotated(self, grant: Grant, owner: str, fresh: TokenGrant) -> bool:
        for attempt in range(1, STORE_ATTEMPTS + 1):
            now = _now()
            try:
                return self._grants.store_refreshed(
                    grant,
                    owner,
                    SealedTokens(
                        sealed_access_token=self._seal(
                            fresh.access_token, ACCESS_TOKEN_PURPOSE, grant.grant_id
                        ),
                        access_expires_at=now + timedelta(seconds=fresh.expires_in),
                        sealed_refresh_token=self._seal(
                            fresh.refresh_token, REFRESH_TOKEN_PURPOSE, grant.grant_id
                        ),
                        refresh_expires_at=now + timedelta(seconds=fresh.refresh_expires_in),
                        user_openid=fresh.open_id,
                    ),
                )
            except TransferError as error:
                if attempt == STORE_ATTEMPTS:
                    # TikTok rotated the refresh token and the new one could not be kept: the next
                    # refresh will be refused and the user asked to consent again.
                    logger.error(
                        "rotated tokens not stored: the user's refresh token is lost",
                        extra=error.log_fields(),
                    )
                    raise
                logger.warning("rotated tokens not stored; trying again", extra=error.log_fields())
        raise AssertionError("unreachable")

    def _call_tiktok(self, grant: Grant, deadline: Deadline) -> TokenGrant:
        refresh_token = self._open(grant.sealed_refresh_token or "", REFRESH_TOKEN_PURPOSE, grant.grant_id)
        source = self._app()
        try:
            return self._tiktok.refresh_tokens(source.get(), refresh_token, deadline)
        except AppCredentialsError:
            # A rotated app secret: read it again at once (TikTok refused nothing of the user's).
            return self._tiktok.refresh_tokens(source.get(fresh=True), refresh_token, deadline)

    def _after_other_refresh(self, grant: Grant, deadline: Deadline) -> tuple[str, int]:
        """Another invocation holds the lease: wait (briefly) for the tokens it stores."""
        waited = Deadline.after(min(WAIT_FOR_OTHER_REFRESH_SECONDS, max(0.0, deadline.remaining())))
        while True:
            latest = self._grant(grant.grant_id)
            if latest.version != grant.version and latest.sealed_access_token:
                return self._opened(latest)
            if not latest.being_refreshed(_now()) and latest.version == grant.version:
                # The other one gave up without storing anything: refresh ourselves.
                return self._refreshed(latest, deadline)
            if waited.expired():
                raise TokenRefreshInProgressError("another invocation is refreshing this user's tokens")
            time.sleep(0.25)

    def _grant(self, grant_id: str) -> Grant:
        grant = self._grants.get(grant_id)
        if grant is None:
            raise ReauthorizationRequiredError("the service holds no tokens of this user; consent again")
        return grant

    def _opened(self, grant: Grant) -> tuple[str, int]:
        token = self._open(grant.sealed_access_token or "", ACCESS_TOKEN_PURPOSE, grant.grant_id)
        return token, grant.version

    def _seal(self, token: str, purpose: str, grant_id: str) -> str:
        return self._vault.seal(token, purpose, {"grant_id": grant_id})

    def _open(self, sealed: str, purpose: str, grant_id: str) -> str:
        return self._vault.open(sealed, purpose, {"grant_id": grant_id})


def _fresh(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at - _now() > FRESH_FOR
