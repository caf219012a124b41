"""A grant's tokens sealed with KMS for that grant, and opened again; what cannot be opened needs a consent.

Each token is sealed under an encryption context naming its grant (``{"grant_id": …}``) and its purpose
(access or refresh), so a ciphertext copied into another grant, or used as the other kind, does not open.
"""

from __future__ import annotations

from datetime import timedelta

from tiktok_archive.adapters.grant_items import Grant, SealedTokens
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, REFRESH_TOKEN_PURPOSE, TokenVault
from tiktok_archive.models.clock import utc_now as _now  # tests freeze this module's clock
from tiktok_archive.models.errors import MissingTokenError, ReauthorizationRequiredError
from tiktok_archive.models.portability import TokenGrant
from tiktok_archive.observability import logger


class GrantVault:
    """Seals tokens for a grant and opens a grant's tokens.

    Args:
        vault: the KMS key's seal and open.
    """

    def __init__(self, vault: TokenVault) -> None:
        self._vault = vault

    def seal(self, grant_id: str, fresh: TokenGrant) -> SealedTokens:
        """``fresh`` sealed for ``grant_id``, with their expiries counted from now.

        Raises:
            TokenVaultError: KMS failed.
        """
        now = _now()
        refresh = fresh.refresh_token or None
        return SealedTokens(
            sealed_access_token=self._seal(fresh.access_token, ACCESS_TOKEN_PURPOSE, grant_id),
            access_expires_at=now + timedelta(seconds=fresh.expires_in),
            sealed_refresh_token=self._seal(refresh, REFRESH_TOKEN_PURPOSE, grant_id) if refresh else None,
            refresh_expires_at=now + timedelta(seconds=fresh.refresh_expires_in) if refresh else None,
        )

    def access_token(self, grant: Grant) -> str:
        """The grant's access token, opened.

        Raises:
            ReauthorizationRequiredError: KMS refuses the ciphertext (only a new consent helps).
            TokenVaultError: KMS failed (transient).
        """
        return self._open(grant.sealed_access_token or "", ACCESS_TOKEN_PURPOSE, grant.grant_id)

    def refresh_token(self, grant: Grant) -> str:
        """The grant's refresh token, opened (raises as :meth:`access_token`)."""
        return self._open(grant.sealed_refresh_token or "", REFRESH_TOKEN_PURPOSE, grant.grant_id)

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
