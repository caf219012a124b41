"""The grants table's DynamoDB calls (boto3): strongly consistent reads, conditional updates and deletes.

What :class:`~tiktok_archive.adapters.grants.Grants` and the handed-token registry
(:class:`~tiktok_archive.adapters.handed_registry.HandedRegistry`) share: one item per ``grant_id`` —
a grant, or a ``handed <sha256>`` item of the registry — and every write conditional, a condition that
does not hold answering False rather than raising.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tiktok_archive.adapters.aws_clients import is_condition_failure
from tiktok_archive.adapters.dynamodb_items import Item, store_error

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def table_key(grant_id: str) -> dict[str, Any]:
    """The table's key of the item ``grant_id``."""
    return {"grant_id": {"S": grant_id}}


def handed_id(digest: str) -> str:
    """The registry's item of a handed-over refresh token, by its SHA-256."""
    return f"handed {digest}"


class GrantTable:
    """The grants table.

    Args:
        client: a boto3 DynamoDB client.
        table: the table's name (``GRANTS_TABLE_NAME``).
    """

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def _get(self, grant_id: str) -> Item | None:
        try:
            answer = self._client.get_item(
                TableName=self._table, Key=table_key(grant_id), ConsistentRead=True
            )
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
                Key=table_key(grant_id),
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
            "Key": table_key(grant_id),
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
                self._client.delete_item(TableName=self._table, Key=table_key(handed_id(digest)))
            except (ClientError, BotoCoreError) as error:
                raise store_error("DeleteItem", error) from None
        return True
