"""What every REST entry point answers the same way.

JSON bodies with ``Cache-Control: no-store``, and the one mapping from the error taxonomy to HTTP answers.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types

from tiktok_archive.models.errors import ServiceError, UnexpectedError
from tiktok_archive.observability import logger

# Answers carry a presigned URL or a user's error: no cache may keep them.
_NO_STORE = {"Cache-Control": "no-store"}


def json_answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[str]:
    """A JSON answer that no cache keeps."""
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body),
        headers={**_NO_STORE, **(headers or {})},
    )


def answer_errors(app: APIGatewayRestResolver, routes: str) -> None:
    """Register on ``app`` the answers to errors, bugs and unknown routes (``routes``: the known ones)."""

    @app.exception_handler(ServiceError)  # type: ignore[untyped-decorator]
    def answer_transfer_error(error: ServiceError) -> Response[str]:
        # One short record per error answer; the failure itself was logged where it happened, or is a
        # rejected input that touched nothing.
        logger.info(
            "answered with an error", extra={"error_code": error.error_code, "http_status": error.status}
        )
        headers = {"Retry-After": error.retry_after} if error.retry_after else {}
        return json_answer(error.status, error.to_body(), headers)

    @app.exception_handler(Exception)  # type: ignore[untyped-decorator]
    def answer_unexpected_error(error: Exception) -> Response[str]:
        # A bug: logged with its traceback, answered with a JSON 500 that reveals nothing of it.
        answer = UnexpectedError("internal error")
        logger.exception("unexpected error", extra={"error_code": answer.error_code})
        return json_answer(answer.status, answer.to_body())

    @app.not_found
    def answer_not_found(_: Exception) -> Response[str]:
        body = {"error": {"code": "not_found", "message": f"no such route; see {routes}", "log_id": None}}
        return json_answer(HTTPStatus.NOT_FOUND, body)
