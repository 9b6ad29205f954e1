"""TicketStore in memory: what the DynamoDB adapter stores, no rules (those are functions/agent/streams.py's)."""

from __future__ import annotations

from functions.agent.streams import StreamTicket


class MemoryTickets:
    def __init__(self) -> None:
        self.tickets: dict[str, StreamTicket] = {}  # by digest

    def put_ticket(self, digest: str, ticket: StreamTicket) -> None:
        self.tickets[digest] = ticket

    def take_ticket(self, digest: str) -> StreamTicket | None:
        return self.tickets.pop(digest, None)
