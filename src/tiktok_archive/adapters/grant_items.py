"""What the grants table holds, as values: a grant, the tokens to write into one, the handed-token registry.

A grant is what lets the service act for a user without anyone calling: the access token (2 hours) and
the refresh token (180 days, rotating), each sealed with KMS under an encryption context naming the grant
(:class:`~tiktok_archive.adapters.token_vault.TokenVault`), so a ciphertext copied into another grant does
not open. A grant belongs to the caller that handed the tokens over, and to the user TikTok named for
them (its ids: :func:`~tiktok_archive.adapters.grants.user_grant_id`, ``request_grant_id``).

Items named ``handed <sha256>`` are the registry of refresh tokens handed over: while a handover exchanges
one at TikTok the item says so (:class:`Exchanging`, for a short lease); then, for a week, which grant it
went into and for which caller (:class:`Exchanged`).

This module reads items and writes values; the table's conditional writes are :class:`Grants`'.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tiktok_archive.adapters.dynamodb_items import Item, epoch_value, string_field

# A grant outlives what it holds by this much (its TTL).
GRANT_SLACK = timedelta(days=1)


@dataclass(frozen=True)
class Grant:
    """A grant as stored: sealed tokens (base64 KMS ciphertexts), their expiry, and the refresh lease.

    Attributes:
        generation: changes with every write of tokens, and when a request joins the grant (a
            compare-and-swap token, never reused).
        abandoned_refresh_at: when a refresh began that never stored its result nor gave its lease back
            (TikTok may have rotated the token; the tokens may still arrive).
        erasing: the caller asked to erase the user: the grant only serves to cancel and revoke at
            TikTok.
        adopted_at: when tokens were last handed over into it (a consent; refreshes do not change it).

    ``repr`` shows no ciphertext.
    """

    grant_id: str
    generation: str
    sealed_access_token: str | None = field(repr=False)
    access_expires_at: datetime | None
    sealed_refresh_token: str | None = field(repr=False)
    refresh_expires_at: datetime | None
    user_openid: str | None
    caller: str | None = None
    refresh_owner: str | None = None
    refresh_lease_until: datetime | None = None
    abandoned_refresh_at: datetime | None = None
    erasing: bool = False
    adopted_at: datetime | None = None

    def being_refreshed(self, now: datetime) -> bool:
        """Whether another invocation holds the refresh lease right now.

        To the whole second, as ``Grants.take_refresh_lease``'s condition sees it: a lease is free only
        once it lapsed before the current second (else a waiter would find it free, fail to take it, and
        try again without pause until the second ends).
        """
        return self.refresh_lease_until is not None and self.refresh_lease_until >= now.replace(microsecond=0)

    def lease_abandoned(self, now: datetime) -> bool:
        """Whether a refresh took the lease and neither stored nor released it before it lapsed."""
        return self.refresh_owner is not None and not self.being_refreshed(now)

    def abandoned_since(self, now: datetime, lease: timedelta) -> datetime | None:
        """When the latest refresh that left the lease unfinished began (leases last ``lease``), or None.

        The latest one, not the first: it is the one most likely still alive, about to store its tokens.
        """
        if not self.lease_abandoned(now) or self.refresh_lease_until is None:
            return self.abandoned_refresh_at
        latest = self.refresh_lease_until - lease
        return latest if self.abandoned_refresh_at is None else max(self.abandoned_refresh_at, latest)


@dataclass(frozen=True)
class SealedTokens:
    """Tokens to store, already sealed for their grant."""

    sealed_access_token: str = field(repr=False)
    access_expires_at: datetime
    sealed_refresh_token: str | None = field(repr=False)
    refresh_expires_at: datetime | None

    @property
    def lives_until(self) -> datetime:
        """When the grant holding these tokens has nothing left to use: its refresh token's end."""
        return (self.refresh_expires_at or self.access_expires_at) + GRANT_SLACK


@dataclass(frozen=True)
class Lease:
    """A refresh lease taken: ``owner`` proves it; ``abandoned_at``: an earlier refresh left it unfinished."""

    owner: str
    abandoned_at: datetime | None


@dataclass(frozen=True)
class Exchanged:
    """A refresh token handed over before: the grant it was exchanged into, and the caller who handed it."""

    grant_id: str
    caller: str


@dataclass(frozen=True)
class Exchanging:
    """A handover is exchanging the refresh token at TikTok right now (its mark has not lapsed)."""


def token_updates(tokens: SealedTokens) -> tuple[list[str], dict[str, Any]]:
    """The SET clauses writing ``tokens`` (and a new generation) and their values."""
    sets = [
        "sealed_access_token = :access",
        "access_expires_at = :access_expires",
        "expires_at = :expires",
        "generation = :new_generation",
    ]
    values: dict[str, Any] = {
        ":access": {"S": tokens.sealed_access_token},
        ":access_expires": epoch_value(tokens.access_expires_at),
        ":expires": epoch_value(tokens.lives_until),
        ":new_generation": {"S": uuid.uuid4().hex},
    }
    if tokens.sealed_refresh_token is not None and tokens.refresh_expires_at is not None:
        sets += ["sealed_refresh_token = :refresh", "refresh_expires_at = :refresh_expires"]
        values[":refresh"] = {"S": tokens.sealed_refresh_token}
        values[":refresh_expires"] = epoch_value(tokens.refresh_expires_at)
    return sets, values


def _moment(item: Item, name: str) -> datetime | None:
    value = item.get(name, {}).get("N")
    return datetime.fromtimestamp(int(value), UTC) if value is not None else None


def handed_of(item: Item, now: datetime) -> Exchanged | Exchanging | None:
    """What a ``handed <sha256>`` item says of its refresh token ``now`` (None once its TTL passed).

    DynamoDB deletes expired items late (up to days): an item past its ``expires_at`` says nothing.
    """
    expires = _moment(item, "expires_at")
    if expires is not None and expires <= now:
        return None
    grant_id, caller = string_field(item, "into"), string_field(item, "caller")
    if grant_id and caller:
        return Exchanged(grant_id, caller)
    return Exchanging() if string_field(item, "exchange_owner") else None


def grant_of(item: Item) -> Grant:
    """The grant an item of the table holds."""
    return Grant(
        grant_id=str(item["grant_id"]["S"]),
        generation=string_field(item, "generation") or "",
        sealed_access_token=string_field(item, "sealed_access_token"),
        access_expires_at=_moment(item, "access_expires_at"),
        sealed_refresh_token=string_field(item, "sealed_refresh_token"),
        refresh_expires_at=_moment(item, "refresh_expires_at"),
        user_openid=string_field(item, "user_openid"),
        caller=string_field(item, "caller"),
        refresh_owner=string_field(item, "refresh_owner"),
        refresh_lease_until=_moment(item, "refresh_lease_until"),
        abandoned_refresh_at=_moment(item, "abandoned_refresh_at"),
        erasing="erasing_at" in item,
        adopted_at=_moment(item, "adopted_at"),
    )
