"""Tokens sealed with KMS, each bound to what it is for.

A token that must outlive its request — inside a queued job, in a stored grant — is encrypted with
the stack's KMS key (``Encrypt`` directly: tokens are at most 2,048 characters, far below KMS's 4 KiB
limit) under an encryption context naming its purpose and what it belongs to (a ``request_id``, a
user's grant). KMS checks that context on ``Decrypt``: a ciphertext lifted into another place does not
open. IAM conditions each function's use of the key on the purpose.
(Powertools' data masking would do envelope encryption through the AWS Encryption SDK, a cryptography
dependency this function does not otherwise need.)
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import aws_failure
from tiktok_archive.models.errors import MissingTokenError, TokenVaultError
from tiktok_archive.observability import hide

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

# Encryption-context purposes (not secrets); IAM conditions each function's use of the key on them.
ACCESS_TOKEN_PURPOSE = "tiktok-archive access token"  # noqa: S105
REFRESH_TOKEN_PURPOSE = "tiktok-archive refresh token"  # noqa: S105


class TokenVault:
    """Seals and opens tokens with one KMS key.

    Args:
        kms: a boto3 KMS client.
        key_id: the key that protects tokens (``TOKEN_KMS_KEY_ID``).
    """

    def __init__(self, kms: KMSClient, key_id: str) -> None:
        self._kms = kms
        self._key_id = key_id

    def seal(self, token: str, purpose: str, binding: dict[str, str]) -> str:
        """The token encrypted under ``{"purpose": purpose, **binding}``, as base64 text.

        Raises:
            TokenVaultError: KMS failed (transient).
        """
        try:
            blob = self._kms.encrypt(
                KeyId=self._key_id,
                Plaintext=token.encode(),
                EncryptionContext={"purpose": purpose, **binding},
            )["CiphertextBlob"]
        except (ClientError, BotoCoreError) as error:
            raise aws_failure(TokenVaultError, "KMS Encrypt", error) from None
        return base64.b64encode(blob).decode()

    def open(self, sealed: str, purpose: str, binding: dict[str, str]) -> str:
        """The token sealed by :meth:`seal` with the same purpose and binding (registered as a secret).

        Raises:
            MissingTokenError: the text is not base64, or does not decrypt under this context
                (permanent: it was made for something else, or tampered with).
            TokenVaultError: KMS could not be reached (transient).
        """
        try:
            blob = base64.b64decode(sealed, validate=True)
        except (binascii.Error, ValueError):
            raise MissingTokenError("the encrypted token is not base64") from None
        try:
            plaintext = self._kms.decrypt(
                CiphertextBlob=blob,
                KeyId=self._key_id,
                EncryptionContext={"purpose": purpose, **binding},
            )["Plaintext"]
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise MissingTokenError("the encrypted token does not decrypt for this request") from None
            raise aws_failure(TokenVaultError, "KMS Decrypt", error) from None
        except BotoCoreError as error:
            raise aws_failure(TokenVaultError, "KMS Decrypt", error) from None
        token = plaintext.decode(errors="replace")
        hide(token)
        return token
