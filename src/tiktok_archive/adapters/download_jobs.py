"""Queued downloads (SQS) whose access token travels encrypted with KMS.

An async request's token must reach the worker, but an SQS message is readable by whoever may receive
from the queue and sits there for days. So the token is encrypted with the stack's KMS key before it
is sent — KMS ``Encrypt`` directly, as the token is far below its 4 KiB limit — under an encryption
context naming the ``request_id``, which KMS checks on ``Decrypt``: a ciphertext lifted into another
message for another request does not decrypt. Only the worker may decrypt, only the API may encrypt.
(Powertools' data masking would do envelope encryption through the AWS Encryption SDK, a cryptography
dependency this function does not otherwise need.)

Message body: ``{"request_id": "<decimal>", "encrypted_access_token": "<base64>"}``. Messages sent by
a backend itself may carry ``access_token`` in clear instead (the queue is encrypted at rest).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_errors import aws_failure
from tiktok_archive.models.errors import MissingTokenError, QueueError

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_sqs import SQSClient

PURPOSE = "tiktok-archive access token"


def encryption_context(request_id: int) -> dict[str, str]:
    """What a token's ciphertext is bound to."""
    return {"purpose": PURPOSE, "request_id": str(request_id)}


class DownloadJobs:
    """Sends download jobs to the queue and opens their tokens.

    Args:
        sqs: a boto3 SQS client.
        kms: a boto3 KMS client.
        queue_url: the download queue (``DOWNLOAD_QUEUE_URL``).
        key_id: the KMS key that protects tokens (``TOKEN_KMS_KEY_ID``).
    """

    def __init__(self, sqs: SQSClient, kms: KMSClient, queue_url: str, key_id: str) -> None:
        self._sqs = sqs
        self._kms = kms
        self._queue_url = queue_url
        self._key_id = key_id

    def send(self, request_id: int, access_token: str) -> str:
        """Queue the download of ``request_id``; returns the message id.

        Raises:
            QueueError: KMS or SQS failed; nothing was queued.
        """
        try:
            ciphertext = self._kms.encrypt(
                KeyId=self._key_id,
                Plaintext=access_token.encode(),
                EncryptionContext=encryption_context(request_id),
            )["CiphertextBlob"]
        except (ClientError, BotoCoreError) as error:
            raise _queue_error("KMS Encrypt", error) from None
        body = {
            "request_id": str(request_id),
            "encrypted_access_token": base64.b64encode(ciphertext).decode(),
        }
        try:
            answer = self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(body))
        except (ClientError, BotoCoreError) as error:
            raise _queue_error("SQS SendMessage", error) from None
        return answer["MessageId"]

    def open_token(self, request_id: int, encrypted: str) -> str:
        """The access token of a queued job.

        Raises:
            MissingTokenError: the ciphertext is malformed or not this request's (permanent).
            QueueError: KMS could not be reached (transient).
        """
        try:
            blob = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise MissingTokenError("encrypted_access_token is not base64") from None
        try:
            plaintext = self._kms.decrypt(
                CiphertextBlob=blob, EncryptionContext=encryption_context(request_id)
            )["Plaintext"]
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise MissingTokenError(
                    "encrypted_access_token does not decrypt for this request_id"
                ) from None
            raise _queue_error("KMS Decrypt", error) from None
        except BotoCoreError as error:
            raise _queue_error("KMS Decrypt", error) from None
        return plaintext.decode()


def _queue_error(operation: str, error: BaseException) -> QueueError:
    return aws_failure(QueueError, operation, error)
