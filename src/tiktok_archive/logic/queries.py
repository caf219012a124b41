"""Reads of a caller's records: one download, and a user's requests.

``GET /downloads/{request_id}`` and ``GET /users/{open_id}/requests``.

The caller that created a record is the only one that sees it: any other caller gets the same 404 as
for an unknown ``request_id``. A read asks TikTok nothing — it spends none of the app's quota, and it
works for as long as the record lives, whatever became of the user's access token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.logic.ownership import NOT_FOUND_MESSAGE, logged_as
from tiktok_archive.logic.transfer import ArchiveTransfer
from tiktok_archive.models.download_record import Answer, DownloadRecord, DownloadStatus
from tiktok_archive.models.errors import DownloadNotFoundError
from tiktok_archive.models.paging import format_position, parse_position


@dataclass(frozen=True)
class UserRequests:
    """One page of a caller's requests of one user, newest first, and where the next page starts."""

    open_id: str
    records: list[DownloadRecord]
    next: str | None

    def to_body(self) -> dict[str, Any]:
        return {
            "open_id": self.open_id,
            "requests": [record.to_body() for record in self.records],
            "next": self.next,
        }


class RecordQueries:
    """Reads a caller's records.

    Args:
        records: the downloads table.
        transfer: signs links to stored archives.
    """

    def __init__(self, records: DownloadRecords, transfer: ArchiveTransfer) -> None:
        self._records = records
        self._transfer = transfer

    def describe(self, caller: str, request_id: int) -> Answer:
        """``caller``'s record of ``request_id``, with a fresh link when the archive is stored.

        Raises:
            DownloadNotFoundError: no record, or another caller's (the same answer).
            RecordStoreError: DynamoDB failed.
            StorageError: the link could not be signed.
        """
        with logged_as(request_id):
            record = self.owned(caller, request_id)
            if record.status is not DownloadStatus.COMPLETED:
                return Answer(record)
            url, expires_at = self._transfer.link(request_id)
            return Answer(record, url, expires_at)

    def owned(self, caller: str, request_id: int) -> DownloadRecord:
        """``caller``'s record of ``request_id``.

        Raises:
            DownloadNotFoundError: no record, or another caller's (the same answer).
            RecordStoreError: DynamoDB failed.
        """
        record = self._records.get(request_id)
        if record is None or record.caller != caller:
            raise DownloadNotFoundError(NOT_FOUND_MESSAGE)
        return record

    def user_requests(self, caller: str, open_id: str, limit: int, after: str | None) -> UserRequests:
        """A page of ``caller``'s requests of ``open_id``, newest first (``after``: the previous ``next``).

        Raises:
            InvalidRequestError: ``after`` is not a ``next`` this API gave.
            RecordStoreError: DynamoDB failed.
        """
        records, position = self._records.page_of(caller, open_id, limit, parse_position(after))
        return UserRequests(open_id, records, format_position(position))
