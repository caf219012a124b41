"""API Gateway entry point of ``POST /webhooks/tiktok``: TikTok's callback URL (no API key).

Authenticity comes only from the ``TikTok-Signature`` header over the raw body exactly as API Gateway
delivered it (base64-encoded bodies decoded first). The order is what keeps refusals cheap: the body's
size first, then the signature, then anything else; a refused delivery reads and writes nothing. A
valid one is acknowledged ``200`` at once — its work waits on the lifecycle queue.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from tiktok_archive.handlers.entry import lambda_entry
from tiktok_archive.handlers.http_answers import answer_errors, json_answer
from tiktok_archive.models.webhook_errors import WebhookSignatureError
from tiktok_archive.models.webhook_signature import SIGNATURE_HEADER, raw_body
from tiktok_archive.runtime import start_invocation, webhook_receiver

app = APIGatewayRestResolver()
answer_errors(app, "POST /webhooks/tiktok")


@app.post("/webhooks/tiktok")
def receive_webhook() -> Response[str]:
    """Verify, record and queue one TikTok delivery."""
    event = app.current_event
    raw = raw_body(event.get("body"), bool(event.get("isBase64Encoded")))
    outcome = webhook_receiver().receive(_signature_header(event.raw_event), raw, time.time())
    return json_answer(HTTPStatus.OK, {"status": outcome})


def _signature_header(event: dict[str, Any]) -> str | None:
    """The one ``TikTok-Signature`` header, whatever its case; two of them are refused."""
    wanted = SIGNATURE_HEADER.lower()
    values = [
        value
        for name, many in (event.get("multiValueHeaders") or {}).items()
        if name.lower() == wanted
        for value in (many or [])
    ]
    if len(values) > 1:
        raise WebhookSignatureError(f"one {SIGNATURE_HEADER} header is expected, not {len(values)}")
    if values:
        return str(values[0])
    found = [v for name, v in (event.get("headers") or {}).items() if name.lower() == wanted]
    return str(found[0]) if found else None


@lambda_entry(correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for TikTok's webhooks."""
    start_invocation(context)
    return app.resolve(event, context)
