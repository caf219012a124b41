"""A backend hands a user's tokens over: TikTok names the user, and the service keeps the only live lineage.

``POST /requests`` and ``POST /downloads`` carry the user's ``access_token`` and, optionally, their
``refresh_token``. With a refresh token, :class:`TokenHandover` exchanges it at once: TikTok's answer
names the user (``open_id``), and rotates the token — from then on the service holds the user's only
live lineage (the backend's copy is dead) and the grant is ``user <caller> <open_id>``: created, or
joined when the caller already has one for that user (the newest lineage wins). A caller's ``open_id``
is only compared with TikTok's; when they differ nothing is kept.

A refresh token is sent to TikTok once only (see :class:`HandedRegistry`): before exchanging it, the
handover marks it as being exchanged (a conditional put). The same token handed over again — a backend
retrying a request whose answer it lost — joins the grant it went into instead; when it comes while the
first handover is still exchanging it, it waits for that one's result. A token exchanged before is never
sent again: when its grant is gone, or another caller hands it over, only the user's new consent helps.
One that nobody exchanged and TikTok refuses is answered at once. Without a refresh token the user stays
unknown: the access token is kept only for the request it comes with, as long as it lives.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from tiktok_archive.adapters.grant_items import Exchanged
from tiktok_archive.adapters.grants import Grants, request_grant_id, user_grant_id
from tiktok_archive.logic.token_refresh import stored
from tiktok_archive.logic.tokens import TokenService, handed_access_token
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import (
    AppCredentialsError,
    OpenIdMismatchError,
    ReauthorizationRequiredError,
    ServiceError,
    TokenRefreshInProgressError,
)
from tiktok_archive.models.portability import HandedTokens, TokenGrant
from tiktok_archive.models.tiktok_errors import TikTokApiError, TikTokBudgetExhaustedError
from tiktok_archive.observability import logger

T = TypeVar("T")
# A handover marks the refresh token it exchanges until Lambda ends its invocation (its deadline plus
# the margin, in which a store begun before the deadline may still end) and this long after (DynamoDB's
# clock is not ours): until then a concurrent handover of the same token waits for its result. The mark
# of a handover that died lapses by itself — once no code of it can run any longer.
EXCHANGE_OUTLIVES_INVOCATION = timedelta(seconds=30)
# How long a handover waits for a concurrent one's exchange of the same token before answering
# ``token_refresh_in_progress`` (the caller sends the same body again).
WAIT_FOR_CONCURRENT_HANDOVER_SECONDS = 6.0
_EXCHANGED_BEFORE = (
    "this refresh token was exchanged at TikTok before (refresh tokens rotate) and the service holds its "
    "tokens no longer for this caller; the user must consent again"
)


@dataclass(frozen=True)
class Holding:
    """What the service holds for a caller's user once tokens were handed over.

    Attributes:
        access_token: a valid access token to act with now.
        grant_id: the user's grant (None until a request's own grant is made, see
            :meth:`TokenHandover.keep_for_request`).
        user_openid: the user, as TikTok named them (None without a refresh token).
        unkept: tokens not yet in any grant (a request's own, kept once its ``request_id`` exists).
        joined: the tokens were handed over before; ``access_token`` is the grant's stored one, which
            TikTok may refuse although it looks fresh (see :meth:`TokenHandover.act`).
    """

    access_token: str = field(repr=False)
    grant_id: str | None
    user_openid: str | None
    unkept: TokenGrant | None = field(default=None, repr=False)
    joined: bool = False


class TokenHandover:
    """Takes a user's tokens from a caller.

    Args:
        tokens: the grants' tokens (refresh, seal, keep).
        grants: the grants table (the handed-over tokens' registry).
    """

    def __init__(self, tokens: TokenService, grants: Grants) -> None:
        self._tokens = tokens
        self._grants = grants

    def take(self, caller: str, handed: HandedTokens, deadline: Deadline) -> Holding:
        """Identify the tokens' user with TikTok and keep them under ``caller``.

        Returns:
            the holding: with a grant when a refresh token was handed over.

        Raises:
            OpenIdMismatchError: TikTok named another user than the caller's ``open_id``; nothing kept.
            ReauthorizationRequiredError: TikTok refused the refresh token, or it was exchanged before
                (by another caller, or into a grant since gone: it is not sent again); nothing kept.
            TokenRefreshInProgressError: another handover of the same refresh token is still exchanging
                it after :data:`WAIT_FOR_CONCURRENT_HANDOVER_SECONDS`; nothing kept (ask again).
            AppCredentialsError / TikTokApiError / ServiceError: TikTok or AWS failed; nothing kept
                (a lineage TikTok rotated but that could not be stored is logged as lost).
        """
        if handed.refresh_token is None:
            return Holding(handed.access_token, None, None, handed_access_token(handed.access_token))
        digest = hashlib.sha256(handed.refresh_token.encode()).hexdigest()
        found = self._exchange_or_find(digest, deadline)
        if isinstance(found, Exchanged):
            return self._join_handed(caller, found, handed, deadline)
        owner = found
        try:
            fresh = self._tokens.refresh_handed(handed.refresh_token, deadline)
        except BaseException as error:
            if _not_rotated(error):
                self._grants.end_exchange(digest, owner)  # TikTok refused it, or was never asked
            raise
        # TikTok rotated the token: from here on its mark is never dropped (a failure below leaves it to
        # lapse), so that nobody sends the dead token again while this invocation may still run.
        holding = self._keep_fresh(caller, handed, fresh, deadline)
        if holding.grant_id is None:
            self._grants.end_exchange(digest, owner)  # the tokens wait for their request's own grant
            return holding
        self._remember(digest, holding.grant_id, caller, deadline)
        return holding

    def act(self, holding: Holding, deadline: Deadline, use: Callable[[str], T]) -> T:
        """``use(token)`` with the holding's access token.

        Tokens TikTok just issued are used as they are; a joined grant's stored token goes through
        :meth:`TokenService.with_access_token`, refreshed and tried once more when TikTok refuses it
        (``use`` must change nothing before TikTok accepted the token).
        """
        if holding.joined and holding.grant_id is not None:
            return self._tokens.with_access_token(holding.grant_id, deadline, use)
        return use(holding.access_token)

    def keep_for_request(self, caller: str, holding: Holding, request_id: int, deadline: Deadline) -> str:
        """Keep tokens of an unknown user for the one request they came with; returns the grant's id.

        Raises:
            TokenVaultError / RecordStoreError: KMS or DynamoDB failed.
        """
        if holding.grant_id is not None:
            return holding.grant_id
        grant_id = request_grant_id(request_id)
        kept = holding.unkept or handed_access_token(holding.access_token)
        self._tokens.keep(grant_id, caller, None, kept, deadline)
        return grant_id

    def _exchange_or_find(self, digest: str, deadline: Deadline) -> Exchanged | str:
        """Begin exchanging a handed-over refresh token (the mark's owner), or where it went before.

        A concurrent handover of the same token is exchanging it: its result is waited for (the grant
        it stored, or its mark dropped — then the token is ours to exchange).

        Raises:
            TokenRefreshInProgressError: the concurrent handover did not finish within the wait.
            RecordStoreError: DynamoDB failed (nothing was sent to TikTok).
        """
        waited = Deadline.after(min(WAIT_FOR_CONCURRENT_HANDOVER_SECONDS, max(0.0, deadline.remaining())))
        lease = timedelta(seconds=max(0.0, deadline.invocation_left())) + EXCHANGE_OUTLIVES_INVOCATION
        while True:
            found = self._grants.handed(digest)
            if isinstance(found, Exchanged):
                return found
            if found is None:
                owner = self._grants.begin_exchange(digest, lease)
                if owner is not None:
                    return owner
                # Another handover of it began between our read and our mark: its result is awaited.
            if waited.expired():
                raise TokenRefreshInProgressError(
                    "another request is handing over the same refresh token right now; send the same "
                    "body again in a moment"
                )
            time.sleep(0.25)

    def _remember(self, digest: str, grant_id: str, caller: str, deadline: Deadline) -> None:
        """Remember the grant an exchanged token went into, tried up to :data:`STORE_ATTEMPTS` times.

        Never raises: the tokens are kept, so the handover succeeded. When the registry cannot be
        written, the token's exchange mark is left to lapse by itself (it is never ended here: TikTok
        rotated the token, and a mark dropped would let the same token be sent again). Until it lapses
        the same token handed over again is answered ``token_refresh_in_progress``; afterwards TikTok
        refuses it (``reauthorization_required``).
        """
        try:
            stored(
                lambda: self._grants.remember_handed(digest, grant_id, caller),
                deadline,
                "handed-over token not remembered; trying again",
            )
        except ServiceError as error:
            logger.warning(
                "handed-over token not remembered; its exchange mark lapses by itself",
                extra=error.log_fields(),
            )

    def _keep_fresh(
        self, caller: str, handed: HandedTokens, fresh: TokenGrant, deadline: Deadline
    ) -> Holding:
        user = fresh.open_id
        if handed.open_id is not None and user is not None and handed.open_id != user:
            # The caller mixed users up. Nothing of either user changes; the lineage TikTok just rotated
            # exists nowhere else, so the user has to consent again.
            logger.error(
                "handed-over tokens are another user's than the caller's open_id: nothing kept, "
                "the exchanged refresh token is dropped"
            )
            raise OpenIdMismatchError(
                "TikTok says these tokens belong to another user than open_id; nothing was kept. The "
                "refresh token was exchanged at TikTok (refresh tokens rotate): ask the user to consent "
                "again"
            )
        if user is None:
            # TikTok's answer named nobody: the tokens are kept for the request alone.
            logger.warning("TikTok's refresh answer names no user: the tokens stay with their request")
            return Holding(fresh.access_token, None, None, fresh)
        grant_id = user_grant_id(caller, user)
        self._tokens.keep(grant_id, caller, user, fresh, deadline)
        logger.info("user's tokens handed over", extra={"grant_id": grant_id})
        return Holding(fresh.access_token, grant_id, user)

    def _join_handed(
        self, caller: str, known: Exchanged, handed: HandedTokens, deadline: Deadline
    ) -> Holding:
        """The holding of a refresh token exchanged before (``known``: its grant and caller).

        TikTok rotated that token: it is never sent again, so nothing but its grant can serve.

        Raises:
            ReauthorizationRequiredError: another caller exchanged it, or its grant is gone.
            OpenIdMismatchError: the caller's ``open_id`` is not the grant's user.
        """
        grant = self._tokens.find(known.grant_id) if known.caller == caller else None
        if grant is None or grant.user_openid is None:
            raise ReauthorizationRequiredError(_EXCHANGED_BEFORE)
        if handed.open_id is not None and handed.open_id != grant.user_openid:
            raise OpenIdMismatchError(
                "TikTok says these tokens belong to another user than open_id; nothing was changed"
            )
        logger.info("refresh token handed over again: the grant it went into is joined")
        if not self._grants.touch(grant.grant_id):
            raise ReauthorizationRequiredError(_EXCHANGED_BEFORE)
        token = self._tokens.access_token(grant.grant_id, deadline)
        return Holding(token, grant.grant_id, grant.user_openid, joined=True)


def _not_rotated(error: BaseException) -> bool:
    """Whether a failed exchange certainly left the handed token as it was.

    TikTok refused it or the app, or was not called; a timeout or a 5xx may have come after TikTok rotated
    it.
    """
    if isinstance(error, ReauthorizationRequiredError | AppCredentialsError | TikTokBudgetExhaustedError):
        return True
    return isinstance(error, TikTokApiError) and (error.upstream_status or 500) < 500
