"""The one error taxonomy of the service.

Every failure a caller can see is a :class:`ServiceError`. Each subclass fixes the answer's HTTP status
and whether trying again later can succeed (``transient``); the API handler maps any of them to a JSON
response in one place and the SQS worker uses ``transient`` to decide between a retry and an
acknowledgement. Messages are written for the caller and never hold the access token or a presigned URL.

The service's own errors are here; TikTok's and its stream's are in :mod:`tiktok_errors`, the webhook's
in :mod:`webhook_errors`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of every error the service reports to a caller.

    Attributes:
        code: a stable machine-readable code (TikTok's own code when TikTok gave one).
        message: a human-readable explanation, safe to log and to return.
        http_status: the status our API answers with.
        transient: True when the same request may succeed later (SQS redelivers it).
        log_id: TikTok's ``log_id`` for its support, when TikTok answered.
        upstream_status: the HTTP status TikTok answered with, when it answered.
        retry_after: TikTok's ``Retry-After`` value, passed on to the caller.
        redeliver_after: seconds after which a queued job that failed this way is worth trying again
            (``Retry-After`` when it is a number of seconds; None: the queue's own visibility timeout).
    """

    code: ClassVar[str] = "transfer_failed"
    http_status: ClassVar[int] = 502
    transient: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        log_id: str | None = None,
        upstream_status: int | None = None,
        retry_after: str | None = None,
        redeliver_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.log_id = log_id
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        if redeliver_after is None and retry_after is not None and retry_after.isdigit():
            redeliver_after = int(retry_after)
        self.redeliver_after = redeliver_after

    @property
    def error_code(self) -> str:
        """The code reported to the caller; instances may override the class default."""
        return self.code

    @property
    def status(self) -> int:
        """The HTTP status reported to the caller; instances may override the class default."""
        return self.http_status

    @property
    def is_transient(self) -> bool:
        """Whether retrying the same request later may succeed."""
        return self.transient

    def to_body(self) -> dict[str, Any]:
        """The JSON error document our API returns: ``{"error": {"code", "message", "log_id"}}``."""
        return {"error": {"code": self.error_code, "message": self.message, "log_id": self.log_id}}

    def log_fields(self) -> dict[str, Any]:
        """Structured fields for an error log record (no secrets: the message is caller-safe)."""
        return {
            "error_code": self.error_code,
            "error_message": self.message,
            "http_status": self.status,
            "transient": self.is_transient,
            "tiktok_log_id": self.log_id,
            "upstream_status": self.upstream_status,
        }


class InvalidRequestError(ServiceError):
    """The caller's request is malformed (body, ``request_id``); nothing was called."""

    code = "invalid_request"
    http_status = 400
    transient = False


class MissingTokenError(ServiceError):
    """No usable ``access_token`` was given (in the body or an SQS message); nothing was called."""

    code = "missing_token"
    http_status = 400
    transient = False


class CallerNotIdentifiedError(ServiceError):
    """The request carries no caller verified by API Gateway (``AWS_IAM``); nothing was read or written."""

    code = "caller_not_identified"
    http_status = 403
    transient = False


class OpenIdMismatchError(ServiceError):
    """TikTok's refresh answer names another user than the ``open_id`` the caller gave; nothing was kept.

    The user is who TikTok says: a caller's ``open_id`` never decides whose grant tokens join.
    """

    code = "open_id_mismatch"
    http_status = 400
    transient = False


class DeadlineExceededError(ServiceError):
    """The invocation's time budget (its Lambda deadline less a safety margin) ran out.

    The upload was aborted before Lambda could kill the function; the same request can be sent again
    (through the queue for archives too large for the API's time limit).
    """

    code = "deadline_exceeded"
    http_status = 504


class DownloadNotFoundError(ServiceError):
    """No download of this ``request_id`` is visible with this token.

    Answered alike whether the record does not exist or TikTok does not confirm that the token's user
    owns the request, so that the answer reveals nothing about other users' downloads.
    """

    code = "not_found"
    http_status = 404
    transient = False


class ArchiveNotReadyError(ServiceError):
    """TikTok is still preparing the archive (Check Status says ``pending``); ask again later."""

    code = "archive_not_ready"
    http_status = 409


class RequestExpiredError(ServiceError):
    """TikTok's four-day download window is over (Check Status says ``expired``): add a new request."""

    code = "request_expired"
    http_status = 410
    transient = False


class RequestCancelledError(ServiceError):
    """The request was cancelled (at TikTok, or with ``DELETE``); its archive is gone for good."""

    code = "request_cancelled"
    http_status = 410
    transient = False


class ArchiveTooLargeError(ServiceError):
    """The archive does not fit in S3's 10,000 parts at the configured part size.

    Permanent: trying again streams the same bytes into the same limit; a larger ``PART_SIZE_MIB`` is the
    remedy.
    """

    code = "archive_too_large"
    http_status = 507
    transient = False


class DownloadInProgressError(ServiceError):
    """Another invocation is downloading this ``request_id`` right now; ask again after ``retry_after``."""

    code = "download_in_progress"
    http_status = 409


class RecordStoreError(ServiceError):
    """The download records (DynamoDB) could not be read or written; nothing was downloaded."""

    code = "record_store_error"
    http_status = 503


class QueueError(ServiceError):
    """The download could not be queued (SQS or KMS failed); the record says ``failed``."""

    code = "queue_error"
    http_status = 503


class StorageError(ServiceError):
    """S3 refused or failed a call; the multipart upload, if any, was aborted."""

    code = "storage_error"
    http_status = 503


class UnexpectedError(ServiceError):
    """A bug; recorded and answered without any of its details."""

    code = "unexpected_error"
    http_status = 500


class ConfigurationError(ServiceError):
    """The function's environment is invalid; the message names the variable.

    Transient on purpose: a queued message must not be acknowledged (and so dropped) because of a
    deployment mistake; it is redelivered and ends in the dead-letter queue if the mistake stays.
    """

    code = "configuration_error"
    http_status = 500


class ReauthorizationRequiredError(ServiceError):
    """The user's tokens cannot be renewed; only the user can fix it, by consenting again.

    TikTok refused to refresh them (``invalid_grant``: the refresh token expired, was revoked or was
    already used), or there is no refresh token and the access token expired. The only OAuth refusal
    that ends a user's grant.
    """

    code = "reauthorization_required"
    http_status = 401
    transient = False


class AppCredentialsError(ServiceError):
    """TikTok refused the app itself, or the secret holding its credentials is missing or malformed.

    An OAuth refusal that is the app's, not the user's (``invalid_client``, ``unauthorized_client``,
    ``invalid_scope``, ``access_denied`` …: anything but ``invalid_grant``), or a secret that is not
    ``{"client_key", "client_secret"}``. An operator's fix; transient on purpose, like a configuration
    error, so that work waits for the fix instead of being dropped, and no user's grant is erased.
    """

    code = "app_credentials_invalid"
    http_status = 500


class TokenVaultError(ServiceError):
    """KMS could not seal or open a token; nothing that needed it was done."""

    code = "token_vault_error"
    http_status = 503


class TokenRefreshInProgressError(ServiceError):
    """Another invocation is refreshing this user's tokens right now; the work comes back in a moment."""

    code = "token_refresh_in_progress"
    http_status = 503

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after="5")


class PreparationTimedOutError(ServiceError):
    """TikTok did not prepare the archive in ``STATUS_POLL_GIVE_UP_HOURS``; the service stopped waiting."""

    code = "preparation_timed_out"
    http_status = 504
    transient = False


class HandedBackError(ServiceError):
    """A queued message not worked on because TikTok rate-limited the invocation; it comes back later."""

    code = "handed_back"
    http_status = 429
