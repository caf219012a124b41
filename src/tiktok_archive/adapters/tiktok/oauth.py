"""A user's tokens at TikTok: refreshed (``POST /v2/oauth/token/``) and revoked (``/v2/oauth/revoke/``).

A form-encoded request (``client_key``, ``client_secret``, ``grant_type``, ``refresh_token``) answered
with the new tokens, or with OAuth's own error shape ``{"error": "invalid_grant", "error_description",
"log_id"}`` — not the portability endpoints' ``{"error": {"code", …}}``, though that shape is accepted
too. Refresh tokens rotate: the one sent stops working as soon as TikTok acts on the request, so the
request is never sent twice once TikTok may have received it (only a rate limit or a failed
connection is tried again).

Only ``invalid_grant`` is the user's refusal (the grant is gone: only a new consent helps). Every other
OAuth error code — ``invalid_client``, ``unauthorized_client``, ``invalid_scope``, ``access_denied``,
``unsupported_grant_type`` — is about the app, not the user: it is an operator's fix and must not cost
anyone their grant.
"""

from __future__ import annotations

from typing import Any

from tiktok_archive.adapters.tiktok.budget import AttemptBudget
from tiktok_archive.adapters.tiktok.transport import (
    LOG_ID,
    MAX_MESSAGE_CHARS,
    Transport,
    read_document,
    tiktok_failure,
)
from tiktok_archive.models.errors import AppCredentialsError, ReauthorizationRequiredError, ServiceError
from tiktok_archive.models.portability import AppCredentials, TokenGrant, is_open_id
from tiktok_archive.models.tiktok_errors import TikTokApiError, UpstreamBadResponseError
from tiktok_archive.models.tiktok_quota import Endpoint
from tiktok_archive.observability import hide, tracer

TOKEN_PATH = "/v2/oauth/token/"  # noqa: S105 - a path, not a password
REVOKE_PATH = "/v2/oauth/revoke/"
# The one OAuth error code that means the grant itself is gone: only the user's new consent helps.
_GRANT_REFUSED = frozenset({"invalid_grant"})
# OAuth error codes about the app (its credentials, its registration, its scopes): an operator's fix.
_APP_REFUSED = frozenset(
    {"invalid_client", "unauthorized_client", "invalid_scope", "access_denied", "unsupported_grant_type"}
)


class OAuthEndpoint:
    """The token endpoint, over one :class:`Transport`."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    @tracer.capture_method(capture_response=False)
    def refresh(self, app: AppCredentials, refresh_token: str, budget: AttemptBudget) -> TokenGrant:
        """Exchange ``refresh_token`` for new tokens; the answer's tokens are registered as secrets.

        Raises:
            ReauthorizationRequiredError: TikTok refused the grant (``invalid_grant`` …).
            AppCredentialsError: TikTok refused the app's credentials (``invalid_client``).
            TikTokApiError: a rate limit or another TikTok error.
            UpstreamUnavailableError / UpstreamBadResponseError: no usable answer.
        """
        response = self._transport.post(
            TOKEN_PATH,
            budget,
            endpoint=Endpoint.REFRESH,
            form={
                "client_key": app.client_key,
                "client_secret": app.client_secret,
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
            },
            idempotent=False,
        )
        body, document = read_document(response)
        grant = _grant(document) if response.status == 200 and document else None
        if grant is not None:
            return grant
        raise _oauth_failure(response.status, document) or tiktok_failure(response, body)

    @tracer.capture_method(capture_response=False)
    def revoke(self, app: AppCredentials, token: str, budget: AttemptBudget) -> bool:
        """Revoke the user's authorization of the app (every token of the user stops working).

        Returns:
            True once TikTok revoked; False when TikTok did not know the token any more (already
            revoked or expired: nothing is left to revoke).

        Raises:
            AppCredentialsError: TikTok refused the app.
            TikTokApiError: a rate limit or another TikTok error.
            UpstreamUnavailableError / UpstreamBadResponseError: no usable answer.
        """
        response = self._transport.post(
            REVOKE_PATH,
            budget,
            endpoint=Endpoint.REVOKE,
            form={"client_key": app.client_key, "client_secret": app.client_secret, "token": token},
        )
        body, document = read_document(response)
        if response.status == 200 and (document is None or not isinstance(document.get("error"), str)):
            return True
        failure = _oauth_failure(response.status, document)
        if isinstance(failure, ReauthorizationRequiredError) or (
            isinstance(failure, TikTokApiError) and failure.error_code == "invalid_request"
        ):
            return False
        raise failure or tiktok_failure(response, body)


def _grant(document: dict[str, Any]) -> TokenGrant | None:
    # Some answers nest the tokens under "data" like the other v2 endpoints; accept both.
    nested = document.get("data")
    data: dict[str, Any] = nested if isinstance(nested, dict) else document
    access, refresh = data.get("access_token"), data.get("refresh_token")
    if not isinstance(access, str) or not access or not isinstance(refresh, str) or not refresh:
        return None
    hide(access)
    hide(refresh)
    return TokenGrant(
        access_token=access,
        expires_in=_positive(data.get("expires_in"), 7200),
        refresh_token=refresh,
        refresh_expires_in=_positive(data.get("refresh_expires_in"), 180 * 86400),
        open_id=data["open_id"] if is_open_id(data.get("open_id")) else None,
        scope=str(data["scope"])[:1000] if isinstance(data.get("scope"), str) else None,
    )


def _oauth_failure(status: int, document: dict[str, Any] | None) -> ServiceError | None:
    """OAuth's error shape ``{"error": "<code>", "error_description", "log_id"}``, as the taxonomy's error."""
    code = document.get("error") if document else None
    if not isinstance(code, str) or document is None:
        return None
    description = document.get("error_description")
    message = f"TikTok refused the token refresh: {code}"
    if isinstance(description, str) and description:
        message += f" ({description[:MAX_MESSAGE_CHARS]})"
    raw_log_id = document.get("log_id")
    log_id = raw_log_id if isinstance(raw_log_id, str) and LOG_ID.fullmatch(raw_log_id) else None
    if code in _GRANT_REFUSED:
        return ReauthorizationRequiredError(message, log_id=log_id, upstream_status=status)
    if code in _APP_REFUSED:
        return AppCredentialsError(message, log_id=log_id, upstream_status=status)
    if status == 200:
        return UpstreamBadResponseError(message, log_id=log_id, upstream_status=status)
    if 400 <= status < 500 and status != 429:
        # invalid_request and the like: judged by its status, like any unknown TikTok code.
        return TikTokApiError(code[:100], message, log_id=log_id, upstream_status=status)
    return None


def _positive(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
