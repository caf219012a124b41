"""The transfer service: one TikTok archive into S3, answered with a presigned link.

It knows nothing of API Gateway or SQS: both handlers call :meth:`ArchiveTransfer.run` with their
invocation's one :class:`Deadline`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from tiktok_archive.adapters.s3_archive_store import PartListener, S3ArchiveStore
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest, DownloadResult, StoredArchive
from tiktok_archive.models.errors import ServiceError, UnexpectedError
from tiktok_archive.models.tiktok_errors import UpstreamStreamBrokenError
from tiktok_archive.models.zip_manifest import MAX_DIRECTORY_BYTES, build_manifest
from tiktok_archive.models.zip_tail import ZipTail
from tiktok_archive.observability import SERVICE, logger, metrics

# The outcome of a download its record's end stopped (cancelled, purged): not a failure.
STOPPED = "stopped"


class ArchiveTransfer:
    """Streams a user's portability archive from TikTok into S3.

    Args:
        tiktok: the download client.
        store: the archive bucket.
        key_prefix: prepended to ``{request_id}.zip``.
        url_ttl_seconds: validity of the returned link.
    """

    def __init__(
        self,
        tiktok: TikTokClient,
        store: S3ArchiveStore,
        *,
        key_prefix: str,
        url_ttl_seconds: int,
    ) -> None:
        self._tiktok = tiktok
        self._store = store
        self._key_prefix = key_prefix
        self._url_ttl_seconds = url_ttl_seconds

    def run(
        self, request: DownloadRequest, deadline: Deadline, watch: TransferWatch | None = None
    ) -> DownloadResult:
        """Download ``request``'s archive into ``{prefix}{request_id}.zip`` and presign it.

        The work stops at ``deadline`` (the invocation's, made once by its handler: Lambda's deadline less
        the margin that leaves time to abort and answer). Memory stays bounded by the store's part
        size and concurrency, whatever the archive's size. Every outcome is logged (the caller puts
        ``request_id`` on the records) and counted by code. ``watch`` is told the progress after each
        part (see :meth:`S3ArchiveStore.write`), and is asked, when the transfer fails, whether it was
        stopped on purpose (the request was cancelled or its user purged meanwhile: its upload aborted
        from outside) — a stop is logged and counted as one, not as a failure.

        Raises:
            ServiceError: the one error that explains the failure; nothing partial is left in S3.
        """
        filename = f"{request.request_id}.zip"
        _, key = self.location(request.request_id)
        started = time.monotonic()
        try:
            logger.info(
                "download started",
                extra={"key": key, "time_budget_seconds": round(max(0.0, deadline.remaining()), 3)},
            )
            archive, tail = self._download(
                request, key, filename, deadline, watch.part_done if watch else None
            )
            manifest = self._manifest(key, tail)
            url, expires_at = self._store.presign(key, filename, self._url_ttl_seconds)
            duration = time.monotonic() - started
            logger.info(
                "download completed",
                extra={
                    "key": key,
                    "size_bytes": archive.size_bytes,
                    "duration_seconds": round(duration, 3),
                    "throughput_mib_s": round(archive.size_bytes / 1048576 / max(duration, 1e-6), 1),
                },
            )
        except ServiceError as error:
            stop = watch.stopped() if watch is not None else None
            if stop is not None:
                logger.info("download stopped: the request ended meanwhile", extra=stop.log_fields())
                _count_outcome(STOPPED)
                raise stop from None
            logger.error("download failed", extra=error.log_fields())
            _count_outcome(error.error_code)
            raise
        except Exception:
            logger.exception("download failed unexpectedly", extra={"error_code": UnexpectedError.code})
            _count_outcome(UnexpectedError.code)
            raise
        metrics.add_metric(name="ArchiveBytes", unit=MetricUnit.Bytes, value=archive.size_bytes)
        metrics.add_metric(name="TransferDuration", unit=MetricUnit.Seconds, value=round(duration, 3))
        _count_outcome("ok")
        return DownloadResult(request.request_id, archive, url, expires_at, manifest)

    def location(self, request_id: int) -> tuple[str, str]:
        """Bucket and key of ``request_id``'s archive."""
        return self._store.bucket, f"{self._key_prefix}{request_id}.zip"

    def discard(self, request_id: int) -> int:
        """Delete ``request_id``'s stored archive, if any, and abort its open uploads (cancelled, revoked).

        Returns:
            how many open uploads were aborted (a download that crashed, or one still running).

        Raises:
            StorageError: S3 failed.
        """
        key = self.location(request_id)[1]
        self._store.delete(key)
        return self._store.abort_uploads(key)

    def link(self, request_id: int) -> tuple[str, datetime]:
        """A fresh presigned link to ``request_id``'s stored archive, and when it expires.

        Raises:
            StorageError: the link could not be signed.
        """
        _, key = self.location(request_id)
        return self._store.presign(key, f"{request_id}.zip", self._url_ttl_seconds)

    def _download(
        self,
        request: DownloadRequest,
        key: str,
        filename: str,
        deadline: Deadline,
        on_part: PartListener | None,
    ) -> tuple[StoredArchive, ZipTail]:
        """Stream the archive into ``key``, starting over when a broken stream could not be resumed.

        Every request of the download — the first, its retries, the ranged requests that resume it,
        the fresh starts — is paid from one :class:`AttemptBudget`. Starting over means a new upload
        (the failed one was aborted by the store), so bytes of two downloads are never mixed.
        """
        budget = self._tiktok.budget(deadline)
        while True:
            try:
                with self._tiktok.open_archive(request, budget) as stream:
                    archive = self._store.write(key, stream, filename, deadline, on_part)
                return archive, stream.tail
            except UpstreamStreamBrokenError as error:
                if budget.left <= 0 or deadline.expired():
                    raise
                logger.warning(
                    "download starts over after a broken stream",
                    extra={**error.log_fields(), "attempt": budget.used + 1},
                )

    def _manifest(self, key: str, tail: ZipTail) -> dict[str, Any] | None:
        """The stored archive's manifest, from its central directory.

        From the last bytes the stream kept when the directory is among them, else by one ranged GET
        of at most 4 MiB. A manifest that cannot be read leaves the download as it is (logged; the
        record has no manifest): the archive is whole, only its description is missing.
        """
        location = tail.directory
        if location is None:
            return None
        directory = tail.held_directory(MAX_DIRECTORY_BYTES)
        source = "tail"
        try:
            if directory is None:
                source = "s3"
                length = min(location.size, MAX_DIRECTORY_BYTES)
                directory = self._store.read_range(key, location.offset, length)
            manifest = build_manifest(location, directory)
        except ServiceError as error:
            logger.warning("archive stored without its manifest", extra=error.log_fields())
            return None
        except Exception:  # noqa: BLE001 - a bug here must not undo a whole, stored archive
            logger.exception("archive stored without its manifest: it could not be read")
            return None
        logger.info(
            "archive manifest read",
            extra={
                "entries": manifest["entries"],
                "directory_bytes": location.size,
                "directory_from": source,
                "truncated": manifest["truncated"],
                "suspicious_names": manifest["suspicious_names"],
            },
        )
        return manifest


class TransferWatch(Protocol):
    """Who follows a transfer: told each part's progress, and asked whether a failure was a stop."""

    def part_done(self, parts: int, size: int) -> None:
        """``parts`` parts (``size`` bytes) are stored; may raise to stop the transfer."""

    def stopped(self) -> ServiceError | None:
        """The reason the transfer was stopped on purpose, if it was (else None: a real failure)."""


def _count_outcome(code: str) -> None:
    """One ``Downloads`` count per outcome, by code (``ok``, ``stopped`` or the error code).

    Failures also count in ``DownloadFailures``; a stop on purpose does not.
    """
    with single_metric(
        name="Downloads",
        unit=MetricUnit.Count,
        value=1,
        namespace=metrics.namespace,
        default_dimensions=metrics.default_dimensions,
    ) as metric:
        metric.add_dimension(name="service", value=SERVICE)
        metric.add_dimension(name="outcome", value=code)
    if code not in ("ok", STOPPED):
        # One metric without the outcome dimension, for an alarm on every kind of failure at once.
        metrics.add_metric(name="DownloadFailures", unit=MetricUnit.Count, value=1)
