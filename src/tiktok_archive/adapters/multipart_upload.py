"""One S3 multipart upload as small tasks: fill a part, submit it, complete or abort the upload.

The tasks of :class:`~tiktok_archive.adapters.s3_archive_store.S3ArchiveStore`'s streaming writer, apart
so that each does one job: :class:`PartBuffers` recycles part buffers (at most ``concurrency + 1`` per
upload), :class:`MultipartUpload` uploads parts on the shared executor with at most ``concurrency`` in
flight — :meth:`~MultipartUpload.submit` blocks the reader while none is free, which applies TCP
backpressure to the download instead of buffering it — and completes the upload with the whole object's
CRC32 and size, or aborts it so that no part outlives it. Every wait is bounded by the invocation's
:class:`Deadline`.
"""

from __future__ import annotations

import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import TYPE_CHECKING, Protocol, cast

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import aws_failure, time_left
from tiktok_archive.adapters.crc32 import crc32_base64
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import DeadlineExceededError, ServiceError, StorageError
from tiktok_archive.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

# How long an abort waits for parts still uploading, so that none outlives the upload; bounded because
# an abort at the deadline has only the safety margin left.
ABORT_WAIT_SECONDS = 5.0


# A part is filled and CRC'd a slice at a time, each slice CRC'd as soon as it arrived, while its bytes
# are still in the CPU's cache: a CRC over a whole part would read it back from memory.
FILL_SLICE_BYTES = 1024 * 1024


class ArchiveSource(Protocol):
    """Anything that hands out the archive into buffers it is given."""

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` from its start; fewer bytes only at the end, 0 after it.

        It keeps no reference to ``buffer``, which is reused once the part is uploaded.

        Raises:
            ServiceError: the source failed.
        """
        ...


class PartBuffers:
    """Part buffers that uploaders hand back once S3 has the part, for the next part to reuse."""

    def __init__(self) -> None:
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> bytearray:
        """A buffer of exactly ``size`` bytes: a returned one when there is one, else a new one."""
        with self._lock:
            while self._free:
                buffer = self._free.pop()
                if len(buffer) == size:
                    return buffer
        return bytearray(size)

    def give(self, buffer: bytearray) -> None:
        """Take back a buffer whose part S3 has (or refused): nothing reads it any more."""
        with self._lock:
            self._free.append(buffer)

    def fill(self, source: ArchiveSource, size: int) -> tuple[bytearray, int]:
        """The next ``size`` bytes of ``source`` and their CRC32 (shorter only at the end, empty after it)."""
        buffer = self.take(size)
        filled, crc = 0, 0
        with memoryview(buffer) as view:
            while filled < size:
                piece = view[filled : filled + FILL_SLICE_BYTES]
                count = source.readinto(piece)
                crc = zlib.crc32(piece[:count], crc)
                piece.release()
                filled += count
                if count < FILL_SLICE_BYTES:
                    break
        if filled < size:
            del buffer[filled:]
        return buffer, crc


def storage_error(operation: str, error: BaseException) -> ServiceError:
    """``StorageError("S3 <operation> failed: …")`` (or ``deadline_exceeded``)."""
    return aws_failure(StorageError, f"S3 {operation}", error)


class MultipartUpload:
    """One open multipart upload: submits parts with bounded concurrency, then completes or aborts.

    Parts are uploaded on the shared executor; a semaphore makes :meth:`submit` block while
    ``concurrency`` parts are in flight, which stops the reader and so applies TCP backpressure to
    the download instead of buffering it.
    """

    def __init__(
        self,
        client: S3Client,
        executor: ThreadPoolExecutor,
        bucket: str,
        key: str,
        upload_id: str,
        concurrency: int,
        buffers: PartBuffers,
        longest_try: float,
    ) -> None:
        self._longest_try = longest_try
        self._client = client
        self._buffers = buffers
        self._executor = executor
        self._bucket = bucket
        self._key = key
        self._upload_id = upload_id
        self._slots = threading.BoundedSemaphore(concurrency)
        self._futures: list[Future[CompletedPartTypeDef]] = []
        self._failure: ServiceError | None = None

    def submit(self, part_number: int, data: bytearray, crc: int, deadline: Deadline) -> None:
        """Queue one part (with its CRC32), blocking while the in-flight limit is reached.

        Raises:
            StorageError: an earlier part failed; stop reading.
            DeadlineExceededError: no slot freed up before the deadline.
        """
        if not self._slots.acquire(timeout=max(0.0, deadline.remaining())):
            raise DeadlineExceededError(
                "the invocation's time budget ran out while S3 was still uploading earlier parts; "
                "nothing was stored"
            )
        if self._failure is not None:
            self._slots.release()
            raise self._failure
        # The buffer travels in a list that the uploader empties and hands back to the pool before its
        # slot is freed (a worker's finished task would otherwise keep it alive while the next part is
        # already being read into a new one).
        future = self._executor.submit(self._upload_part, part_number, [data], crc32_base64(crc))
        future.add_done_callback(self._part_done)
        self._futures.append(future)

    def _upload_part(self, part_number: int, pending: list[bytearray], crc: str) -> CompletedPartTypeDef:
        body = pending.pop()
        try:
            answer = self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=part_number,
                # botocore sends any bytes-like body (validate.py accepts bytearray); the stubs say bytes.
                Body=cast("bytes", body),
                # Given, so botocore does not compute it again; S3 checks it against what arrived.
                ChecksumCRC32=crc,
            )
        finally:
            # Back to the pool, and not even a failure's traceback keeps the part alive.
            self._buffers.give(body)
            del body

        return {
            "PartNumber": part_number,
            "ETag": answer["ETag"],
            "ChecksumCRC32": crc,
        }

    def _part_done(self, future: Future[CompletedPartTypeDef]) -> None:
        # Record the failure before freeing the slot: submit() checks it right after acquiring one.
        error = None if future.cancelled() else future.exception()
        if error is not None and self._failure is None:
            self._failure = storage_error("UploadPart", error)
        self._slots.release()

    def complete(self, size: int, crc: int, deadline: Deadline) -> None:
        """Wait for every part, then complete the upload with the whole object's CRC32 and size.

        Raises:
            StorageError: a part or the completion failed.
            DeadlineExceededError: the last parts were not uploaded before the deadline.
        """
        parts: list[CompletedPartTypeDef] = []
        for future in self._futures:
            try:
                error = future.exception(timeout=max(0.0, deadline.remaining()))
            except FutureTimeoutError:
                raise DeadlineExceededError(
                    "the invocation's time budget ran out while S3 was uploading the last parts; "
                    "nothing was stored"
                ) from None
            if error is not None:
                raise storage_error("UploadPart", error)
            parts.append(future.result())
        try:
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
                ChecksumCRC32=crc32_base64(crc),
                ChecksumType="FULL_OBJECT",
                MpuObjectSize=size,
            )
        except (ClientError, BotoCoreError) as error:
            raise storage_error("CompleteMultipartUpload", error) from None

    def abort(self) -> bool:
        """Let in-flight parts finish (up to ``ABORT_WAIT_SECONDS``), then abort the upload.

        Waiting first means no part is stored after the abort; the wait is shortened so that the abort's
        own try still fits in the invocation. Never raises: a failed abort is logged, and the bucket's
        lifecycle rule removes the upload after a day.

        Returns:
            True when S3 no longer knows the upload (``NoSuchUpload``): it was completed or aborted.
        """
        for future in self._futures:
            future.cancel()
        left = time_left()
        wait = ABORT_WAIT_SECONDS if left is None else min(ABORT_WAIT_SECONDS, left - self._longest_try)
        waited = Deadline.after(wait)
        still_uploading = 0
        for future in self._futures:
            if future.cancelled():
                continue
            try:
                future.exception(timeout=max(0.0, waited.remaining()))  # the error is already recorded
            except FutureTimeoutError:
                still_uploading += 1
        try:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
        except (ClientError, BotoCoreError) as error:
            if (
                isinstance(error, ClientError)
                and error.response.get("Error", {}).get("Code") == "NoSuchUpload"
            ):
                return True
            logger.error(
                "could not abort the multipart upload; the lifecycle rule will remove it",
                extra={
                    "key": self._key,
                    "error_message": storage_error("AbortMultipartUpload", error).message,
                },
            )
            return False
        logger.info(
            "multipart upload aborted",
            extra={
                "key": self._key,
                "parts_submitted": len(self._futures),
                "parts_still_uploading": still_uploading,
            },
        )
        return False
