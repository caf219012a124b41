"""The webhook's errors: a delivery refused for its size, its signature or its body; nothing was done.

Part of the one taxonomy (:class:`~tiktok_archive.models.errors.ServiceError`). All but
:class:`DeliveryInFlightError` are permanent: TikTok's retries of the same delivery would be refused alike.
"""

from __future__ import annotations

from tiktok_archive.models.errors import ServiceError


class WebhookSignatureError(ServiceError):
    """A webhook delivery's ``TikTok-Signature`` is missing, malformed, stale or wrong; nothing was done.

    The message says which, and never holds the header or any secret.
    """

    code = "invalid_signature"
    http_status = 401
    transient = False


class WebhookSignatureMismatchError(WebhookSignatureError):
    """A well-formed, fresh ``TikTok-Signature`` whose HMAC does not match the body.

    The one signature failure a rotated client secret can explain: a caller may read the secret again
    and verify once more before refusing the delivery.
    """


class UnknownClientKeyError(WebhookSignatureError):
    """A correctly signed webhook delivery addressed to another app's ``client_key``; nothing was done."""

    code = "unknown_client_key"


class WebhookPayloadError(ServiceError):
    """A webhook delivery's body (or its ``content``) is not TikTok's documented JSON; nothing was done."""

    code = "invalid_webhook"
    http_status = 400
    transient = False


class WebhookTooLargeError(ServiceError):
    """A webhook delivery's body is larger than the service accepts; it was refused before any other work."""

    code = "webhook_too_large"
    http_status = 413
    transient = False


class DeliveryInFlightError(ServiceError):
    """The same delivery arrived moments ago and its work is not queued yet; nothing was done.

    Answered ``503`` so that TikTok delivers it again: were it acknowledged as a duplicate and the first
    delivery's invocation then died before queueing, its work would be lost.
    """

    code = "delivery_in_flight"
    http_status = 503
    transient = True
