"""When a waiting request is checked at TikTok: its back-off, and the budget all checks share.

:class:`Schedule` and :class:`CheckBudget`; no I/O.

A request is checked first after ``initial`` seconds, then twice as long after each check up to
``longest``: ``STATUS_POLL_MAX_SECONDS`` (at most SQS's 900 s), or, when TikTok's webhooks announce every
archive (``WEBHOOKS_CONFIGURED``), the backstop ``STATUS_POLL_BACKSTOP_SECONDS`` (hours: a check is then
only a backstop for a lost webhook). Longer than 900 s is carried by a chain of delayed messages that
re-send themselves until the record's ``next_check_at``.

The checks of all waiting requests share one budget: what TikTok's quota, shared by every function
(:mod:`~tiktok_archive.models.tiktok_quota`), lets status checks draw in a minute. Each request checked
once per interval costs ``waiting / interval`` checks a second in all, so no interval may be shorter than
the *floor* ``waiting × 60 / checks_per_minute``; the sweeper counts the waiting requests and stores that
floor, every check waits at least that long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from tiktok_archive.models.tiktok_quota import SUB_WINDOWS, Priority, QuotaPlan


@dataclass(frozen=True)
class Schedule:
    """When to check a waiting request.

    First after ``initial``, doubling up to ``longest``, until ``give_up_after``. ``webhooks``: TikTok's
    webhooks are configured, so ``longest`` is a backstop's (hours) and the budget's floor may exceed it.
    """

    initial: int
    longest: int
    give_up_after: timedelta
    webhooks: bool = False

    def after(self, interval: int) -> int:
        """The back-off interval that follows ``interval``."""
        return min(self.longest, max(1, interval * 2))

    def spaced(self, interval: int, floor: int) -> int:
        """The interval to wait: the back-off's ``interval``, at least the budget's ``floor``.

        Without webhooks the floor raises an interval no further than ``longest`` (at most 900 s): beyond
        the number of waiting requests the quota allows at that interval the checks come late, not
        sparser (see docs/configuration.md). TikTok's ``Retry-After`` (in ``interval``) always holds.
        """
        return max(interval, floor if self.webhooks else min(self.longest, floor))


@dataclass(frozen=True)
class CheckBudget:
    """TikTok's Check Status calls a minute that the status checks may use, and what follows from it.

    Args:
        checks_per_minute: status checks a minute, all waiting requests together (at least one); what
            the shared quota lets them draw, :meth:`of` it — 456 with the defaults.
    """

    checks_per_minute: int = SUB_WINDOWS * QuotaPlan().cap(Priority.CHECK)

    @classmethod
    def of(cls, plan: QuotaPlan) -> CheckBudget:
        """The checks' budget under ``plan``: what their priority may draw in every sub-window, sustained.

        ``plan`` is ``TIKTOK_CALLS_PER_MINUTE`` and ``TIKTOK_QUOTA_SHARE_PERCENT``.
        """
        return cls(max(1, SUB_WINDOWS * plan.cap(Priority.CHECK)))

    def floor_seconds(self, waiting: int) -> int:
        """The shortest interval at which ``waiting`` requests' checks fit the budget."""
        return math.ceil(max(0, waiting) * 60 / self.checks_per_minute)

    def waiting_max(self, interval_seconds: int) -> int:
        """The most waiting requests the budget checks once per ``interval_seconds``."""
        return self.checks_per_minute * interval_seconds // 60

    def redrive_spacing(self, waiting: int, overdue: int) -> float:
        """Seconds between two re-driven checks, when ``overdue`` of ``waiting`` requests lost their chain.

        Each lost chain frees its share of the budget (one check per floor interval): ``overdue`` checks
        spread over one floor interval use what their chains would have, so with the chains still running
        the sum stays within the budget. Never closer than the whole budget's pace.
        """
        pace = 60 / self.checks_per_minute
        return pace * max(1.0, waiting / overdue) if overdue > 0 else pace
