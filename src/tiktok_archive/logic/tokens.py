"""A user's tokens over time: stored sealed, refreshed before they expire, one refresh at a time.

TikTok's access tokens live 2 hours (24 h on older pages); its refresh tokens 180 days (365), and they
rotate: every refresh answers a new refresh token and the one sent stops working. The service keeps
both in the user's grant, sealed with KMS, and hands out an access token that still has
:data:`FRESH_FOR` ahead of it — refreshing first when it has not, or when TikTok refused it.

A newer consent wins: tokens handed over again replace the lineage (a new generation), and a refresh of
the older lineage still in flight loses its write. The refresh itself, one at a time, and the judgement
of TikTok's refusals are :class:`TokenRefresh`'s (see docs/reliability.md, *Tokens*); sealing and
opening, :class:`GrantVault`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from tiktok_archive.adapters.app_credentials import AppCredentialsSource
from tiktok_archive.adapters.grant_items import Grant
from tiktok_archive.adapters.grants import Grants
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.adapters.token_vault import TokenVault
from tiktok_archive.logic.grant_vault import GrantVault
from tiktok_archive.logic.token_refresh import TokenRefresh, existing_grant, stored
from tiktok_archive.models.clock import utc_now as _now  # tests freeze this module's clock
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import (
    ServiceError,
)
from tiktok_archive.models.portability import TokenGrant
from tiktok_archive.models.tiktok_errors import TikTokApiError
from tiktok_archive.observability import logger

T = TypeVar("T")
# An access token handed out has at least this long ahead of it: a 15-minute download, resumed with a
# ranged request near its end, still carries a valid token.
FRESH_FOR = timedelta(minutes=20)
# A caller's access token's lifetime is unknown: TikTok's pages say 2 hours; count from when it was given.
ASSUMED_ACCESS_LIFETIME = timedelta(hours=2)
# TikTok's refusal of an access token (revoked, or expired before its time).
INVALID_TOKEN = "access_token_invalid"  # noqa: S105 - TikTok's error code


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
        self._seals = GrantVault(vault)
        self._refresh = TokenRefresh(grants, self._seals, tiktok, app)

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
        try:
            return stored(
                lambda: self._grants.adopt(grant_id, caller, user_openid, self._seals.seal(grant_id, fresh)),
                deadline,
                "tokens not stored; trying again",
            )
        except ServiceError as error:
            if fresh.refresh_token:
                logger.error(
                    "handed-over tokens not stored: the user's refresh token is lost",
                    extra=error.log_fields(),
                )
            raise

    def refresh_handed(self, refresh_token: str, deadline: Deadline) -> TokenGrant:
        """Exchange a refresh token a caller handed over (TikTok names its user and rotates it).

        Raises:
            ReauthorizationRequiredError: TikTok refused it (``invalid_grant``).
            AppCredentialsError: TikTok refused the app (counted); the secret is unusable.
            TikTokApiError / ServiceError: TikTok failed otherwise.
        """
        return self._refresh.exchange(refresh_token, deadline)

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
        return self._token(existing_grant(self._grants, grant_id), deadline)

    def with_access_token(self, grant_id: str, deadline: Deadline, use: Callable[[str], T]) -> T:
        """``use(token)`` with a fresh access token of the grant.

        Once more with a refreshed one when TikTok answers ``access_token_invalid`` (a token revoked or
        expired before its time).

        ``use`` must change nothing before TikTok accepted the token (every call of the service asks
        TikTok first), so that running it twice is safe.

        Raises:
            whatever :meth:`access_token` or ``use`` raises.
        """
        token = self._token(existing_grant(self._grants, grant_id), deadline)
        try:
            return use(token)
        except TikTokApiError as error:
            if error.error_code != INVALID_TOKEN:
                raise
        latest = existing_grant(self._grants, grant_id)
        stored = self._seals.access_token(latest) if latest.sealed_access_token else None
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
            return self._seals.access_token(grant)
        return self._refresh.refreshed(grant, deadline)

    # -- refresh ---------------------------------------------------------------------------------


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
