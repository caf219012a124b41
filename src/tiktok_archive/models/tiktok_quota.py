"""TikTok's quota as one shared budget: endpoints, priorities, sub-windows and their caps (no I/O).

TikTok counts each endpoint's calls per app over a sliding minute (about 1,000). The service counts them
in fixed sub-windows of :data:`WINDOW_SECONDS` (:data:`SUB_WINDOWS` to the minute), one shared counter
per endpoint and sub-window, and lets a call through only while its sub-window's count is under a cap.

Why the caps are what they are: any 60 s window overlaps at most ``SUB_WINDOWS + 1`` sub-windows (7 with
10 s sub-windows: a minute starting mid-window touches the end of one, five whole ones and the start of
a seventh). So if no sub-window ever counts more than ``quota × share / (SUB_WINDOWS + 1)`` calls, no 60 s
window — wherever TikTok's sliding minute starts — holds more than ``quota × share``. With the defaults
(1,000 a minute, a 90 % share): 128 calls per 10 s, at most 896 in any minute, 768 a minute sustained.

Priorities are shares of a sub-window's cap: what a unit of work may still draw once that much of the
sub-window is spent. Purges, erasures and cancellations may use all of it, a caller waiting on the API
90 %, downloads of ready archives 80 %, status checks 60 % — so a flood of checks always leaves 40 % to
the rest, and a flood of downloads 20 % to the API and purges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Protocol

SUB_WINDOWS = 6
WINDOW_SECONDS = 60 // SUB_WINDOWS
# A counter is useless once its sub-window has left every minute TikTok may count: kept a little longer.
KEEP_SECONDS = 2 * 60


class Endpoint(Enum):
    """A TikTok endpoint with a quota of its own (the item key's first word)."""

    ADD = "add"
    CHECK = "check"
    CANCEL = "cancel"
    DOWNLOAD = "download"
    REFRESH = "refresh"  # /v2/oauth/token/: refreshing a user's tokens
    REVOKE = "revoke"


class Priority(IntEnum):
    """How much of a sub-window's cap a unit of work may draw on, in percent (its value)."""

    PURGE = 100  # erasures, TikTok's authorization removed, DELETE /downloads/{id}: cancels and revokes
    INTERACTIVE = 90  # the API's callers: POST /requests, POST /downloads, reads
    DOWNLOAD = 80  # the worker's downloads of ready archives
    CHECK = 60  # the status checks of waiting requests


@dataclass(frozen=True)
class QuotaPlan:
    """The budget's size: TikTok's calls a minute per endpoint, and the share of them the service uses.

    Attributes:
        calls_per_minute: TikTok's quota per endpoint per app (``TIKTOK_CALLS_PER_MINUTE``).
        share_percent: the part of it the caps add up to at most in any 60 s window
            (``TIKTOK_QUOTA_SHARE_PERCENT``): the rest is headroom for clocks that disagree by a little
            and for calls made outside this stack with the same app.
    """

    calls_per_minute: int = 1000
    share_percent: int = 90

    @property
    def window_cap(self) -> int:
        """Calls one endpoint's sub-window admits at most (at the highest priority)."""
        return self.calls_per_minute * self.share_percent // (100 * (SUB_WINDOWS + 1))

    def cap(self, priority: Priority) -> int:
        """Calls a unit of ``priority`` may find already made in the sub-window and still call."""
        return self.window_cap * int(priority) // 100

    @property
    def peak_per_minute(self) -> int:
        """The most calls any 60 s window can hold: ``(SUB_WINDOWS + 1) × window_cap``."""
        return (SUB_WINDOWS + 1) * self.window_cap

    @property
    def sustained_per_minute(self) -> int:
        """The calls a minute an endpoint gets when it is asked for more all the time."""
        return SUB_WINDOWS * self.window_cap


def window_start(epoch_seconds: float) -> int:
    """The start (epoch seconds) of the sub-window ``epoch_seconds`` falls in."""
    return math.floor(epoch_seconds / WINDOW_SECONDS) * WINDOW_SECONDS


def window_key(endpoint: Endpoint, start: int) -> str:
    """The shared counter's key: ``"<endpoint> <sub-window start>"``, e.g. ``"check 1764777600"``."""
    return f"{endpoint.value} {start}"


def until_next_window(epoch_seconds: float) -> float:
    """Seconds from ``epoch_seconds`` to the start of the next sub-window (more than 0)."""
    return window_start(epoch_seconds) + WINDOW_SECONDS - epoch_seconds


class QuotaGate(Protocol):
    """Where every try of a TikTok call draws from the shared budget (DynamoDB; a fake in tests)."""

    def take(self, endpoint: Endpoint, priority: Priority) -> float | None:
        """Count one call to ``endpoint`` at ``priority``.

        Returns:
            None when the call may be made (counted); else the seconds until the next sub-window, when
            the budget may have room again (nothing counted).
        """
        ...
