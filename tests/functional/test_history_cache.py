"""A run's history read incrementally (functions/adapters/dynamodb_history.py) against moto: two containers (two
stores, each with its own cache) sharing one table read exactly what a whole read returns, whoever wrote what, and
a step reads no more items as the run grows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest

from functions.adapters.dynamodb_history import HistoryCache
from functions.adapters.dynamodb_sessions import DynamoDBSessionStore
from functions.adapters.dynamodb_step_store import StepRunStore
from functions.adapters.dynamodb_store import DynamoDBRunStore
from functions.agent import ledger
from functions.agent.errors import BudgetRefusedError
from functions.agent.ledger import BudgetLimits
from functions.agent.lifecycle import settle_calls
from functions.agent.models import (
    Budget,
    ModelResponse,
    Reservation,
    Run,
    RunKey,
    RunStatus,
    StepDecision,
    StepRecord,
    StepRef,
    ToolOutcome,
    Turn,
    Usage,
    UserEvent,
)
from functions.agent.ports import RunHistory
from functions.agent.sessions import event_id
from tests.functional.conftest import TABLE, Aws

NOW = "2026-12-01T00:00:00.000+00:00"


class Containers:
    """Two step containers (``a``, ``b``: each its own cache), a tool container (``tools``) and a reader without a
    cache: what a whole read returns (``whole``)."""

    def __init__(self) -> None:
        client = boto3.client("dynamodb")
        self.a = DynamoDBRunStore(TABLE, client, history=HistoryCache())
        self.b = DynamoDBRunStore(TABLE, client, history=HistoryCache())
        self.tools = DynamoDBRunStore(TABLE, client)
        self.sessions = DynamoDBSessionStore(TABLE, client)
        self.reader = DynamoDBRunStore(TABLE, client)

    def whole(self, key: RunKey) -> RunHistory:
        return self.reader.load_history(key)

    def same(self, store: DynamoDBRunStore, key: RunKey) -> RunHistory:
        """The store's history, checked equal to a whole read's."""
        history = store.load_history(key)
        assert history == self.whole(key)
        return history


@pytest.fixture
def world(aws: Aws) -> Containers:
    return Containers()


def make_run(run_id: str = "run_history", *, created_at: str = NOW, **extra: Any) -> Run:
    return Run(run_id=run_id, tenant="acme", status=RunStatus.RUNNING, input="task", model="claude-haiku-4-5",
               tools=["calculator"], budget=Budget(max_steps=100), created_at=created_at, updated_at=created_at,
               **extra)  # fmt: skip


def record(
    run: Run, n: int, calls: int = 1, decision: StepDecision = StepDecision.TOOLS, status: RunStatus | None = None
) -> StepRecord:
    content = [{"type": "tool_use", "id": f"t{n}_{i}", "name": "calculator", "input": {"expression": "1+1"}}
               for i in range(calls)]  # fmt: skip
    text = [{"type": "text", "text": "x"}]
    return StepRecord(run_id=run.run_id, step=n, model="claude-haiku-4-5", provider="scripted",
                      stop_reason="tool_use" if calls else "end_turn", content=content or text,
                      usage=Usage(input_tokens=10, output_tokens=1), cost_usd=Decimal("0.0001"), decision=decision,
                      status=status, started_at=NOW, finished_at=NOW, duration_ms=1)  # fmt: skip


def settle(store: DynamoDBRunStore, key: RunKey, step: StepRecord) -> None:
    run = store.get_run(key)
    assert run is not None
    ledger.settle(store, run, step, None)


def result(n: int, i: int = 0, *, final: bool = True, content: str = "2") -> ToolOutcome:
    return ToolOutcome(tool_use_id=f"t{n}_{i}", name="calculator", content=content, final=final)


def test_another_containers_steps_and_results_are_read_after_the_last_step_seen(world: Containers) -> None:
    run = make_run()
    world.a.create_run(run)
    key = run.key
    for n in range(3):
        settle(world.a, key, record(run, n, calls=2))
        world.tools.save_tool_result(StepRef(key, n), result(n, 0))
        world.tools.save_tool_result(StepRef(key, n), result(n, 1))
        world.same(world.a, key)
    for n in range(3, 6):  # container b takes three steps: a has not seen them
        world.same(world.b, key)
        settle(world.b, key, record(run, n))
        world.tools.save_tool_result(StepRef(key, n), result(n))
    history = world.same(world.a, key)
    assert [s.step for s in history.steps] == list(range(6)) and len(history.tool_results) == 9
    world.same(world.b, key)


def test_a_provisional_result_replaced_by_the_final_one_is_never_served_stale(world: Containers) -> None:
    run = make_run()
    world.a.create_run(run)
    key = run.key
    settle(world.a, key, record(run, 0))
    assert world.tools.claim_tool(StepRef(key, 0), result(0, final=False, content="unknown")) is None
    assert not world.same(world.a, key).tool_results[(0, "t0_0")].final  # cached while provisional
    world.tools.save_tool_result(StepRef(key, 0), result(0, content="42"))  # the tool returned: replaced
    assert world.same(world.a, key).tool_results[(0, "t0_0")].content == "42"
    settle(world.a, key, record(run, 1))
    world.tools.save_tool_result(StepRef(key, 1), result(1))
    world.same(world.a, key)


def test_results_an_end_gives_and_late_results_it_drops_are_read_as_stored(world: Containers) -> None:
    run = make_run()
    world.a.create_run(run)
    key = run.key
    settle(world.a, key, record(run, 0, calls=2))
    world.tools.save_tool_result(StepRef(key, 0), result(0, 0))
    world.same(world.a, key)  # one of two results cached
    ended = world.reader.get_run(key)
    assert ended is not None
    settle_calls(world.reader, ended, "was cancelled")  # the end gives the other call its error result
    late = world.tools.save_tool_result(StepRef(key, 0), result(0, 1, content="late"))  # dropped: one is final
    assert late.content != "late"
    history = world.same(world.a, key)
    assert history.tool_results[(0, "t0_1")].is_error


def test_a_pending_answer_is_read_while_stored_and_gone_once_settled(world: Containers) -> None:
    run = make_run()
    world.a.create_run(run)
    key = run.key
    world.same(world.a, key)
    answer = ModelResponse(model="claude-haiku-4-5", provider="scripted", stop_reason="end_turn",
                           content=[{"type": "text", "text": "x"}], usage=Usage())  # fmt: skip
    world.b.save_pending(key, 0, answer)
    assert world.same(world.a, key).pending == {0: answer}
    settle(world.b, key, record(run, 0, calls=0, decision=StepDecision.FINISH))  # deletes the pending answer
    assert world.same(world.a, key).pending == {}


def test_a_sessions_events_and_a_removed_interrupt_are_read_as_stored(world: Containers) -> None:
    run = make_run("sesn_history", session={"rev": 0, "agent_id": "agent_a", "archived_at": None},
                   turns=[Turn(first_step=0, started_at=NOW)])  # fmt: skip
    message = UserEvent(id=event_id(1, 0, 1), type="user.message", turn=1, processed_at=NOW,
                        body={"content": [{"type": "text", "text": "hi"}]})  # fmt: skip
    world.sessions.create_session(run, [message])
    key = run.key
    settle(world.a, key, record(run, 0, calls=0, decision=StepDecision.FINISH, status=RunStatus.SUCCEEDED))
    interrupt = UserEvent(id=event_id(1, 4), type="user.interrupt", turn=1, processed_at=NOW, body={})
    assert world.sessions.save_interrupt(key, interrupt)
    assert world.same(world.a, key).user_events == [message, interrupt]
    world.sessions.delete_event(key, interrupt.id)  # the turn idled on its own: the interrupt is taken back
    assert world.same(world.a, key).user_events == [message]
    for turn in range(2, 5):  # later turns: each starts with the client's message
        current = world.reader.get_run(key)
        assert current is not None
        following = UserEvent(id=event_id(turn, 0, turn), type="user.message", turn=turn, processed_at=NOW,
                              body={"content": [{"type": "text", "text": f"turn {turn}"}]})  # fmt: skip
        started = current.model_copy(update={
            "session": {**(current.session or {}), "rev": turn - 1},
            "turns": [*current.turns, Turn(first_step=current.completed_steps, started_at=NOW)],
            "status": RunStatus.SUCCEEDED,
        })  # fmt: skip
        assert world.sessions.save_session(started, read=current, events=[following], results=[])
        assert world.same(world.a, key).user_events[-1] == following
    assert len(world.same(world.b, key).user_events) == 4


def test_a_run_made_again_under_the_same_key_is_read_whole(world: Containers, aws: Aws) -> None:
    run = make_run()
    world.a.create_run(run)
    settle(world.a, run.key, record(run, 0))
    world.same(world.a, run.key)
    for item in aws.dynamodb.scan(TableName=TABLE)["Items"]:
        aws.dynamodb.delete_item(TableName=TABLE, Key={"pk": item["pk"], "sk": item["sk"]})
    again = make_run(created_at="2026-12-02T00:00:00.000+00:00")
    world.b.create_run(again)
    assert world.same(world.a, run.key).steps == []


def test_the_cache_keeps_at_most_its_bytes(aws: Aws) -> None:
    cache = HistoryCache(max_bytes=6_000)
    store = DynamoDBRunStore(TABLE, boto3.client("dynamodb"), history=cache)
    for n in range(5):
        run = make_run(f"run_{n}")
        store.create_run(run)
        settle(store, run.key, record(run, 0, calls=20))  # ~2 KB of step each
        store.load_history(run.key)
    assert 0 < len(cache) < 5


@pytest.fixture
def items_read(world: Containers) -> Iterator[Counter[str]]:
    """Items DynamoDB returned to reads (Query, GetItem, BatchGetItem), by operation."""
    read: Counter[str] = Counter()

    def count(http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if "Items" in parsed:
            read[model.name] += len(parsed["Items"])
        elif "Item" in parsed:
            read[model.name] += 1
        elif "Responses" in parsed:
            read[model.name] += sum(len(items) for items in parsed["Responses"].values())

    events = world.reader.client.meta.events  # the client every store of the world shares
    events.register("after-call.dynamodb", count)
    yield read
    events.unregister("after-call.dynamodb", count)


def test_the_items_a_step_reads_do_not_grow_with_the_run(world: Containers, items_read: Counter[str]) -> None:
    run = make_run()
    world.a.create_run(run)
    key = run.key
    per_step: dict[int, int] = {}
    for n in range(60):
        items_read.clear()
        world.a.load_history(key)  # the step's read (a warm container: it took the step before)
        per_step[n] = sum(items_read.values())
        settle(world.a, key, record(run, n, calls=2))
        world.tools.save_tool_result(StepRef(key, n), result(n, 0))
        world.tools.save_tool_result(StepRef(key, n), result(n, 1))
    assert per_step[0] == 1  # a cold read: the run item, nothing else yet
    assert per_step[5] == per_step[55] == 3  # the run item and the previous step's two results
    items_read.clear()
    world.b.load_history(key)  # a container that never read the run reads it whole
    assert sum(items_read.values()) == 1 + 60 * 3


def test_the_daily_spend_is_read_again_after_a_few_seconds_and_at_once_to_explain_a_refusal(aws: Aws) -> None:
    clock = {"now": 0.0}
    client = boto3.client("dynamodb")
    step = StepRunStore(TABLE, client, spend_fresh_seconds=5, monotonic=lambda: clock["now"])
    other = DynamoDBRunStore(TABLE, client)  # another container
    day = NOW[:10]
    limits = BudgetLimits(tenant_daily_usd=Decimal("1"))

    def reserve(store: DynamoDBRunStore, run: Run, usd: str) -> Reservation:
        wanted = Reservation(step=0, amount_usd=Decimal(usd), day=day, model="claude-haiku-4-5")
        return ledger.reserve(store, run, wanted, limits, now=NOW)

    first, second, third = (make_run(f"run_{n}") for n in range(3))
    for run in (first, second, third):
        other.create_run(run)
    assert step.committed("acme", day) == (0, 0)
    reserve(other, first, "0.6")
    clock["now"] = 4.0
    assert step.committed("acme", day) == (0, 0)  # kept: at most 5 seconds old (routing and metrics read it)
    clock["now"] = 5.0
    assert step.committed("acme", day) == (Decimal("0.6"), Decimal("0.6"))
    reserve(other, second, "0.3")  # 0.9 committed; this container still has 0.6
    with pytest.raises(BudgetRefusedError, match=r"\$0\.9 spent or reserved"):
        reserve(step, third, "0.2")  # refused by the conditional write, explained with a fresh read
    assert step.committed("acme", day) == (Decimal("0.9"), Decimal("0.9"))
