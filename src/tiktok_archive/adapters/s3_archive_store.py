"""S3 side of a transfer (boto3): a streaming multipart writer and presigned links.

Memory bound: at most ``concurrency`` parts are in flight and one more is being filled from the source
while they upload, plus the source's small read piece and the HTTP clients' buffers — within
``part_size × (concurrency + 2)`` for any archive up to 1,000 parts (7.8 GiB at 8 MiB). Part buffers
are recycled: an uploader hands its buffer back before freeing its slot, so a transfer allocates at most
``concurrency + 1`` of them, and the allocator never sits on freed parts. Beyond that
the part size grows on a schedule (:mod:`part_sizes`) so that 10,000 parts hold any archive, and the
bound grows with it. Nothing touches the disk.

Time: every wait — for a free upload slot, for the last parts — is bounded by the invocation's
:class:`Deadline`; when it passes, the upload is aborted and ``DeadlineExceededError`` raised.

Integrity: each part's CRC32 is computed once, as its buffer fills, and sent with it, so S3 refuses a part
that arrives altered; the whole object's CRC32 is combined from the parts' (no second pass over the
bytes) and given to S3 as a full-object checksum (``ChecksumType=FULL_OBJECT``) together with the byte
count (``MpuObjectSize``), so S3 itself refuses to complete an upload that differs from what we read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.crc32 import crc32_base64, crc32_combine
from tiktok_archive.adapters.multipart_upload import (
    ArchiveSource,
    MultipartUpload,
    PartBuffers,
    storage_error,
)
from tiktok_archive.adapters.part_sizes import MAX_PARTS, part_size
from tiktok_archive.models.clock import utc_now
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import StoredArchive
from tiktok_archive.models.errors import ArchiveTooLargeError
from tiktok_archive.observability import logger, tracer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CONTENT_TYPE = "application/zip"
# Told the number of parts handed over and the bytes they hold, after each part.
PartListener = Callable[[int, int], None]


class S3ArchiveStore:
    """Writes archives into one bucket and hands out presigned links to them.

    Args:
        client: a boto3 S3 client whose connection pool holds at least ``concurrency`` connections.
        executor: the container's shared pool of part uploaders (``concurrency`` workers).
        bucket: the archive bucket.
        part_size: bytes per part (at least 5 MiB, S3's minimum).
        concurrency: parts uploading at once while the source is read.
        longest_try: how long one S3 try may take (connect + read timeout): an abort waits for
            in-flight parts only as long as still leaves time for its own try.
    """

    def __init__(
        self,
        client: S3Client,
        executor: ThreadPoolExecutor,
        bucket: str,
        part_size: int,
        concurrency: int,
        *,
        longest_try: float = 60.0,
    ) -> None:
        self._client = client
        self._executor = executor
        self.bucket = bucket
        self._part_size = part_size
        self._concurrency = concurrency
        self._longest_try = longest_try

    @tracer.capture_method(capture_response=False)
    def write(
        self,
        key: str,
        source: ArchiveSource,
        filename: str,
        deadline: Deadline,
        on_part: PartListener | None = None,
    ) -> StoredArchive:
        """Stream ``source`` into ``key``, reading and uploading at the same time.

        ``on_part(parts, size)`` is told after each part is handed to an uploader; an error it raises
        (the download was cancelled meanwhile) stops the transfer like any other: the upload is aborted.

        An archive that fits in one part is stored with one PutObject; a larger one with a multipart
        upload. The object only exists once ``source`` has reported its end without an error.

        Returns:
            where the archive is, its size and its CRC32.

        Raises:
            StorageError: S3 failed; nothing was stored and no upload is left open.
            DeadlineExceededError: S3 did not keep up before the deadline; likewise nothing is left.
            ServiceError: whatever ``source.readinto`` raised; likewise nothing is left behind.
        """
        buffers = PartBuffers()
        data, part_crc = buffers.fill(source, self._part_size)
        extra_args: dict[str, Any] = {
            "ContentType": CONTENT_TYPE,
            "ContentDisposition": content_disposition(filename),
        }
        if len(data) < self._part_size:
            self._call(
                "PutObject",
                self._client.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ChecksumCRC32=crc32_base64(part_crc),
                **extra_args,
            )
            return StoredArchive(self.bucket, key, len(data), crc32_base64(part_crc))
        created = self._call(
            "CreateMultipartUpload",
            self._client.create_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            ChecksumAlgorithm="CRC32",
            ChecksumType="FULL_OBJECT",
            **extra_args,
        )
        upload = MultipartUpload(
            self._client,
            self._executor,
            self.bucket,
            key,
            created["UploadId"],
            self._concurrency,
            buffers,
            self._longest_try,
        )
        crc, size, completing = 0, 0, False
        try:
            part_number = 0
            while data:
                part_number += 1
                crc = crc32_combine(crc, part_crc, len(data))
                size += len(data)
                upload.submit(part_number, data, part_crc, deadline)
                # The uploader owns the part now: holding it through the next read would keep one
                # more part alive than the memory bound allows for.
                del data
                if on_part is not None:
                    on_part(part_number, size)
                data, part_crc = self._next_part(source, buffers, part_number)
            completing = True
            upload.complete(size, crc, deadline)
        except BaseException:
            gone = upload.abort()
            # The completion failed (a timeout, no time left for a retry) but S3 had done it: the
            # upload no longer exists. The object counts only if it is exactly what we read.
            if completing and gone and self._holds(key, size, crc):
                logger.warning("upload completion was answered late; the stored object was verified")
                return StoredArchive(self.bucket, key, size, crc32_base64(crc))
            raise
        logger.debug("multipart upload completed", extra={"parts": part_number})
        return StoredArchive(self.bucket, key, size, crc32_base64(crc))

    def _holds(self, key: str, size: int, crc: int) -> bool:
        """Whether ``key`` is an object of ``size`` bytes whose CRC32 is ``crc`` (never raises)."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except (ClientError, BotoCoreError):
            return False
        return head.get("ContentLength") == size and head.get("ChecksumCRC32") == crc32_base64(crc)

    def _next_part(self, source: ArchiveSource, buffers: PartBuffers, after: int) -> tuple[bytearray, int]:
        """The part after part ``after``, sized by the schedule, and its CRC32; empty at the end.

        Raises:
            ArchiveTooLargeError: bytes remain after S3's last possible part.
        """
        if after < MAX_PARTS:
            return buffers.fill(source, part_size(after + 1, self._part_size))
        if source.readinto(memoryview(bytearray(1))):
            raise ArchiveTooLargeError(
                f"the archive does not fit in S3's {MAX_PARTS} parts at this part size; raise PART_SIZE_MIB"
            )
        return bytearray(), 0

    def delete(self, key: str) -> None:
        """Delete the object ``key`` (nothing happens when there is none).

        Raises:
            StorageError: S3 refused or failed.
        """
        self._call("DeleteObject", self._client.delete_object, Bucket=self.bucket, Key=key)

    def abort_uploads(self, key: str) -> int:
        """Abort every multipart upload still open for ``key`` (a download that crashed or still runs).

        Returns:
            how many were aborted.

        Raises:
            StorageError: S3 refused or failed.
        """
        aborted = 0
        listing: dict[str, Any] = {"Bucket": self.bucket, "Prefix": key}
        while True:
            answer = self._call("ListMultipartUploads", self._client.list_multipart_uploads, **listing)
            for upload in answer.get("Uploads", []):
                if upload.get("Key") != key:
                    continue
                try:
                    self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]
                    )
                except ClientError as error:
                    if error.response.get("Error", {}).get("Code") != "NoSuchUpload":
                        raise storage_error("AbortMultipartUpload", error) from None
                except BotoCoreError as error:
                    raise storage_error("AbortMultipartUpload", error) from None
                aborted += 1
            if not answer.get("IsTruncated"):
                return aborted
            listing["KeyMarker"] = answer.get("NextKeyMarker", "")
            listing["UploadIdMarker"] = answer.get("NextUploadIdMarker", "")

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes of the object ``key`` from byte ``start`` (a ranged GET; fewer at its end).

        Raises:
            StorageError: S3 refused or failed, or the body broke.
        """
        if length <= 0:
            return b""
        answer = self._call(
            "GetObject",
            self._client.get_object,
            Bucket=self.bucket,
            Key=key,
            Range=f"bytes={start}-{start + length - 1}",
        )
        with contextlib.closing(answer["Body"]) as body:
            try:
                data: bytes = body.read(length)
            except (BotoCoreError, OSError) as error:
                raise storage_error("GetObject", error) from None
        return data

    def presign(self, key: str, filename: str, ttl_seconds: int) -> tuple[str, datetime]:
        """A GET link to ``key`` that downloads as ``filename``, and the moment it expires (UTC).

        The link also stops working when the credentials that signed it expire (a Lambda role's
        session), whichever comes first.
        """
        expires_at = utc_now() + timedelta(seconds=ttl_seconds)
        url = self._call(
            "presign",
            self._client.generate_presigned_url,
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentDisposition": content_disposition(filename),
                "ResponseContentType": CONTENT_TYPE,
            },
            ExpiresIn=ttl_seconds,
        )
        return url, expires_at

    @staticmethod
    def _call(operation: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (ClientError, BotoCoreError) as error:
            raise storage_error(operation, error) from None


def content_disposition(filename: str) -> str:
    """``attachment`` with the given plain ASCII file name."""
    return f'attachment; filename="{filename}"'
