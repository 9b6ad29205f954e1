"""DynamoDBSessionStore on moto: conditional writes that never lose a concurrent one, pages, deletes."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from functions.adapters.dynamodb_sessions import DynamoDBSessionStore
from functions.adapters.dynamodb_store import DynamoDBRunStore
from functions.agent.agents import Agent
from functions.agent.models import Budget, Run, RunKey, RunStatus, StepRef, ToolOutcome, Turn, UserEvent
from functions.agent.sessions import event_id
from tests.functional.conftest import TABLE, Aws

NOW = "2026-12-01T00:00:00.000+00:00"


@pytest.fixture
def stores(aws: Aws) -> tuple[DynamoDBSessionStore, DynamoDBRunStore]:
    client = boto3.client("dynamodb")
    return DynamoDBSessionStore(TABLE, client), DynamoDBRunStore(TABLE, client)


def agent(n: int, version: int = 1, tenant: str = "acme") -> Agent:
    return Agent(id=f"agent_{n:026x}", tenant=tenant, name=f"a{n}", model="claude-haiku-4-5", version=version,
                 created_at=NOW, updated_at=NOW)  # fmt: skip


def session(n: int, agent_id: str = "agent_a", rev: int = 0) -> Run:
    return Run(
        run_id=f"sesn_{n:026x}", tenant="acme", status=RunStatus.SUCCEEDED, input="", model="claude-haiku-4-5",
        tools=[], budget=Budget(max_steps=25), session={"rev": rev, "agent_id": agent_id, "archived_at": None},
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def test_the_next_agent_version_is_written_only_over_the_version_read(
    stores: tuple[DynamoDBSessionStore, DynamoDBRunStore],
) -> None:
    sessions, _ = stores
    sessions.create_agent(agent(1))
    assert sessions.put_version(agent(1, version=2), expected=1)
    assert not sessions.put_version(agent(1, version=3), expected=1)  # a writer that read version 1 loses
    assert sessions.get_agent("acme", agent(1).id, None).version == 2  # type: ignore[union-attr]
    assert [a.version for a in sessions.list_versions("acme", agent(1).id, limit=10, after=None)[0]] == [2, 1]
    assert sessions.get_agent("other", agent(1).id, None) is None


def test_agents_are_listed_newest_first_in_pages(stores: tuple[DynamoDBSessionStore, DynamoDBRunStore]) -> None:
    sessions, _ = stores
    for n in range(1, 6):
        sessions.create_agent(agent(n))
    first, cursor = sessions.list_agents("acme", limit=2, after=None, include_archived=False)
    second, cursor2 = sessions.list_agents("acme", limit=2, after=cursor, include_archived=False)
    third, cursor3 = sessions.list_agents("acme", limit=2, after=cursor2, include_archived=False)
    assert [a.name for a in first + second + third] == ["a5", "a4", "a3", "a2", "a1"]
    assert cursor3 is None


def test_saving_a_session_fails_whole_when_another_write_came_first(
    stores: tuple[DynamoDBSessionStore, DynamoDBRunStore],
) -> None:
    sessions, runs = stores
    read = session(1)
    sessions.create_session(read, [])
    key = read.key
    started = read.model_copy(
        update={"session": {**(read.session or {}), "rev": 1}, "status": RunStatus.QUEUED,
                "turns": [Turn(first_step=0, started_at=NOW)]}
    )  # fmt: skip
    message = UserEvent(id=event_id(1, 0, 1), type="user.message", turn=1, processed_at=NOW,
                        body={"content": [{"type": "text", "text": "hi"}]})  # fmt: skip
    result = ToolOutcome(tool_use_id="toolu_1", name="calculator", content="2")
    # The first writer wins; a second one that read the same revision stores nothing at all
    assert sessions.save_session(started, read=read, events=[message], results=[])
    other = UserEvent(id=event_id(1, 0, 1, 1), type="user.message", turn=1, processed_at=NOW, body={"content": []})
    assert not sessions.save_session(started, read=read, events=[other], results=[(StepRef(key, 0), result)])
    history = runs.load_history(key)
    assert history.run.status is RunStatus.QUEUED and history.run.turn == 1
    assert [e.id for e in history.user_events] == [message.id] and history.tool_results == {}


def test_sessions_are_listed_by_agent_newest_first_and_deleted_with_everything_under_them(
    stores: tuple[DynamoDBSessionStore, DynamoDBRunStore],
) -> None:
    sessions, runs = stores
    for n in range(1, 5):
        sessions.create_session(session(n, agent_id="agent_a" if n % 2 else "agent_b"), [])
    listed, cursor = sessions.list_sessions("acme", limit=10, after=None, agent_id="agent_a", include_archived=False)
    assert [r.run_id for r in listed] == [session(3).run_id, session(1).run_id] and cursor is None
    key = RunKey("acme", session(3).run_id)
    interrupt = UserEvent(id=event_id(1, 4), type="user.interrupt", turn=1, processed_at=NOW, body={})
    assert sessions.save_interrupt(key, interrupt) and not sessions.save_interrupt(key, interrupt)
    sessions.delete_session(key)
    assert runs.get_run(key) is None
    assert (
        boto3.client("dynamodb").query(
            TableName=TABLE,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"T#acme#R#{key.run_id}"}},
        )["Items"]
        == []
    )
    left, _ = sessions.list_sessions("acme", limit=10, after=None, agent_id=None, include_archived=False)
    assert key.run_id not in [r.run_id for r in left] and len(left) == 3


class ReadOrder:
    """A DynamoDB client that notes the sort key of each item in the order its Queries return them: the order they
    were read in (a Query reads its range in key order, and a transaction that commits meanwhile is seen by the
    part still to be read)."""

    def __init__(self, client: Any) -> None:
        self.client, self.read = client, list[str]()

    def query(self, **kwargs: Any) -> Any:
        page = self.client.query(**kwargs)
        self.read += [item["sk"]["S"] for item in page["Items"]]
        return page

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_a_history_reads_the_run_before_anything_under_it(
    stores: tuple[DynamoDBSessionStore, DynamoDBRunStore],
) -> None:
    # Given a session whose turn was started by a message (one transaction: the event and the turn on the run item)
    sessions, _ = stores
    read = session(1)
    sessions.create_session(read, [])
    started = read.model_copy(update={"session": {**(read.session or {}), "rev": 1}, "status": RunStatus.QUEUED,
                                      "turns": [Turn(first_step=0, started_at=NOW)]})  # fmt: skip
    message = UserEvent(id=event_id(1, 0, 1), type="user.message", turn=1, processed_at=NOW, body={"content": []})
    assert sessions.save_session(started, read=read, events=[message], results=[])
    # When its history is read
    client = ReadOrder(boto3.client("dynamodb"))
    history = DynamoDBRunStore(TABLE, client).load_history(read.key)  # type: ignore[arg-type]
    # Then the run item came first: a turn started while the history was read cannot appear without its message
    # (the event items sort before the run's, and a single Query would have read them before it)
    assert client.read[0] == "RUN" and sorted(client.read) == sorted(["RUN", f"EVENT#{message.id}"])
    assert history.run.turn == 1 and [e.id for e in history.user_events] == [message.id]
