"""API Gateway (REST, Lambda proxy) entry point.

``POST /requests`` (add a data request and follow it), ``POST /downloads`` (download a ready one, or
queue it), ``GET /downloads/{request_id}`` (its record) and ``DELETE /downloads/{request_id}`` (cancel
it). Thin on purpose: it reads the bearer token, the ``request_id``, the body and the ``Prefer`` header,
calls a service and turns the answer — or the one error that explains a failure — into JSON. The event
is never logged: its ``Authorization`` header holds the user's TikTok token.
"""

from __future__ import annotations

import binascii
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from tiktok_archive.handlers.http_answers import answer_errors, json_answer
from tiktok_archive.models.download import (
    DownloadRequest,
    parse_authorization_header,
    parse_json_object,
    parse_request_id,
    prefers_async,
)
from tiktok_archive.models.download_record import DownloadStatus
from tiktok_archive.models.errors import InvalidRequestError
from tiktok_archive.models.portability import parse_new_request
from tiktok_archive.observability import hide, logger, metrics, tracer
from tiktok_archive.runtime import download_service, request_lifecycle, start_invocation

app = APIGatewayRestResolver()
answer_errors(app, "POST /requests, POST /downloads and GET or DELETE /downloads/{request_id}")


@app.post("/downloads")
def create_download() -> Response[str]:
    """Download ``request_id``'s archive once and answer with a link (``Prefer: respond-async``: queue it)."""
    event = app.current_event
    token = _bearer_token()
    body = parse_json_object(_body())
    request = DownloadRequest(parse_request_id(body.get("request_id")), token)
    remaining_ms = app.lambda_context.get_remaining_time_in_millis()
    if not prefers_async(event.headers.get("Prefer")):
        return json_answer(HTTPStatus.OK, download_service().download(request, remaining_ms).to_body())
    answer = download_service().queue(request, remaining_ms)
    if answer.record.status is DownloadStatus.COMPLETED:
        return json_answer(HTTPStatus.OK, answer.to_body())  # nothing left to wait for (RFC 7240 allows it)
    location = f"{event.request_context.path.rstrip('/')}/{request.request_id}"
    headers = {"Location": location, "Preference-Applied": "respond-async"}
    return json_answer(HTTPStatus.ACCEPTED, answer.to_body(), headers)


@app.get("/downloads/<request_id>")
def get_download(request_id: str) -> Response[str]:
    """The download's record for its owner, with a fresh link once the archive is stored."""
    request = DownloadRequest(parse_request_id(request_id), _bearer_token())
    remaining_ms = app.lambda_context.get_remaining_time_in_millis()
    return json_answer(HTTPStatus.OK, download_service().describe(request, remaining_ms).to_body())


@app.post("/requests")
def create_request() -> Response[str]:
    """Add a data request at TikTok for the token's user; the service follows it to the archive."""
    event = app.current_event
    token = _bearer_token()
    new = parse_new_request(parse_json_object(_body() or "{}"))
    hide(new.refresh_token)
    record = request_lifecycle().add(token, new, app.lambda_context.get_remaining_time_in_millis())
    location = f"{event.request_context.path.rstrip('/').rsplit('/', 1)[0]}/downloads/{record.request_id}"
    return json_answer(HTTPStatus.ACCEPTED, record.to_body(), {"Location": location})


@app.delete("/downloads/<request_id>")
def cancel_download(request_id: str) -> Response[str]:
    """Cancel the owner's request: at TikTok while pending, and here for good (no link ever again)."""
    request = DownloadRequest(parse_request_id(request_id), _bearer_token())
    remaining_ms = app.lambda_context.get_remaining_time_in_millis()
    return json_answer(HTTPStatus.OK, request_lifecycle().cancel(request, remaining_ms).to_body())


def _body() -> str | None:
    """The request's body as text; a (base64-encoded) body that is not UTF-8 is a bad request."""
    try:
        return app.current_event.decoded_body
    except (UnicodeDecodeError, binascii.Error):
        raise InvalidRequestError("the body must be a JSON object in UTF-8") from None


def _bearer_token() -> str:
    """The caller's TikTok token, registered as a secret before anything else can log it."""
    token = parse_authorization_header(app.current_event.headers.get("Authorization"))
    hide(token)
    return token


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for the REST API."""
    start_invocation(context.get_remaining_time_in_millis())
    return app.resolve(event, context)
