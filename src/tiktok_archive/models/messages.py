"""Every queue message, each type with its producer (``body``) and its parser side by side.

The download queue: ``{"request_id", "access_token"}`` (a backend's own message, the token in clear
inside the encrypted queue), ``{"request_id", "encrypted_access_token"}`` (queued by ``POST /downloads``
with ``Prefer: respond-async``: the token sealed with KMS, bound to the ``request_id``) or
``{"request_id", "source": "grant"}`` (queued by the service for a request whose user's grant provides the
token). See :class:`DownloadJob`.

The lifecycle queue: small JSON documents, never a token:

- ``{"kind": "check", "request_id", "seq"}``: status check number ``seq`` of a waiting request;
- ``{"kind": "webhook", "event": "portability.download.ready", "request_id", "user_openid"?,
  "delivery_id"}`` and ``{"kind": "webhook", "event": "authorization.removed", "user_openid", "reason",
  "delivery_id"}``: work that arrived by TikTok's webhook;
- ``{"kind": "erase", "caller", "open_id"}``: a caller erases a user (``DELETE /users/{open_id}``);
- ``{"kind": "purge", "open_id", "caller"?, "reason", "started_at"}``: the second pass of a user's purge
  (it finds what the first pass's eventually consistent index did not show yet);
- ``{"kind": "revoke", "caller", "open_id", "cancel": [request_id, …]}``: the TikTok side of an erasure
  (cancel the user's pending requests, revoke their authorization) — the only one that waits for
  TikTok's rate limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tiktok_archive.models.caller import MAX_CALLER_LENGTH
from tiktok_archive.models.clock import format_utc, parse_utc
from tiktok_archive.models.errors import InvalidRequestError, MissingTokenError
from tiktok_archive.models.inputs import INT64_MAX, is_int_in, parse_access_token, parse_request_id
from tiktok_archive.models.portability import is_open_id
from tiktok_archive.models.webhook import AUTHORIZATION_REMOVED, DOWNLOAD_READY

MAX_SEQ = 1_000_000
# A sealed token: KMS's ciphertext of at most 2,048 characters, in base64.
MAX_SEALED_LENGTH = 8192
MAX_CANCELS = 1000
# A queued job that has not started after this long may be queued again by a repeated async request
# or a repeated trigger (a duplicate message is harmless: the claim lets only one of them download).
QUEUED_LEASE = timedelta(minutes=15)


@dataclass(frozen=True)
class DownloadJob:
    """A download queue message: the request id and where its token is (see the module's docstring).

    ``repr`` shows neither form of the token.
    """

    request_id: int
    access_token: str | None = field(default=None, repr=False)
    encrypted_access_token: str | None = field(default=None, repr=False)
    from_grant: bool = False

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"request_id": str(self.request_id)}
        if self.from_grant:
            body["source"] = "grant"
        elif self.encrypted_access_token is not None:
            body["encrypted_access_token"] = self.encrypted_access_token
        else:
            body["access_token"] = self.access_token
        return body


def parse_download_job(request_id: int, document: dict[str, Any]) -> DownloadJob:
    """The job of a download queue message whose ``request_id`` is already parsed.

    Raises:
        MissingTokenError: neither a well-formed ``access_token`` nor a non-empty
            ``encrypted_access_token`` (and not a grant's job).
    """
    if document.get("source") == "grant":
        return DownloadJob(request_id, from_grant=True)
    encrypted = document.get("encrypted_access_token")
    if encrypted is not None:
        if not isinstance(encrypted, str) or not encrypted or len(encrypted) > MAX_SEALED_LENGTH:
            raise MissingTokenError("encrypted_access_token must be a base64 string")
        return DownloadJob(request_id, encrypted_access_token=encrypted)
    return DownloadJob(request_id, access_token=parse_access_token(document.get("access_token")))


# -- the lifecycle queue -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StatusCheck:
    """Check number ``seq`` of a waiting request."""

    request_id: int
    seq: int

    def body(self) -> dict[str, Any]:
        return {"kind": "check", "request_id": str(self.request_id), "seq": self.seq}


@dataclass(frozen=True)
class ArchiveReadyWork:
    """TikTok announced (webhook) that ``request_id``'s archive is ready (and, maybe, whose it is)."""

    request_id: int
    user_openid: str | None = None
    delivery_id: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "webhook",
            "event": DOWNLOAD_READY,
            "request_id": str(self.request_id),
        }
        if self.user_openid is not None:
            body["user_openid"] = self.user_openid
        return _with_delivery(body, self.delivery_id)


@dataclass(frozen=True)
class AuthorizationRemovedWork:
    """TikTok announced (webhook) that the user disconnected the app: every caller's data of theirs goes."""

    user_openid: str
    reason: int | None
    delivery_id: str | None = None

    def body(self) -> dict[str, Any]:
        body = {"kind": "webhook", "event": AUTHORIZATION_REMOVED, "user_openid": self.user_openid}
        return _with_delivery({**body, "reason": self.reason}, self.delivery_id)


@dataclass(frozen=True)
class EraseUser:
    """``caller`` erases ``open_id``: everything of that user under that caller goes."""

    caller: str
    open_id: str

    def body(self) -> dict[str, Any]:
        return {"kind": "erase", "caller": self.caller, "open_id": self.open_id}


@dataclass(frozen=True)
class PurgeAgain:
    """The second pass of a user's purge: ``caller``'s records only, or every caller's (None).

    ``started_at``: when the first pass began; records created later are not the purge's.
    """

    open_id: str
    caller: str | None
    reason: int | None
    started_at: datetime

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "purge",
            "open_id": self.open_id,
            "reason": self.reason,
            "started_at": format_utc(self.started_at),
        }
        if self.caller is not None:
            body["caller"] = self.caller
        return body


@dataclass(frozen=True)
class RevokeAtTikTok:
    """The TikTok side of an erasure: cancel ``cancel`` (pending requests), then revoke the user's tokens."""

    caller: str
    open_id: str
    cancel: tuple[int, ...]

    def body(self) -> dict[str, Any]:
        return {
            "kind": "revoke",
            "caller": self.caller,
            "open_id": self.open_id,
            "cancel": [str(request_id) for request_id in self.cancel],
        }


LifecycleMessage = (
    StatusCheck | ArchiveReadyWork | AuthorizationRemovedWork | EraseUser | PurgeAgain | RevokeAtTikTok
)
# The messages whose work calls TikTok: they wait when TikTok rate-limits the invocation; a purge never does.
TIKTOK_WORK = (StatusCheck, RevokeAtTikTok)


def parse_lifecycle_message(document: dict[str, Any]) -> LifecycleMessage:
    """The message ``document`` holds.

    Raises:
        InvalidRequestError: no known kind, or a field out of its range.
    """
    kind = document.get("kind")
    if kind == "check":
        seq = document.get("seq")
        if not is_int_in(seq, 0, MAX_SEQ):
            raise InvalidRequestError("seq must be a whole number")
        return StatusCheck(parse_request_id(document.get("request_id")), seq)
    if kind == "webhook":
        return _webhook_work(document)
    if kind == "erase":
        return EraseUser(_caller(document.get("caller")), _open_id(document.get("open_id")))
    if kind == "purge":
        caller = document.get("caller")
        started_at = document.get("started_at")
        try:
            started = parse_utc(started_at) if isinstance(started_at, str) else None
        except ValueError:
            started = None
        if started is None:
            raise InvalidRequestError("started_at must be a UTC time")
        return PurgeAgain(
            _open_id(document.get("open_id")),
            None if caller is None else _caller(caller),
            _reason(document.get("reason")),
            started,
        )
    if kind == "revoke":
        cancel = document.get("cancel")
        if not isinstance(cancel, list) or len(cancel) > MAX_CANCELS:
            raise InvalidRequestError("cancel must be a list of request ids")
        return RevokeAtTikTok(
            _caller(document.get("caller")),
            _open_id(document.get("open_id")),
            tuple(parse_request_id(request_id) for request_id in cancel),
        )
    raise InvalidRequestError("not a lifecycle message")


def _webhook_work(document: dict[str, Any]) -> LifecycleMessage:
    event = document.get("event")
    user = document.get("user_openid")
    delivery = document.get("delivery_id")
    delivery_id = delivery if isinstance(delivery, str) else None
    if event == DOWNLOAD_READY:
        request_id = parse_request_id(document.get("request_id"))
        return ArchiveReadyWork(request_id, user if is_open_id(user) else None, delivery_id)
    if event == AUTHORIZATION_REMOVED and is_open_id(user):
        return AuthorizationRemovedWork(str(user), _reason(document.get("reason")), delivery_id)
    raise InvalidRequestError("not a lifecycle message")


def _with_delivery(body: dict[str, Any], delivery_id: str | None) -> dict[str, Any]:
    return body if delivery_id is None else {**body, "delivery_id": delivery_id}


def _reason(value: object) -> int | None:
    return value if is_int_in(value, -INT64_MAX, INT64_MAX) else None


def _caller(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_CALLER_LENGTH:
        raise InvalidRequestError("caller must be an ARN")
    return value


def _open_id(value: object) -> str:
    if not is_open_id(value):
        raise InvalidRequestError("open_id must be 1 to 256 visible ASCII characters")
    return str(value)
