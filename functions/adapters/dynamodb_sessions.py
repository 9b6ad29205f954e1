"""AgentStore and SessionStore on the runs' DynamoDB table.

Keys (tenant-scoped like every partition):

    pk = "T#{tenant}#AGENTS"     sk = "HEAD#{agent_id}"                 the current version (and archived_at)
                                 sk = "VER#{agent_id}#{version:06d}"    every version, immutable
                                 sk = "MCP#{agent_id}#{version:06d}#{server}"  the tools an MCP server listed
    pk = "T#{tenant}#SESSIONS"   sk = "S#{session_id}"                  the list of sessions (agent id, archived)

A session is a run: its item and its steps, tool results and events live in the run's partition
(functions/adapters/dynamodb_store.py). Ids are time-ordered, so a descending Query lists newest first.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from functions.adapters.dynamodb_store import (
    RUN_SK,
    _Expression,
    event_sk,
    event_to_item,
    pending_sk,
    render,
    run_from_item,
    run_pk,
    run_to_item,
    tool_to_item,
)
from functions.adapters.serde import from_item, to_item
from functions.agent.agents import Agent
from functions.agent.ledger import AtStep, HasEnded, HoldsNothing, LeaseIs
from functions.agent.models import Run, RunKey, StepRef, ToolOutcome, UserEvent

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any


def agents_pk(tenant: str) -> str:
    return f"T#{tenant}#AGENTS"


def sessions_pk(tenant: str) -> str:
    return f"T#{tenant}#SESSIONS"


def _agent_item(agent: Agent, sk: str) -> dict[str, Any]:
    return to_item(
        {"pk": agents_pk(agent.tenant), "sk": sk, "type": "agent", "version": agent.version,
         "agent": agent.model_dump_json()}
    )  # fmt: skip


def _agent_from(item: dict[str, Any]) -> Agent:
    return Agent.model_validate_json(item["agent"]["S"])


def _head(agent_id: str) -> str:
    return f"HEAD#{agent_id}"


def _version(agent_id: str, version: int) -> str:
    return f"VER#{agent_id}#{version:06d}"


def _index_item(run: Run) -> dict[str, Any]:
    session = run.session or {}
    return to_item(
        {
            "pk": sessions_pk(run.tenant),
            "sk": f"S#{run.run_id}",
            "type": "session_index",
            "agent_id": session.get("agent_id"),
            "archived": bool(session.get("archived_at")),
        }
    )


def _listing(agent: Agent, server: str) -> str:
    return f"MCP#{agent.id}#{agent.version:06d}#{server}"


class DynamoDBSessionStore:
    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name, self.client = table_name, client

    # ------------------------------------------------------------------------------------------- agents

    def create_agent(self, agent: Agent) -> None:
        self._transact(
            [
                self._put(_agent_item(agent, _head(agent.id)), "attribute_not_exists(pk)"),
                self._put(_agent_item(agent, _version(agent.id, agent.version)), "attribute_not_exists(pk)"),
            ]
        )

    def get_agent(self, tenant: str, agent_id: str, version: int | None) -> Agent | None:
        sk = _head(agent_id) if version is None else _version(agent_id, version)
        item = self.client.get_item(
            TableName=self.table_name, Key=self._key(agents_pk(tenant), sk), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        agent = _agent_from(item)
        if version is not None:  # an old version reports whether the agent is archived now
            head = self.get_agent(tenant, agent_id, None)
            agent = agent.model_copy(update={"archived_at": head.archived_at if head else None})
        return agent

    def put_version(self, agent: Agent, *, expected: int) -> bool:
        e = _Expression()
        condition = f"{e.name('version')} = {e.value(expected)}"
        head = self._put(_agent_item(agent, _head(agent.id)), condition, e)
        return self._transact([head, self._put(_agent_item(agent, _version(agent.id, agent.version)),
                                               "attribute_not_exists(pk)")])  # fmt: skip

    def archive_agent(self, agent: Agent) -> bool:
        """Archive the version read; False if another version was written meanwhile."""
        try:
            self.client.put_item(
                TableName=self.table_name, Item=_agent_item(agent, _head(agent.id)),
                ConditionExpression="#v = :v", ExpressionAttributeNames={"#v": "version"},
                ExpressionAttributeValues={":v": {"N": str(agent.version)}},
            )  # fmt: skip
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def list_agents(
        self, tenant: str, *, limit: int, after: str | None, include_archived: bool
    ) -> tuple[list[Agent], str | None]:
        found, next_page = self._page(agents_pk(tenant), "HEAD#", limit, after, lambda item: include_archived or
                                      _agent_from(item).archived_at is None)  # fmt: skip
        return [_agent_from(item) for item in found], next_page

    def list_versions(
        self, tenant: str, agent_id: str, *, limit: int, after: str | None
    ) -> tuple[list[Agent], str | None]:
        found, next_page = self._page(agents_pk(tenant), f"VER#{agent_id}#", limit, after, lambda item: True)
        return [_agent_from(item) for item in found], next_page

    # ------------------------------------------------------------------------------------------- sessions

    def create_session(self, run: Run, events: list[UserEvent]) -> None:
        items = [self._put(run_to_item(run), "attribute_not_exists(pk)"), self._put(_index_item(run), None)]
        items += [self._put(event_to_item(run.key, event), "attribute_not_exists(pk)") for event in events]
        if not self._transact(items):
            raise RuntimeError(f"session {run.run_id} exists")  # ids are random: never in practice

    def save_session(
        self,
        run: Run,
        *,
        read: Run,
        events: list[UserEvent],
        results: list[tuple[StepRef, ToolOutcome]],
        discard_pending: int | None = None,
    ) -> bool:
        e = _Expression()
        # the run item is rewritten whole: it must be as read, ended, holding no reservation and its lease (with the
        # call held under it) the one read, or a lease given back meanwhile (a delayed release, a late settlement)
        # would be written back and given back twice
        held = (HasEnded(), AtStep(read.completed_steps), HoldsNothing(), LeaseIs(read.lease))
        condition = " AND ".join(
            [f"session_rev = {e.value(int((read.session or {}).get('rev', 0)))}", *(render(c, e) for c in held)]
        )
        items = [self._put(run_to_item(run), condition, e), self._put(_index_item(run), None)]
        items += [self._put(event_to_item(run.key, event), "attribute_not_exists(pk)") for event in events]
        items += [self._put(tool_to_item(ref, outcome), "attribute_not_exists(pk)") for ref, outcome in results]
        if discard_pending is not None:
            key = self._key(run_pk(run.key), pending_sk(discard_pending))
            items.append({"Delete": {"TableName": self.table_name, "Key": key}})
        return self._transact(items)

    def save_interrupt(self, key: RunKey, event: UserEvent) -> bool:
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=event_to_item(key, event),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def delete_event(self, key: RunKey, event_id: str) -> None:
        self.client.delete_item(TableName=self.table_name, Key=self._key(run_pk(key), event_sk(event_id)))

    def list_sessions(
        self, tenant: str, *, limit: int, after: str | None, agent_id: str | None, include_archived: bool
    ) -> tuple[list[Run], str | None]:
        def wanted(item: dict[str, Any]) -> bool:
            values = from_item(item)
            return (agent_id is None or values.get("agent_id") == agent_id) and (
                include_archived or not values.get("archived")
            )

        found, next_page = self._page(sessions_pk(tenant), "S#", limit, after, wanted)
        keys = [self._key(run_pk(RunKey(tenant, item["sk"]["S"][2:])), RUN_SK) for item in found]
        runs: dict[str, Run] = {}
        for start in range(0, len(keys), 100):
            unread: list[dict[str, Any]] = keys[start : start + 100]
            for _ in range(8):  # what BatchGetItem leaves unprocessed (a 16 MB page, throttling) is asked again
                response = self.client.batch_get_item(
                    RequestItems={self.table_name: {"Keys": unread, "ConsistentRead": True}}
                )
                for item in response["Responses"].get(self.table_name, []):
                    run = run_from_item(item)
                    runs[run.run_id] = run
                unread = response.get("UnprocessedKeys", {}).get(self.table_name, {}).get("Keys", [])
                if not unread:
                    break
            if unread:
                raise RuntimeError("DynamoDB left sessions unread after 8 attempts; retry the request")
        ordered = [runs[item["sk"]["S"][2:]] for item in found if item["sk"]["S"][2:] in runs]
        return ordered, next_page

    def delete_session(self, key: RunKey) -> None:
        pk = run_pk(key)
        start: dict[str, Any] | None = None
        while True:
            query: dict[str, Any] = {"TableName": self.table_name, "KeyConditionExpression": "pk = :pk",
                                     "ExpressionAttributeValues": {":pk": {"S": pk}},
                                     "ProjectionExpression": "pk, sk"}  # fmt: skip
            if start:
                query["ExclusiveStartKey"] = start
            page = self.client.query(**query)
            for item in page.get("Items", []):
                self.client.delete_item(TableName=self.table_name, Key={"pk": item["pk"], "sk": item["sk"]})
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        self.client.delete_item(TableName=self.table_name, Key=self._key(sessions_pk(key.tenant), f"S#{key.run_id}"))

    # ------------------------------------------------------------------------------------------- helpers

    def _page(
        self, pk: str, prefix: str, limit: int, after: str | None, wanted: Any
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Items under ``prefix``, newest first, ``limit`` of those ``wanted`` after the cursor ``after``."""
        found: list[dict[str, Any]] = []
        start: dict[str, Any] | None = self._key(pk, after) if after and after.startswith(prefix) else None
        while len(found) <= limit:
            query: dict[str, Any] = {
                "TableName": self.table_name,
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
                "ExpressionAttributeValues": {":pk": {"S": pk}, ":prefix": {"S": prefix}},
                "ScanIndexForward": False,
                "ConsistentRead": True,
            }
            if start:
                query["ExclusiveStartKey"] = start
            page = self.client.query(**query)
            found += [item for item in page.get("Items", []) if wanted(item)]
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        chosen = found[:limit]
        return chosen, (chosen[-1]["sk"]["S"] if len(found) > limit else None)

    def _key(self, pk: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": pk}, "sk": {"S": sk}}

    def _put(self, item: dict[str, Any], condition: str | None, e: _Expression | None = None) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self.table_name, "Item": item}
        if condition:
            put["ConditionExpression"] = condition
        if e is not None and e.names:
            put["ExpressionAttributeNames"] = e.names
        if e is not None and e.values:
            put["ExpressionAttributeValues"] = to_item(e.values)
        return {"Put": put}

    def _transact(self, items: list[dict[str, Any]]) -> bool:
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                return False
            raise
        return True

    # ------------------------------------------------------------------------------------------- MCP listings

    def get_mcp_listing(self, agent: Agent, server: str) -> list[dict[str, Any]] | None:
        item = self.client.get_item(
            TableName=self.table_name, Key=to_item({"pk": agents_pk(agent.tenant), "sk": _listing(agent, server)})
        ).get("Item")
        return None if item is None else list(json.loads(item["tools"]["S"]))

    def put_mcp_listing(self, agent: Agent, server: str, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Keep the first listing of the version (a concurrent second one is dropped): every session of one
        agent version sees the same tools."""
        item = to_item({"pk": agents_pk(agent.tenant), "sk": _listing(agent, server), "type": "mcp_listing",
                        "tools": json.dumps(tools, ensure_ascii=False)})  # fmt: skip
        try:
            self.client.put_item(TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            return self.get_mcp_listing(agent, server) or tools
        return tools
