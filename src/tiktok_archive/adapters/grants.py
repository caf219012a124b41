"""A user's tokens, sealed, in DynamoDB (boto3): one item per grant, refreshed by one invocation at a time.

A grant is what lets the service act for a user without anyone calling: the access token (2 hours) and
the refresh token (180 days, rotating), each sealed with KMS under an encryption context naming the grant
(:class:`TokenVault`), so a ciphertext copied into another grant does not open. Its id is
``user:<open_id>`` when the user's ``open_id`` is known — every request of that user then shares it, and
so shares one refresh lineage — else ``request:<request_id>``.

Refresh tokens rotate: two refreshes racing with the same refresh token lose the user. So a refresh first
takes the grant's lease with a conditional write (``refresh_owner``, ``refresh_lease_until``, and the
``version`` it read), and the new tokens are written back conditionally on that lease or that version —
before anyone uses the new access token.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import is_condition_failure
from tiktok_archive.adapters.dynamodb_items import Item, epoch_value, lease_value, store_error, string_field
from tiktok_archive.models.download import utc_now as _now
from tiktok_archive.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def user_grant_id(user_openid: str) -> str:
    """The grant every request of a user shares."""
    return f"user:{user_openid}"


def grant_id_for(user_openid: str | None, request_id: int) -> str:
    """The grant a request's tokens belong to: its user's, or its own when the user is unknown."""
    return user_grant_id(user_openid) if user_openid else f"request:{request_id}"


@dataclass(frozen=True)
class Grant:
    """A grant as stored: sealed tokens (base64 KMS ciphertexts), their expiry, and the refresh lease.

    ``repr`` shows no ciphertext.
    """

    grant_id: str
    version: int
    sealed_access_token: str | None = field(repr=False)
    access_expires_at: datetime | None
    sealed_refresh_token: str | None = field(repr=False)
    refresh_expires_at: datetime | None
    user_openid: str | None
    refresh_owner: str | None = None
    refresh_lease_until: datetime | None = None
    last_request_id: int | None = None

    def being_refreshed(self, now: datetime) -> bool:
        """Whether another invocation holds the refresh lease right now."""
        return self.refresh_lease_until is not None and self.refresh_lease_until > now


@dataclass(frozen=True)
class SealedTokens:
    """New tokens to store, already sealed for this grant."""

    sealed_access_token: str = field(repr=False)
    access_expires_at: datetime
    sealed_refresh_token: str | None = field(repr=False)
    refresh_expires_at: datetime | None
    user_openid: str | None
    # A caller's tokens (not a refresh's): the request they were given with, which TikTok can be asked
    # about to confirm that a later caller's token is the same user's.
    request_id: int | None = None


class Grants:
    """The grants table.

    Args:
        client: a boto3 DynamoDB client.
        table: the table's name (``GRANTS_TABLE_NAME``).
        retention: how long a grant without a refresh token outlives its access token (for the record).
    """

    def __init__(self, client: DynamoDBClient, table: str, retention: timedelta) -> None:
        self._client = client
        self._table = table
        self._retention = retention

    def get(self, grant_id: str) -> Grant | None:
        """The grant, or None.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        try:
            answer = self._client.get_item(TableName=self._table, Key=_key(grant_id), ConsistentRead=True)
        except (ClientError, BotoCoreError) as error:
            raise store_error("GetItem", error) from None
        item = answer.get("Item")
        return _grant(item) if item else None

    def store(self, grant_id: str, tokens: SealedTokens) -> None:
        """Store a caller's tokens for the grant (a new consent), replacing the stored ones.

        Unless a refresh holds the lease right now: then the refreshed tokens are newer and are kept.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        sets, values = _token_updates(tokens, now, self._retention)
        sets.append("version = if_not_exists(version, :zero) + :one")
        values.update({":now": epoch_value(now), ":zero": {"N": "0"}, ":one": {"N": "1"}})
        if tokens.request_id is not None:
            sets.append("last_request_id = :request_id")
            values[":request_id"] = {"N": str(tokens.request_id)}
        condition = "attribute_not_exists(refresh_lease_until) OR refresh_lease_until < :now"
        if not self._update(grant_id, "SET " + ", ".join(sets), condition, values):
            logger.info("a refresh of this grant is running; its tokens are kept")

    def take_refresh_lease(self, grant: Grant, lease: timedelta) -> str | None:
        """Take the grant's refresh lease if nobody holds it and the grant is still at ``grant.version``.

        Returns:
            the lease's owner token, or None when another invocation refreshes (or refreshed) it.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        now = _now()
        owner = uuid.uuid4().hex
        taken = self._update(
            grant.grant_id,
            "SET refresh_owner = :owner, refresh_lease_until = :until",
            "version = :version AND "
            "(attribute_not_exists(refresh_lease_until) OR refresh_lease_until < :now)",
            {
                ":owner": {"S": owner},
                ":until": lease_value(now, lease),
                ":version": {"N": str(grant.version)},
                ":now": epoch_value(now),
            },
        )
        return owner if taken else None

    def store_refreshed(self, grant: Grant, owner: str, tokens: SealedTokens) -> bool:
        """Write a refresh's rotated tokens and release the lease.

        Only while the lease is ours, or the grant is still at the version the refresh started from
        (nobody refreshed it since).

        Returns:
            False when the grant moved on meanwhile (the tokens were not written).

        Raises:
            RecordStoreError: DynamoDB failed (the rotated refresh token may then be lost: logged).
        """
        sets, values = _token_updates(tokens, _now(), self._retention)
        sets.append("version = version + :one")
        values.update({":owner": {"S": owner}, ":version": {"N": str(grant.version)}, ":one": {"N": "1"}})
        return self._update(
            grant.grant_id,
            "SET " + ", ".join(sets) + " REMOVE refresh_owner, refresh_lease_until",
            "refresh_owner = :owner OR version = :version",
            values,
        )

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

    def release_refresh_lease(self, grant_id: str, owner: str) -> None:
        """Give the lease back after a refresh that changed nothing (never raises: it lapses anyway)."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_key(grant_id),
                UpdateExpression="REMOVE refresh_owner, refresh_lease_until",
                ConditionExpression="refresh_owner = :owner",
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except (ClientError, BotoCoreError):
            logger.info("refresh lease left to lapse")

    def erase(self, grant_id: str) -> int:
        """Delete the grant and its tokens (the user revoked the app, or TikTok refused its refresh).

        Returns:
            1 when there was a grant, 0 otherwise.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        try:
            answer = self._client.delete_item(
                TableName=self._table, Key=_key(grant_id), ReturnValues="ALL_OLD"
            )
        except (ClientError, BotoCoreError) as error:
            raise store_error("DeleteItem", error) from None
        return 1 if answer.get("Attributes") else 0


def _key(grant_id: str) -> dict[str, Any]:
    return {"grant_id": {"S": grant_id}}


def _token_updates(
    tokens: SealedTokens, now: datetime, retention: timedelta
) -> tuple[list[str], dict[str, Any]]:
    """The SET clauses writing ``tokens`` and their values, each clause decided with its value."""
    lives_until = max(tokens.refresh_expires_at or tokens.access_expires_at, now) + retention
    sets = ["sealed_access_token = :access", "access_expires_at = :access_expires", "expires_at = :expires"]
    values: dict[str, Any] = {
        ":access": {"S": tokens.sealed_access_token},
        ":access_expires": epoch_value(tokens.access_expires_at),
        ":expires": epoch_value(lives_until),
    }
    if tokens.sealed_refresh_token is not None and tokens.refresh_expires_at is not None:
        sets += ["sealed_refresh_token = :refresh", "refresh_expires_at = :refresh_expires"]
        values[":refresh"] = {"S": tokens.sealed_refresh_token}
        values[":refresh_expires"] = epoch_value(tokens.refresh_expires_at)
    if tokens.user_openid is not None:
        sets.append("user_openid = :user")
        values[":user"] = {"S": tokens.user_openid}
    return sets, values


def _moment(item: Item, name: str) -> datetime | None:
    value = item.get(name, {}).get("N")
    return datetime.fromtimestamp(int(value), UTC) if value is not None else None


def _grant(item: Item) -> Grant:
    return Grant(
        grant_id=str(item["grant_id"]["S"]),
        version=int(item.get("version", {}).get("N", "0")),
        sealed_access_token=string_field(item, "sealed_access_token"),
        access_expires_at=_moment(item, "access_expires_at"),
        sealed_refresh_token=string_field(item, "sealed_refresh_token"),
        refresh_expires_at=_moment(item, "refresh_expires_at"),
        user_openid=string_field(item, "user_openid"),
        refresh_owner=string_field(item, "refresh_owner"),
        refresh_lease_until=_moment(item, "refresh_lease_until"),
        last_request_id=int(item["last_request_id"]["N"]) if "last_request_id" in item else None,
    )
