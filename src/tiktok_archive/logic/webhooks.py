"""TikTok's webhooks in: verify, record, queue — fast, and each delivery's work done once.

:class:`WebhookReceiver` is what ``POST /webhooks/tiktok`` does with a delivery: the signature is checked
with the app's client secret (read again once when it does not match, in case the secret was rotated),
the event parsed, the delivery recorded by its id (a duplicate stops there), and the work queued for the
lifecycle function: an archive ready on the ready queue, where :class:`ArchiveReady` queues its download
at once (on the lifecycle queue it would wait behind the backlog of status checks that 100,000 waiting
requests make); a user's removal on the lifecycle queue, where :class:`UserPurge` does it. It answers
within one DynamoDB write and one SQS message; nothing slow happens while TikTok waits for its 200.
"""

from __future__ import annotations

from collections.abc import Callable

from tiktok_archive.adapters.app_credentials import AppCredentialsSource
from tiktok_archive.adapters.lifecycle_queue import LifecycleQueue
from tiktok_archive.adapters.webhook_deliveries import Arrival, WebhookDeliveries
from tiktok_archive.models.errors import ServiceError
from tiktok_archive.models.messages import ArchiveReadyWork, AuthorizationRemovedWork
from tiktok_archive.models.webhook import (
    AUTHORIZATION_REMOVED,
    DOWNLOAD_READY,
    AuthorizationRemoved,
    DownloadReady,
    parse_delivery,
)
from tiktok_archive.models.webhook_errors import DeliveryInFlightError, WebhookSignatureMismatchError
from tiktok_archive.models.webhook_signature import verify_signature
from tiktok_archive.observability import logger


class WebhookReceiver:
    """Takes TikTok's deliveries.

    Args:
        app: the app's credentials (the signing key and the expected ``client_key``).
        deliveries: the deliveries table.
        queue: the lifecycle queue (a user's removal).
        ready: the ready queue (an archive ready), which only the webhook function sends to.
    """

    def __init__(
        self,
        app: Callable[[], AppCredentialsSource],
        deliveries: Callable[[], WebhookDeliveries],
        queue: Callable[[], LifecycleQueue],
        ready: Callable[[], LifecycleQueue],
    ) -> None:
        self._app = app
        self._deliveries = deliveries
        self._queue = queue
        self._ready = ready

    def receive(self, signature: str | None, raw: bytes, now: float) -> str:
        """Take one delivery: ``"queued"``, ``"duplicate"`` or ``"ignored"`` (an event not acted on).

        Raises:
            WebhookSignatureError: a missing, malformed, stale or wrong signature, or another app's
                ``client_key``; nothing was read or written.
            WebhookPayloadError: the body is not TikTok's delivery.
            AppCredentialsError: the app's secret cannot be read (transient: TikTok retries).
            RecordStoreError / QueueError: the delivery could not be recorded or its work queued
                (transient: TikTok retries, and the retry does the work).
        """
        source = self._app()
        app = source.get()
        try:
            verify_signature(signature, raw, app.client_secret, now=now)
        except WebhookSignatureMismatchError:
            fresh = source.get(fresh=True)
            if fresh.client_secret == app.client_secret:
                raise
            app = fresh
            verify_signature(signature, raw, app.client_secret, now=now)
        event = parse_delivery(raw, client_key=app.client_key)
        work: ArchiveReadyWork | AuthorizationRemovedWork
        if isinstance(event, DownloadReady):
            work = ArchiveReadyWork(event.request_id, event.user_openid, event.delivery_id)
            name = DOWNLOAD_READY
        elif isinstance(event, AuthorizationRemoved):
            work = AuthorizationRemovedWork(event.user_openid, event.reason, event.delivery_id)
            name = AUTHORIZATION_REMOVED
        else:
            logger.info("webhook event not acted on", extra={"webhook_event": event.event})
            return "ignored"
        deliveries = self._deliveries()
        arrival = deliveries.arrived(event.delivery_id, name)
        if arrival is Arrival.DONE:
            logger.info(
                "webhook delivered again; its work was done", extra={"delivery_id": event.delivery_id}
            )
            return "duplicate"
        if arrival is Arrival.IN_FLIGHT:
            raise DeliveryInFlightError(
                "this delivery arrived moments ago and its work is being queued; deliver it again later",
                retry_after="15",
            )
        try:
            (self._ready if isinstance(work, ArchiveReadyWork) else self._queue)().send(work)
        except ServiceError:
            deliveries.forget(event.delivery_id)
            raise
        deliveries.queued(event.delivery_id)
        logger.info("webhook work queued", extra={"delivery_id": event.delivery_id, "webhook_event": name})
        return "queued"
