"""Users' tokens, sealed, in DynamoDB (boto3): one item per grant, refreshed by one invocation at a time.

A grant (its values: :mod:`grant_items`) is keyed by whom it belongs to:

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

The same table holds the registry of handed-over refresh tokens (:class:`HandedRegistry`, which this
class extends); a purge deletes a grant's registry items with it: an erased user leaves no item naming
them.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.dynamodb_items import epoch_value, lease_value, query_pages, store_error
from tiktok_archive.adapters.grant_items import (
    Grant,
    Lease,
    SealedTokens,
    grant_of,
    token_updates,
)
from tiktok_archive.adapters.grant_table import table_key
from tiktok_archive.adapters.handed_registry import HandedRegistry
from tiktok_archive.models.clock import utc_now as _now

BY_USER_INDEX = "by-user"
_LEASE_FIELDS = "refresh_owner, refresh_lease_until"


def user_grant_id(caller: str, user_openid: str) -> str:
    """The grant every request of a user shares under one caller."""
    return f"user {caller} {user_openid}"


def request_grant_id(request_id: int) -> str:
    """A request's own grant, when its user is not known (only an access token was handed over)."""
    return f"request {request_id}"


class Grants(HandedRegistry):
    """The grants table: users' grants (and, inherited, the registry of handed-over tokens).

    Args:
        client: a boto3 DynamoDB client.
        table: the table's name (``GRANTS_TABLE_NAME``).
    """

    # -- reading ---------------------------------------------------------------------------------
    def get(self, grant_id: str) -> Grant | None:
        """The grant (a strongly consistent read), or None.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        item = self._get(grant_id)
        return grant_of(item) if item else None

    def of_user(self, user_openid: str) -> list[Grant]:
        """Every caller's grant of ``user_openid`` (the ``by-user`` index).

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        query = {
            "TableName": self._table,
            "IndexName": BY_USER_INDEX,
            "KeyConditionExpression": "user_openid = :user",
            "ExpressionAttributeValues": {":user": {"S": user_openid}},
        }
        return [grant_of(item) for page in query_pages(self._client, query) for item in page.get("Items", [])]

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
        sets, values = token_updates(tokens)
        sets += ["caller = :caller", "created_at = if_not_exists(created_at, :now)", "adopted_at = :now"]
        values.update({":caller": {"S": caller}, ":now": epoch_value(now)})
        if user_openid is not None:
            sets.append("user_openid = :user")
            values[":user"] = {"S": user_openid}
        expression = f"SET {', '.join(sets)} REMOVE {_LEASE_FIELDS}, abandoned_refresh_at, erasing_at"
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key=table_key(grant_id),
                UpdateExpression=expression,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except (ClientError, BotoCoreError) as error:
            raise store_error("UpdateItem", error) from None
        return grant_of(answer["Attributes"])

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
        sets, values = token_updates(tokens)
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
