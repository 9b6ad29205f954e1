"""TicketStore on the table:

pk = "TICKET#{digest}"   sk = "TICKET"   one stream ticket (tenant, target), gone after expires_at (the table's TTL)

The api function writes tickets; the stream function takes them (one DeleteItem that returns the item, so a ticket
opens one stream), and may read nothing else of these partitions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions.adapters.serde import from_item, to_item
from functions.agent.streams import StreamTicket

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any

TICKET_PARTITIONS = "TICKET#*"


def ticket_key(digest: str) -> dict[str, Any]:
    return to_item({"pk": f"TICKET#{digest}", "sk": "TICKET"})


class DynamoDBTicketStore:
    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name, self.client = table_name, client

    def put_ticket(self, digest: str, ticket: StreamTicket) -> None:
        item = {**ticket_key(digest), **to_item({"type": "ticket", **ticket.model_dump()})}
        self.client.put_item(TableName=self.table_name, Item=item)

    def take_ticket(self, digest: str) -> StreamTicket | None:
        found = self.client.delete_item(TableName=self.table_name, Key=ticket_key(digest), ReturnValues="ALL_OLD")
        item = found.get("Attributes")
        if not item:
            return None
        values = from_item(item)
        return StreamTicket(tenant=values["tenant"], target=values["target"], expires_at=values["expires_at"])
