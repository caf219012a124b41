"""Users' tokens, sealed, in DynamoDB (boto3): one item per grant, refreshed by one invocation at a time.

A grant is what lets the service act for a user without anyone calling: the access token (2 hours) and
the refresh token (180 days, rotating), each sealed with KMS under an encryption context naming the grant
(:class:`TokenVault`), so a ciphertext copied into another grant does not open. A grant belongs to the
caller that handed the tokens over, and to the user TikTok named for them:

- ``user <caller> <open_id>``: the user's grant under that caller, when a refresh token was handed over
  (TikTok's refresh answer names the user). Every request of that user and caller shares it, and so
  shares one refresh lineage;
- ``request <request_id>``: a request's own grant, when only an access token was handed over (the user
  stays unknown; the grant lives no longer than that token).

Refresh tokens rotate: two refreshes racing with the same refresh token lose the user. So a refresh first
takes the grant's lease with a conditional write (``refresh_owner``, ``refresh_lease_until``, and the
``generation`` it read), and the new tokens are written back conditionally on that lease or on the
refresh token it sent still being the grant's — before anyone uses the new access token. Every write of
tokens (and a request joining the grant) makes a new ``generation`` (a random id, never reused, even by a
grant created again under the same id), so a write that lost the race can never pass for the winner's.

Items named ``handed <sha256>`` remember, for a week, which grant a handed-over refresh token was
exchanged into: the same token handed over again (a backend retrying a request that timed out) joins
that grant instead of being sent to TikTok, which would refuse it. The grant lists its ``handed``
digests, and a purge deletes them with it: an erased user leaves no item naming them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import is_condition_failure
from tiktok_archive.adapters.dynamodb_items import Item, epoch_value, lease_value, store_error, string_field
from tiktok_archive.models.clock import utc_now as _now

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BY_USER_INDEX = "by-user"
# A grant outlives what it holds by this much (TTL), and a handed-over token is remembered this long.
GRANT_SLACK = timedelta(days=1)
HANDED_FOR = timedelta(days=7)
_LEASE_FIELDS = "refresh_owner, refresh_lease_until"


def user_grant_id(caller: str, user_openid: str) -> str:
    """The grant every request of a user shares under one caller."""
    return f"user {caller} {user_openid}"


def request_grant_id(request_id: int) -> str:
    """A request's own grant, when its user is not known (only an access token was handed over)."""
    return f"request {request_id}"


def _handed_id(digest: str) -> str:
    return f"handed {digest}"


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

        To the whole second, as :meth:`Grants.take_refresh_lease`'s condition sees it: a lease is free only
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


class Grants:
    """The grants table.

    Args:
        client: a boto3 DynamoDB client.
        table: the table's name (``GRANTS_TABLE_NAME``).
    """

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    # -- reading ---------------------------------------------------------------------------------
    def get(self, grant_id: str) -> Grant | None:
        """The grant (a strongly consistent read), or None.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        item = self._get(grant_id)
        return _grant(item) if item else None

    def of_user(self, user_openid: str) -> list[Grant]:
        """Every caller's grant of ``user_openid`` (the ``by-user`` index).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        grants: list[Grant] = []
        start: dict[str, Any] | None = None
        while True:
            query: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": BY_USER_INDEX,
                "KeyConditionExpression": "user_openid = :user",
                "ExpressionAttributeValues": {":user": {"S": user_openid}},
            }
            if start:
                query["ExclusiveStartKey"] = start
            try:
                answer = self._client.query(**query)
            except (ClientError, BotoCoreError) as error:
                raise store_error("Query", error) from None
            grants += [_grant(item) for item in answer.get("Items", [])]
            start = answer.get("LastEvaluatedKey")
            if not start:
                return grants

    def handed(self, digest: str) -> tuple[str, str] | None:
        """The grant (id, caller) a handed-over refresh token (by its SHA-256) was exchanged into.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        item = self._get(_handed_id(digest))
        if not item or _expired(item):
            return None
        grant_id, caller = string_field(item, "into"), string_field(item, "caller")
        return (grant_id, caller) if grant_id and caller else None

    # -- a new consent ---------------------------------------------------------------------------
    def adopt(self, grant_id: str, caller: str, user_openid: str | None, tokens: SealedTokens) -> Grant:
        """Make ``tokens`` the grant's lineage (creating the grant if needed), whatever was there.

        Tokens handed over were refreshed at TikTok just now: they are the user's newest. A new
        generation makes any refresh of the earlier lineage still in flight lose its write (its lease
        is dropped too), and an erasure in progress is called off (the user consented again).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        sets, values = _token_updates(tokens)
        sets += ["caller = :caller", "created_at = if_not_exists(created_at, :now)", "adopted_at = :now"]
        values.update({":caller": {"S": caller}, ":now": epoch_value(now)})
        if user_openid is not None:
            sets.append("user_openid = :user")
            values[":user"] = {"S": user_openid}
        expression = f"SET {', '.join(sets)} REMOVE {_LEASE_FIELDS}, abandoned_refresh_at, erasing_at"
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key=_key(grant_id),
                UpdateExpression=expression,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except (ClientError, BotoCoreError) as error:
            raise store_error("UpdateItem", error) from None
        return _grant(answer["Attributes"])

    def remember_handed(self, digest: str, grant_id: str, caller: str) -> None:
        """Remember which grant a handed-over refresh token (by its SHA-256) went into, for a week.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "grant_id": {"S": _handed_id(digest)},
                    "into": {"S": grant_id},
                    "caller": {"S": caller},
                    "expires_at": epoch_value(_now() + HANDED_FOR),
                },
            )
        except (ClientError, BotoCoreError) as error:
            raise store_error("PutItem", error) from None
        # The grant lists it, so that deleting the grant deletes it too.
        self._update(
            grant_id, "ADD handed :digest", "attribute_exists(grant_id)", {":digest": {"SS": [digest]}}
        )

    def touch(self, grant_id: str) -> bool:
        """A new request joins the grant: a new generation, so that a release racing with it keeps the grant.

        A refresh in flight keeps its lease and still stores its tokens.

        Returns:
            whether there was a grant.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        return self._update(
            grant_id,
            "SET generation = :generation",
            "attribute_exists(grant_id)",
            {":generation": {"S": uuid.uuid4().hex}},
        )

    # -- refresh ---------------------------------------------------------------------------------
    def take_refresh_lease(self, grant: Grant, lease: timedelta) -> Lease | None:
        """Take the grant's refresh lease if nobody holds it and the grant is still at its generation.

        A lease that lapsed without its refresh storing anything marks the grant: that refresh may have
        rotated the token at TikTok, and its result may still be stored.

        Returns:
            the lease, or None when another invocation refreshes (or refreshed) the grant.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        owner = uuid.uuid4().hex
        abandoned = grant.abandoned_since(now, lease)
        values: dict[str, Any] = {
            ":owner": {"S": owner},
            ":until": lease_value(now, lease),
            ":generation": {"S": grant.generation},
            ":now": epoch_value(now),
        }
        sets = "SET refresh_owner = :owner, refresh_lease_until = :until"
        if abandoned is not None:
            sets += ", abandoned_refresh_at = :abandoned"
            values[":abandoned"] = epoch_value(abandoned)
        taken = self._update(
            grant.grant_id,
            sets,
            "generation = :generation AND "
            "(attribute_not_exists(refresh_lease_until) OR refresh_lease_until < :now)",
            values,
        )
        return Lease(owner, abandoned) if taken else None

    def store_refreshed(self, grant: Grant, owner: str, tokens: SealedTokens) -> str | None:
        """Write a refresh's rotated tokens and release the lease.

        Only while the lease is ours, or the grant still holds the refresh token the refresh sent (nobody
        wrote tokens since: no new consent, no other refresh, no erasure). Not conditional on the
        generation: a request joining the grant (:meth:`touch`) makes a new one without changing the
        lineage, and the rotated tokens in hand are then the only live ones.

        Returns:
            the grant's new generation; None when the grant moved on meanwhile (nothing was written).

        Raises:
            RecordStoreError: DynamoDB failed (the rotated refresh token may then be lost: logged).
        """
        sets, values = _token_updates(tokens)
        values.update({":owner": {"S": owner}, ":sent": {"S": grant.sealed_refresh_token or ""}})
        stored = self._update(
            grant.grant_id,
            f"SET {', '.join(sets)} REMOVE {_LEASE_FIELDS}, abandoned_refresh_at",
            "attribute_exists(grant_id) AND (refresh_owner = :owner OR sealed_refresh_token = :sent)",
            values,
        )
        return str(values[":new_generation"]["S"]) if stored else None

    def release_refresh_lease(self, grant_id: str, owner: str) -> bool:
        """Give the lease back after a refresh that changed nothing (never raises: it lapses anyway)."""
        try:
            return self._update(
                grant_id, f"REMOVE {_LEASE_FIELDS}", "refresh_owner = :owner", {":owner": {"S": owner}}
            )
        except Exception:  # noqa: BLE001 - a lease not given back lapses by itself
            return False

    # -- the end of a grant ----------------------------------------------------------------------
    def erase_refused(self, grant: Grant) -> bool:
        """Delete the grant TikTok refused to refresh, only if it is still at the refused generation.

        Returns:
            False when the grant moved on (a new consent or another refresh stored tokens meanwhile).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        return self._delete(
            grant.grant_id, "generation = :generation", {":generation": {"S": grant.generation}}
        )

    def delete(self, grant_id: str, *, generation: str | None = None, forget_handed: bool = False) -> bool:
        """Delete the grant and its tokens (the user was erased, or no request needs it any longer).

        ``generation``: only if the grant is still at it (a new consent since keeps the grant).
        ``forget_handed``: the items remembering its handed-over tokens go too (a purge: they name the
        user); else they stay their week, so that a dead token handed again is refused without TikTok.

        Returns:
            whether a grant was deleted.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        if generation is None:
            return self._delete(grant_id, "attribute_exists(grant_id)", None, forget_handed)
        values = {":generation": {"S": generation}}
        return self._delete(grant_id, "generation = :generation", values, forget_handed)

    def mark_erasing(self, grant_id: str) -> bool:
        """Record that the caller erases the user: the grant serves only to cancel and revoke at TikTok.

        Returns:
            whether there was a grant.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        return self._update(
            grant_id, "SET erasing_at = :now", "attribute_exists(grant_id)", {":now": epoch_value(_now())}
        )

    # -- DynamoDB --------------------------------------------------------------------------------
    def _get(self, grant_id: str) -> Item | None:
        try:
            answer = self._client.get_item(TableName=self._table, Key=_key(grant_id), ConsistentRead=True)
        except (ClientError, BotoCoreError) as error:
            raise store_error("GetItem", error) from None
        return answer.get("Item")

    def _update(self, grant_id: str, expression: str, condition: str, values: dict[str, Any]) -> bool:
        """One conditional UpdateItem; False when the condition did not hold.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_key(grant_id),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if is_condition_failure(error):
                return False
            raise store_error("UpdateItem", error) from None
        except BotoCoreError as error:
            raise store_error("UpdateItem", error) from None
        return True

    def _delete(
        self, grant_id: str, condition: str, values: dict[str, Any] | None, forget_handed: bool = False
    ) -> bool:
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": _key(grant_id),
            "ConditionExpression": condition,
        }
        if values:
            request["ExpressionAttributeValues"] = values
        try:
            old = self._client.delete_item(**request, ReturnValues="ALL_OLD").get("Attributes", {})
        except ClientError as error:
            if is_condition_failure(error):
                return False
            raise store_error("DeleteItem", error) from None
        except BotoCoreError as error:
            raise store_error("DeleteItem", error) from None
        for digest in sorted(old.get("handed", {}).get("SS", [])) if forget_handed else ():
            try:
                self._client.delete_item(TableName=self._table, Key=_key(_handed_id(digest)))
            except (ClientError, BotoCoreError) as error:
                raise store_error("DeleteItem", error) from None
        return True


def _key(grant_id: str) -> dict[str, Any]:
    return {"grant_id": {"S": grant_id}}


def _token_updates(tokens: SealedTokens) -> tuple[list[str], dict[str, Any]]:
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


def _expired(item: Item) -> bool:
    """Whether the item's TTL passed (DynamoDB deletes expired items late, up to days)."""
    expires = _moment(item, "expires_at")
    return expires is not None and expires <= _now()


def _grant(item: Item) -> Grant:
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
