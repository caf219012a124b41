"""API Gateway (REST, Lambda proxy) entry point.

``POST /requests`` (add a data request and follow it), ``POST /downloads`` (download a ready one, or
queue it), ``GET /downloads/{request_id}`` (its record) and ``DELETE /downloads/{request_id}`` (cancel
it). Thin on purpose: it reads the bearer token, the ``request_id``, the body and the ``Prefer`` header,
calls a service and turns the answer — or the one error that explains a failure — into JSON. The event
is never logged: its ``Authorization`` header holds the user's TikTok token.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from tiktok_archive.models.download import (
    DownloadRequest,
    parse_authorization_header,
    parse_json_object,
    parse_request_id,
    prefers_async,
)
from tiktok_archive.models.download_record import DownloadStatus
from tiktok_archive.models.errors import TransferError, UnexpectedError
from tiktok_archive.models.portability import parse_new_request
from tiktok_archive.observability import hide, logger, metrics, tracer
from tiktok_archive.runtime import download_service, request_lifecycle, start_invocation

app = APIGatewayRestResolver()
# Answers carry a presigned URL or a user's error: no cache may keep them.
_NO_STORE = {"Cache-Control": "no-store"}


@app.post("/downloads")
def create_download() -> Response[str]:
    """Download ``request_id``'s archive once and answer with a link (``Prefer: respond-async``: queue it)."""
    event = app.current_event
    token = _bearer_token()
    body = parse_json_object(event.decoded_body)
    request = DownloadRequest(parse_request_id(body.get("request_id")), token)
    remaining_ms = app.lambda_context.get_remaining_time_in_millis()
    if not prefers_async(event.headers.get("Prefer")):
        return _json(HTTPStatus.OK, download_service().download(request, remaining_ms).to_body())
    answer = download_service().queue(request, remaining_ms)
    if answer.record.status is DownloadStatus.COMPLETED:
        return _json(HTTPStatus.OK, answer.to_body())  # nothing left to wait for (RFC 7240 allows it)
    location = f"{event.request_context.path.rstrip('/')}/{request.request_id}"
    headers = {"Location": location, "Preference-Applied": "respond-async"}
    return _json(HTTPStatus.ACCEPTED, answer.to_body(), headers)


@app.get("/downloads/<request_id>")
def get_download(request_id: str) -> Response[str]:
    """The download's record for its owner, with a fresh link once the archive is stored."""
    request = DownloadRequest(parse_request_id(request_id), _bearer_token())
    remaining_ms = app.lambda_context.get_remaining_time_in_millis()
    return _json(HTTPStatus.OK, download_service().describe(request, remaining_ms).to_body())


@app.post("/requests")
def create_request() -> Response[str]:
    """Add a data request at TikTok for the token's user; the service follows it to the archive."""
    event = app.current_event
    token = _bearer_token()
    new = parse_new_request(parse_json_object(event.decoded_body or "{}"))
    hide(new.refresh_token)
    record = request_lifecycle().add(token, new, app.lambda_context.get_remaining_time_in_millis())
    location = f"{event.request_context.path.rsplit('/', 1)[0]}/downloads/{record.request_id}"
    return _json(HTTPStatus.ACCEPTED, record.to_body(), {"Location": location})


@app.delete("/downloads/<request_id>")
def cancel_download(request_id: str) -> Response[str]:
    """Cancel the owner's request: at TikTok while pending, and here for good (no link ever again)."""
    request = DownloadRequest(parse_request_id(request_id), _bearer_token())
    remaining_ms = app.lambda_context.get_remaining_time_in_millis()
    return _json(HTTPStatus.OK, request_lifecycle().cancel(request, remaining_ms).to_body())


@app.exception_handler(TransferError)  # type: ignore[untyped-decorator]
def answer_transfer_error(error: TransferError) -> Response[str]:
    """The single mapping from the error taxonomy to HTTP answers."""
    # One short record per error answer; the failure itself was logged where it happened, or is a
    # rejected input that touched nothing.
    logger.info("answered with an error", extra={"error_code": error.error_code, "http_status": error.status})
    headers = {"Retry-After": error.retry_after} if error.retry_after else {}
    return _json(error.status, error.to_body(), headers)


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def answer_unexpected_error(error: Exception) -> Response[str]:
    """A bug: logged with its traceback, answered with a JSON 500 that reveals nothing of it."""
    answer = UnexpectedError("internal error")
    logger.exception("unexpected error", extra={"error_code": answer.error_code})
    return _json(answer.status, answer.to_body())


@app.not_found
def answer_not_found(_: Exception) -> Response[str]:
    """Unknown path or method, in the same error shape as every other answer."""
    message = "no such route; see POST /requests, POST /downloads and GET or DELETE /downloads/{request_id}"
    body = {"error": {"code": "not_found", "message": message, "log_id": None}}
    return _json(HTTPStatus.NOT_FOUND, body)


def _bearer_token() -> str:
    """The caller's TikTok token, registered as a secret before anything else can log it."""
    token = parse_authorization_header(app.current_event.headers.get("Authorization"))
    hide(token)
    return token


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body),
        headers={**_NO_STORE, **(headers or {})},
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for the REST API."""
    start_invocation(context.get_remaining_time_in_millis())
    return app.resolve(event, context)
