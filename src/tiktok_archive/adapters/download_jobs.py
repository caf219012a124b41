"""Queued downloads (SQS) whose access token travels sealed with KMS.

An async request's token must reach the worker, but an SQS message is readable by whoever may receive
from the queue and sits there for days. So the token is sealed by the :class:`TokenVault`, bound to
the ``request_id``: a ciphertext lifted into another message for another request does not open. Only
the API may seal for this purpose, only the worker may open.

The messages are :class:`~tiktok_archive.models.messages.DownloadJob`'s (their shapes are there, with
their parser).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import aws_failure
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, TokenVault
from tiktok_archive.models.errors import QueueError, TokenVaultError
from tiktok_archive.models.messages import DownloadJob

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


def job_binding(request_id: int) -> dict[str, str]:
    """What a queued job's token is bound to, besides its purpose."""
    return {"request_id": str(request_id)}


class DownloadJobs:
    """Sends download jobs to the queue.

    Args:
        sqs: a boto3 SQS client.
        vault: seals the job's token.
        queue_url: the download queue (``DOWNLOAD_QUEUE_URL``).
    """

    def __init__(self, sqs: SQSClient, vault: TokenVault, queue_url: str) -> None:
        self._sqs = sqs
        self._vault = vault
        self._queue_url = queue_url

    def send(self, request_id: int, access_token: str) -> str:
        """Queue the download of ``request_id``; returns the message id.

        Raises:
            QueueError: KMS or SQS failed; nothing was queued.
        """
        try:
            sealed = self._vault.seal(access_token, ACCESS_TOKEN_PURPOSE, job_binding(request_id))
        except TokenVaultError as error:
            raise QueueError(error.message) from None
        return self._send(DownloadJob(request_id, encrypted_access_token=sealed))

    def send_for_grant(self, request_id: int) -> None:
        """Queue the download of a request whose token the user's stored grant provides.

        Raises:
            QueueError: SQS failed; nothing was queued.
        """
        self._send(DownloadJob(request_id, from_grant=True))

    def _send(self, job: DownloadJob) -> str:
        try:
            answer = self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(job.body()))
        except (ClientError, BotoCoreError) as error:
            raise aws_failure(QueueError, "SQS SendMessage", error) from None
        return answer["MessageId"]


def open_job_token(vault: TokenVault, request_id: int, sealed: str) -> str:
    """The access token of a queued job.

    Raises:
        MissingTokenError: the ciphertext is malformed or not this request's (permanent).
        TokenVaultError: KMS could not be reached (transient).
    """
    return vault.open(sealed, ACCESS_TOKEN_PURPOSE, job_binding(request_id))
