"""One refresh of a user's tokens at a time: the grant's lease, TikTok's rotation, the refusal's judgement.

TikTok's refresh tokens rotate: every refresh answers a new one and the one sent stops working, so two
refreshes racing with the same token lose the user. The rules (see docs/reliability.md, *Tokens*):

- a refresh takes the grant's lease with a conditional write, calls TikTok within the lease, and stores
  the rotated tokens — conditionally on its lease, or on the refresh token it sent still being the
  grant's — before anyone uses the new access token. An invocation that finds the lease taken waits for
  the other's result instead of replaying a refresh token that is about to stop working;
- only ``invalid_grant`` ends a grant, and only at the generation TikTok refused. When the refused
  refresh token may have been rotated by an earlier refresh that never stored its answer (its lease
  lapsed), nothing is erased until that refresh cannot be alive any more (:data:`ABANDONED_FOR`);
- a refusal that is the app's (``invalid_client``, ``unauthorized_client`` …) keeps every grant: it is
  counted (``AppRefused``, alarmed) and the work waits for the operator's fix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from aws_lambda_powertools.metrics import MetricUnit

from tiktok_archive.adapters.app_credentials import AppCredentialsSource
from tiktok_archive.adapters.grant_items import Grant, Lease
from tiktok_archive.adapters.grants import Grants
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.logic.grant_vault import GrantVault
from tiktok_archive.models.clock import utc_now as _now  # tests freeze this module's clock
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import (
    AppCredentialsError,
    ReauthorizationRequiredError,
    ServiceError,
    TokenRefreshInProgressError,
)
from tiktok_archive.models.portability import AppCredentials, TokenGrant
from tiktok_archive.observability import logger, metrics

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

T = TypeVar("T")


def stored(write: Callable[[], T], deadline: Deadline, retrying: str) -> T:
    """``write()``, tried up to :data:`STORE_ATTEMPTS` times (the tries after the first: the unit's attempts).

    Each failure but the last is logged as ``retrying``.

    Raises:
        ServiceError: the last try's failure (the caller says what was lost).
    """
    for attempt in range(1, STORE_ATTEMPTS + 1):
        try:
            return write()
        except ServiceError as error:
            if attempt == STORE_ATTEMPTS or not deadline.take_attempt():
                raise
            logger.warning(retrying, extra=error.log_fields())
    raise AssertionError("unreachable")


def existing_grant(grants: Grants, grant_id: str) -> Grant:
    """The grant as stored.

    Raises:
        ReauthorizationRequiredError: there is none (only a new consent helps).
        RecordStoreError: DynamoDB failed.
    """
    grant = grants.get(grant_id)
    if grant is None:
        raise ReauthorizationRequiredError("the service holds no tokens of this user; consent again")
    return grant


class TokenRefresh:
    """Refreshes a grant's tokens at TikTok, one invocation at a time (see the module).

    Args:
        grants: the grants table.
        seals: seals and opens the grant's tokens.
        tiktok: TikTok's OAuth endpoint (through the client).
        app: the app's credentials, read on first need.
    """

    def __init__(
        self,
        grants: Grants,
        seals: GrantVault,
        tiktok: TikTokClient,
        app: Callable[[], AppCredentialsSource],
    ) -> None:
        self._grants = grants
        self._seals = seals
        self._tiktok = tiktok
        self._app = app

    def refreshed(self, grant: Grant, deadline: Deadline) -> str:
        """A new access token of ``grant``: refreshed here, or by the invocation holding the lease.

        Raises:
            ReauthorizationRequiredError: no refresh token, or TikTok refused it (the grant is erased,
                unless it moved on or an unfinished refresh may explain the refusal).
            TokenRefreshInProgressError: another invocation's refresh did not finish in time, or an
                unfinished one may still store its tokens (transient).
            AppCredentialsError / TikTokApiError / ServiceError: the refresh failed otherwise.
        """
        if not grant.sealed_refresh_token:
            raise ReauthorizationRequiredError(
                "the user's access token expired and no refresh token was given; the user must consent again"
            )
        lease = self._grants.take_refresh_lease(grant, REFRESH_LEASE)
        if lease is None:
            return self._after_other_refresh(grant, deadline)
        within_lease = deadline.within(REFRESH_LEASE.total_seconds() - STORE_WITHIN_SECONDS)
        try:
            fresh = self.exchange(self._seals.refresh_token(grant), within_lease)
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
            return self._seals.access_token(latest)  # refreshed or consented again meanwhile: theirs stands
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
        try:
            return stored(
                lambda: self._grants.store_refreshed(grant, owner, self._seals.seal(grant.grant_id, fresh)),
                deadline,
                "rotated tokens not stored; trying again",
            )
        except ServiceError as error:
            # TikTok rotated the refresh token and the new one could not be kept: the next refresh will
            # be refused and the user asked to consent again.
            logger.error(
                "rotated tokens not stored: the user's refresh token is lost", extra=error.log_fields()
            )
            raise

    def exchange(self, refresh_token: str, deadline: Deadline) -> TokenGrant:
        """One refresh at TikTok; a refusal that is the app's is counted and keeps every grant.

        Raises:
            ReauthorizationRequiredError: TikTok refused the refresh token (``invalid_grant``).
            AppCredentialsError: TikTok refused the app (counted); the secret is unusable.
            TikTokApiError / ServiceError: TikTok failed otherwise.
        """
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
            latest = existing_grant(self._grants, grant.grant_id)
            if latest.sealed_access_token and latest.sealed_access_token != grant.sealed_access_token:
                return self._seals.access_token(latest)  # the other's tokens, or a new consent's
            if not latest.being_refreshed(_now()):
                # The other one gave up, or its lease lapsed (or only a request joined the grant, making a
                # new generation of the same tokens): refresh ourselves.
                return self.refreshed(latest, deadline)
            if waited.expired():
                raise TokenRefreshInProgressError("another invocation is refreshing this user's tokens")
            time.sleep(0.25)
