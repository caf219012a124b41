"""API Gateway (REST, Lambda proxy) entry point; every route is signed with SigV4 (``AWS_IAM``).

``POST /requests`` (add a data request and follow it), ``POST /downloads`` (download a ready one, or
queue it), ``GET`` / ``DELETE /downloads/{request_id}`` (its record; cancel it), ``GET
/users/{open_id}/requests`` (a user's requests) and ``DELETE /users/{open_id}`` (erase a user). Thin on
purpose: it reads the caller API Gateway verified, the path, the query and the body, calls a service and
turns the answer — or the one error that explains a failure — into JSON. The event is never logged: its
body holds the user's tokens, its headers the caller's signature.
"""

from __future__ import annotations

import binascii
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from tiktok_archive.handlers.entry import lambda_entry
from tiktok_archive.handlers.http_answers import answer_errors, json_answer
from tiktok_archive.models.caller import caller_of
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download_record import DownloadStatus
from tiktok_archive.models.errors import InvalidRequestError
from tiktok_archive.models.inputs import parse_json_object, parse_request_id, prefers_async
from tiktok_archive.models.messages import EraseUser
from tiktok_archive.models.paging import parse_page_size
from tiktok_archive.models.portability import (
    HANDOVER_FIELDS,
    parse_handed_tokens,
    parse_new_request,
    parse_open_id,
    refuse_unknown_fields,
)
from tiktok_archive.models.tiktok_quota import Priority
from tiktok_archive.observability import hide, logger
from tiktok_archive.runtime import (
    add_request,
    caller_downloads,
    cancel_request,
    record_queries,
    start_invocation,
    unit_of_work,
)
from tiktok_archive.runtime_adapters import lifecycle_queue

app = APIGatewayRestResolver()
answer_errors(
    app,
    "POST /requests, POST /downloads, GET or DELETE /downloads/{request_id}, GET /users/{open_id}/requests "
    "and DELETE /users/{open_id}",
)
_DOWNLOAD_FIELDS = HANDOVER_FIELDS | {"request_id"}


@app.post("/downloads")
def create_download() -> Response[str]:
    """Download ``request_id``'s archive once and answer with a link (``Prefer: respond-async``: queue it)."""
    event = app.current_event
    caller = _caller()
    body = _json_body(required=True)
    refuse_unknown_fields(body, _DOWNLOAD_FIELDS)
    request_id = parse_request_id(body.get("request_id"))
    handed = parse_handed_tokens(body)
    if not prefers_async(event.headers.get("Prefer")):
        answer = caller_downloads().download(caller, request_id, handed, _deadline())
        return json_answer(HTTPStatus.OK, answer.to_body())
    answer = caller_downloads().queue(caller, request_id, handed, _deadline())
    if answer.record.status is DownloadStatus.COMPLETED:
        return json_answer(HTTPStatus.OK, answer.to_body())  # nothing left to wait for (RFC 7240 allows it)
    location = f"{event.request_context.path.rstrip('/')}/{request_id}"
    headers = {"Location": location, "Preference-Applied": "respond-async"}
    return json_answer(HTTPStatus.ACCEPTED, answer.to_body(), headers)


@app.get("/downloads/<request_id>")
def get_download(request_id: str) -> Response[str]:
    """The caller's record, with a fresh link once the archive is stored (TikTok is not asked)."""
    caller, wanted = _caller(), parse_request_id(request_id)
    answer = record_queries().describe(caller, wanted)
    return json_answer(HTTPStatus.OK, answer.to_body())


@app.post("/requests")
def create_request() -> Response[str]:
    """Add a data request at TikTok for the tokens' user; the service follows it to the archive."""
    event = app.current_event
    caller = _caller()
    new = parse_new_request(_json_body(required=True))
    record = add_request().add(caller, new, _deadline())
    location = f"{event.request_context.path.rstrip('/').rsplit('/', 1)[0]}/downloads/{record.request_id}"
    return json_answer(HTTPStatus.ACCEPTED, record.to_body(), {"Location": location})


@app.delete("/downloads/<request_id>")
def cancel_download(request_id: str) -> Response[str]:
    """Cancel the caller's request: at TikTok while it can be, and here for good (no link ever again)."""
    caller, wanted = _caller(), parse_request_id(request_id)
    record = cancel_request().cancel(caller, wanted, _deadline())
    return json_answer(HTTPStatus.OK, record.to_body())


@app.get("/users/<open_id>/requests")
def list_user_requests(open_id: str) -> Response[str]:
    """The caller's requests of one user, newest first, a page at a time (``limit``, ``next``)."""
    caller, user = _caller(), _open_id(open_id)
    event = app.current_event
    limit = parse_page_size(event.get_query_string_value("limit"))
    page = record_queries().user_requests(caller, user, limit, event.get_query_string_value("next"))
    return json_answer(HTTPStatus.OK, page.to_body())


@app.delete("/users/<open_id>")
def erase_user(open_id: str) -> Response[str]:
    """Erase a user under the caller: the work is queued at once; ``User Erased`` says when it is done."""
    caller, user = _caller(), _open_id(open_id)
    lifecycle_queue().send(EraseUser(caller, user))
    logger.info("user's erasure queued")
    return json_answer(HTTPStatus.ACCEPTED, {"open_id": user, "status": "erasing"})


def _caller() -> str:
    """The caller API Gateway verified (``AWS_IAM``), on every log record of the invocation."""
    caller = caller_of(app.current_event.request_context.identity.user_arn)
    logger.append_keys(caller=caller)
    return caller


def _open_id(segment: str) -> str:
    """A path's ``open_id`` (percent-encoding undone: an id with ``/`` or ``+`` comes encoded)."""
    return parse_open_id(unquote(segment))


def _deadline() -> Deadline:
    deadline: Deadline = app.context["deadline"]
    return deadline


def _json_body(*, required: bool) -> dict[str, Any]:
    """The body as a JSON object; its tokens registered as secrets before anything else can log them."""
    try:
        text = app.current_event.decoded_body
    except (UnicodeDecodeError, binascii.Error):
        raise InvalidRequestError("the body must be a JSON object in UTF-8") from None
    document = parse_json_object(text if required else (text or "{}"))
    for name in ("access_token", "refresh_token"):
        value = document.get(name)
        if isinstance(value, str):
            hide(value)
    return document


@lambda_entry(correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for the REST API."""
    # One request is one unit of work: the invocation's deadline, its own count of attempts, and its
    # priority on TikTok's quota — a DELETE (a cancel, an erasure) before every other caller.
    priority = Priority.PURGE if event.get("httpMethod") == "DELETE" else Priority.INTERACTIVE
    deadline = unit_of_work(start_invocation(context), priority)
    app.append_context(deadline=deadline)  # type: ignore[no-untyped-call]
    return app.resolve(event, context)
