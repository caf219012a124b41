"""Time as every record, answer and event carries it: UTC, to the second."""

from __future__ import annotations

from datetime import UTC, datetime

_UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> datetime:
    """Now, in UTC, to the second: the precision every record, answer and event carries."""
    return datetime.now(UTC).replace(microsecond=0)


def format_utc(moment: datetime) -> str:
    """A UTC moment as the API and the records write it: ``2026-11-27T19:04:28Z``."""
    return moment.strftime(_UTC_FORMAT)


def parse_utc(text: str) -> datetime:
    """The inverse of :func:`format_utc`."""
    return datetime.strptime(text, _UTC_FORMAT).replace(tzinfo=UTC)
