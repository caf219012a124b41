"""The sample events of ``events/`` (one per route and queue, as API Gateway and SQS deliver them), and
builders of more like them: another caller, body, path or message.

Light on purpose (JSON and the standard library): the unit tier, the harness's own tests and the
integration tier all build their events here.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

EVENTS = Path(__file__).resolve().parents[2] / "events"
# The callers: a backend's role session (the sample events' caller), and another principal of the account
# that may call the API too; and each as the service names a caller (the session folded away).
BACKEND = "arn:aws:sts::123456789012:assumed-role/tiktok-archive-backend/backend-7f3a"
OTHER = "arn:aws:sts::123456789012:assumed-role/another-backend/other-91c2"
BACKEND_CALLER = "arn:aws:sts::123456789012:assumed-role/tiktok-archive-backend"
OTHER_CALLER = "arn:aws:sts::123456789012:assumed-role/another-backend"


def load_event(name: str) -> dict[str, Any]:
    """``events/<name>``, a fresh copy."""
    document: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return document


def _signed(event: dict[str, Any], caller: str | None) -> dict[str, Any]:
    """``event`` as API Gateway hands it over for ``caller`` (an assumed role's session ARN), or for a
    request API Gateway would not have authorized (``None``: no identity)."""
    identity = event["requestContext"].setdefault("identity", {})
    if caller is None:
        for name in ("userArn", "caller", "user", "accessKey", "accountId"):
            identity.pop(name, None)
    else:
        identity["userArn"] = caller
        identity["accountId"] = caller.split(":")[4]
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    return event


def _with_tokens(
    document: dict[str, Any], token: str | None, refresh: str | None, open_id: str | None
) -> str:
    if token is not None:
        document["access_token"] = token
    if refresh is not None:
        document["refresh_token"] = refresh
    if open_id is not None:
        document["open_id"] = open_id
    return json.dumps(document)


def api_event(
    request_id: object = None,
    token: str | None = None,
    *,
    body: str | None = None,
    caller: str | None = BACKEND,
    refresh_token: str | None = None,
    open_id: str | None = None,
    path: str = "/downloads",
    method: str = "POST",
    prefer: str | None = None,
) -> dict[str, Any]:
    """``events/api-download.json`` for ``caller`` with another body (``request_id`` and the user's
    ``token`` in it, unless ``body`` is given whole) and Prefer header."""
    event = load_event("api-download.json")
    event["path"] = event["resource"] = path
    event["httpMethod"] = method
    if body is None:
        body = _with_tokens({"request_id": request_id}, token, refresh_token, open_id)
    event["body"] = body
    if prefer is not None:
        event["headers"]["Prefer"] = prefer
    return _signed(event, caller)


def request_event(
    body: dict[str, Any] | str | None,
    token: str | None,
    *,
    caller: str | None = BACKEND,
    refresh_token: str | None = None,
    open_id: str | None = None,
) -> dict[str, Any]:
    """``events/api-create-request.json`` (``POST /requests``) for ``caller``: the ``body``'s fields with
    the user's ``token`` (and ``refresh_token``, ``open_id``) added, or a ``body`` text given whole."""
    event = load_event("api-create-request.json")
    if isinstance(body, dict) or (body is None and token is not None):
        body = _with_tokens(dict(body or {}), token, refresh_token, open_id)
    event["body"] = body
    return _signed(event, caller)


def delete_event(request_id: object, caller: str | None = BACKEND) -> dict[str, Any]:
    """``events/api-cancel-download.json`` (``DELETE /downloads/{id}``) for another id and caller."""
    event = get_event(request_id, caller)
    event["httpMethod"] = event["requestContext"]["httpMethod"] = "DELETE"
    return event


def get_event(request_id: object, caller: str | None = BACKEND) -> dict[str, Any]:
    """``events/api-get-download.json`` for another ``request_id`` and caller."""
    event = load_event("api-get-download.json")
    event["path"] = f"/downloads/{request_id}"
    event["pathParameters"] = {"request_id": str(request_id)}
    event["requestContext"]["path"] = f"/v1/downloads/{request_id}"
    return _signed(event, caller)


def user_requests_event(
    open_id: str, caller: str | None = BACKEND, *, limit: str | None = None, next_page: str | None = None
) -> dict[str, Any]:
    """``events/api-list-user-requests.json`` (``GET /users/{open_id}/requests``)."""
    event = load_event("api-list-user-requests.json")
    event["path"] = f"/users/{quote(open_id, safe='')}/requests"
    event["pathParameters"] = {"open_id": open_id}
    event["requestContext"]["path"] = f"/v1{event['path']}"
    query = {k: v for k, v in (("limit", limit), ("next", next_page)) if v is not None}
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} or None
    return _signed(event, caller)


def erase_event(open_id: str, caller: str | None = BACKEND) -> dict[str, Any]:
    """``events/api-erase-user.json`` (``DELETE /users/{open_id}``)."""
    event = load_event("api-erase-user.json")
    event["path"] = f"/users/{quote(open_id, safe='')}"
    event["pathParameters"] = {"open_id": open_id}
    event["requestContext"]["path"] = f"/v1{event['path']}"
    return _signed(event, caller)


def webhook_event(
    raw: bytes,
    signature: str | None,
    *,
    base64_encoded: bool = False,
    headers: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """``events/api-webhook-download-ready.json`` with another raw body and ``TikTok-Signature``."""
    event = load_event("api-webhook-download-ready.json")
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    event["body"] = base64.b64encode(raw).decode() if base64_encoded else raw.decode()
    event["isBase64Encoded"] = base64_encoded
    multi = {k: v for k, v in event["multiValueHeaders"].items() if k != "TikTok-Signature"}
    if signature is not None:
        multi["TikTok-Signature"] = [signature]
    multi.update(headers or {})
    event["multiValueHeaders"] = multi
    event["headers"] = {k: v[-1] for k, v in multi.items() if v}
    return event


def sqs_record(body: str, message_id: str | None = None, queue_arn: str | None = None) -> dict[str, Any]:
    """``events/sqs-download.json``'s record with another body (and message id, and source queue: the
    sample's deployed queue when None). A record handed to a function directly, never received from SQS:
    its receipt handle is the sample's (:mod:`tests.harness.sqs_pump` makes received ones)."""
    record: dict[str, Any] = load_event("sqs-download.json")["Records"][0]
    record["messageId"] = message_id or str(uuid.uuid4())
    record["body"] = body
    if queue_arn is not None:
        record["eventSourceARN"] = queue_arn
    return record
