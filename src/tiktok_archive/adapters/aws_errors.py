"""One way to turn a boto3 failure into the taxonomy's error: the operation and AWS's code, nothing more.

The message never carries the request or the response body (they may hold a presigned URL or a
token), only the operation's name and AWS's error code (or the exception's class for a network error).
"""

from __future__ import annotations

from typing import TypeVar

from botocore.exceptions import ClientError

from tiktok_archive.models.errors import TransferError

E = TypeVar("E", bound=TransferError)


def aws_failure(kind: type[E], operation: str, error: BaseException) -> E:
    """``kind("<operation> failed: <AWS error code or exception class>")``."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "Unknown")
        return kind(f"{operation} failed: {code}")
    return kind(f"{operation} failed: {type(error).__name__}")
