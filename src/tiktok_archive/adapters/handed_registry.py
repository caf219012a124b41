"""The registry of handed-over refresh tokens, in the grants table: who is exchanging one, where it went.

Refresh tokens rotate, so a refresh token handed over may be sent to TikTok once only. Its item, ``handed
<sha256>`` (the token itself is never stored), says:

- while a handover exchanges it at TikTok: that it does (``exchange_owner``, for a short lease). The mark
  is a conditional put, so of two handovers of the same token one exchanges it and the other waits for
  its result; the mark of a handover that died lapses by itself;
- afterwards, for :data:`HANDED_FOR`: which grant it went into (``into``) and for which caller. The same
  token handed over again (a backend retrying a request whose answer it lost) joins that grant instead
  of being sent to TikTok, which would refuse it. The grant lists its digests (``handed``), so that a
  purge deletes them with it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import is_condition_failure
from tiktok_archive.adapters.dynamodb_items import epoch_value, lease_value, store_error
from tiktok_archive.adapters.grant_items import Exchanged, Exchanging, handed_of
from tiktok_archive.adapters.grant_table import GrantTable, handed_id
from tiktok_archive.models.clock import utc_now as _now

# A handed-over token is remembered this long.
HANDED_FOR = timedelta(days=7)


class HandedRegistry(GrantTable):
    """The handed-over refresh tokens' items of the grants table (see the module)."""

    def handed(self, digest: str) -> Exchanged | Exchanging | None:
        """What the registry says of a handed-over refresh token (by its SHA-256), if anything.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        item = self._get(handed_id(digest))
        return handed_of(item, _now()) if item else None

    def begin_exchange(self, digest: str, lease: timedelta) -> str | None:
        """Mark a handed-over refresh token (by its SHA-256) as being exchanged at TikTok, for ``lease``.

        A conditional put: only when the registry says nothing of it (or what it said lapsed).

        Returns:
            the mark's owner (to end it with), or None when another handover is exchanging the token or
            exchanged it before.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        owner = uuid.uuid4().hex
        now = _now()
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "grant_id": {"S": handed_id(digest)},
                    "exchange_owner": {"S": owner},
                    "expires_at": lease_value(now, lease),
                },
                ConditionExpression="attribute_not_exists(grant_id) OR expires_at <= :now",
                ExpressionAttributeValues={":now": epoch_value(now)},
            )
        except ClientError as error:
            if is_condition_failure(error):
                return None
            raise store_error("PutItem", error) from None
        except BotoCoreError as error:
            raise store_error("PutItem", error) from None
        return owner

    def end_exchange(self, digest: str, owner: str) -> None:
        """Drop the mark of an exchange that left no grant (never raises: the mark lapses anyway)."""
        try:
            self._delete(handed_id(digest), "exchange_owner = :owner", {":owner": {"S": owner}})
        except Exception:  # noqa: BLE001 - a mark not dropped lapses by itself
            return

    def remember_handed(self, digest: str, grant_id: str, caller: str) -> None:
        """Remember which grant a handed-over refresh token (by its SHA-256) went into, for a week.

        It replaces the token's exchange mark.

        Raises:
            RecordStoreError: DynamoDB failed.
        """
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "grant_id": {"S": handed_id(digest)},
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
