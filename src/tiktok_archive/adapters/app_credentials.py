"""The TikTok app's ``client_key`` and ``client_secret``, from a Secrets Manager secret.

Read with Powertools Parameters. The secret is ``{"client_key": "…", "client_secret": "…"}``
(``TIKTOK_APP_SECRET_ARN``). It is read once and cached for :data:`CACHE_SECONDS`; a caller that finds
it refused (TikTok's ``invalid_client``, a webhook signature that fails with it) may ask again with
``fresh=True`` so that a rotated secret is picked up at once. The client secret is registered with the
log scrubber the moment it is read.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

from tiktok_archive.models.errors import AppCredentialsError
from tiktok_archive.models.portability import AppCredentials
from tiktok_archive.observability import hide

CACHE_SECONDS = 300
# A read past the cache (``fresh``) happens at most this often per container: wrong webhook signatures,
# which anyone can send, must not each become a Secrets Manager call.
FRESH_READ_EVERY_SECONDS = 60.0
# What the template's generated secret holds until an operator puts the app's real credentials in.
PLACEHOLDER_KEY = "REPLACE_WITH_CLIENT_KEY"


class AppCredentialsSource:
    """Reads the app's credentials from one secret.

    Args:
        provider: Powertools' Secrets Manager provider (built on the service's bounded client).
        secret_arn: the secret (``TIKTOK_APP_SECRET_ARN``).
    """

    def __init__(self, provider: SecretsProvider, secret_arn: str) -> None:
        self._provider = provider
        self._secret_arn = secret_arn
        self._fresh_read_at: float | None = None

    def get(self, *, fresh: bool = False) -> AppCredentials:
        """The app's credentials (cached; ``fresh`` reads the secret again, at most once a minute).

        Raises:
            AppCredentialsError: the secret cannot be read, is not the expected JSON, or still holds
                the template's placeholder (an operator's fix; transient).
        """
        if fresh:
            now = time.monotonic()
            if self._fresh_read_at is not None and now - self._fresh_read_at < FRESH_READ_EVERY_SECONDS:
                fresh = False
            else:
                self._fresh_read_at = now
        try:
            value: Any = self._provider.get(
                self._secret_arn, max_age=CACHE_SECONDS, transform="json", force_fetch=fresh
            )
        except (GetParameterError, TransformParameterError) as error:
            # Powertools' message names the secret and AWS's error, never the value.
            raise AppCredentialsError(
                f"the TikTok app secret could not be read: {type(error).__name__}"
            ) from None
        key = value.get("client_key") if isinstance(value, dict) else None
        secret = value.get("client_secret") if isinstance(value, dict) else None
        if not isinstance(key, str) or not key or not isinstance(secret, str) or not secret:
            raise AppCredentialsError(
                'the TikTok app secret must be JSON {"client_key": "…", "client_secret": "…"}'
            )
        hide(secret)
        if key == PLACEHOLDER_KEY:
            raise AppCredentialsError(
                "the TikTok app secret still holds the template's placeholder: put the app's client_key "
                "and client_secret in it (see the README, Deploy)"
            )
        return AppCredentials(key, secret)
