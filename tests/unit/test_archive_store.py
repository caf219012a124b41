"""The S3 writer's verdicts that need no S3: an archive beyond the last possible part."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tiktok_archive.adapters import s3_archive_store
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import ArchiveTooLargeError


def test_an_archive_beyond_s3s_last_part_is_permanent_and_aborts_the_upload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a store whose last possible part is the second (S3's 10,000, made small)
    monkeypatch.setattr(s3_archive_store, "MAX_PARTS", 2)
    calls: list[str] = []

    class FakeS3:
        def create_multipart_upload(self, **_: object) -> dict[str, str]:
            calls.append("create")
            return {"UploadId": "u"}

        def upload_part(self, **kwargs: object) -> dict[str, str]:
            calls.append(f"part {kwargs['PartNumber']}")
            return {"ETag": "e"}

        def abort_multipart_upload(self, **_: object) -> None:
            calls.append("abort")

    class Source:
        def __init__(self) -> None:
            self.left = 3 * 5 * 1024 * 1024 + 1

        def readinto(self, buffer: memoryview) -> int:
            count = min(len(buffer), self.left)
            self.left -= count
            return count

    with ThreadPoolExecutor(2) as executor:
        store = s3_archive_store.S3ArchiveStore(FakeS3(), executor, "b", 5 * 1024 * 1024, 2)  # type: ignore[arg-type]
        with pytest.raises(ArchiveTooLargeError) as raised:
            store.write("k", Source(), "k.zip", Deadline.after(60))

    # Then the verdict is permanent (another try streams the same bytes) and nothing is left open
    assert not raised.value.is_transient
    assert calls[0] == "create"
    assert calls[-1] == "abort"
    assert "complete" not in calls
