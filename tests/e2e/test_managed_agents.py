"""The Managed Agents API on the local stack, driven by the official ``anthropic`` SDK's ``client.beta`` client
(no hand-written HTTP), with a scripted fake Messages API standing in for the model."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import pytest

from functions.agent.models import Usage
from functions.agent.pricing import default_price_book
from stepwise.local.stack import LocalStack
from tests.fakes.anthropic_server import FakeAnthropic, message

pytestmark = pytest.mark.e2e

WEATHER = {
    "type": "custom",
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK_CALCULATOR = {
    "type": "stepwise_toolset_20261201",
    "default_config": {"enabled": False},
    "configs": [{"name": "calculator", "enabled": True, "permission_policy": {"type": "always_ask"}}],
}


@pytest.fixture
def client(stack: LocalStack) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-local", base_url=stack.url, max_retries=0)


def tool_use(*calls: tuple[str, str, dict[str, Any]], **usage: int) -> tuple[int, dict[str, Any]]:
    blocks = [{"type": "tool_use", "id": i, "name": n, "input": inp} for i, n, inp in calls]
    return 200, message(blocks, "tool_use", **usage)


def answer(text: str, **usage: int) -> tuple[int, dict[str, Any]]:
    return 200, message([{"type": "text", "text": text}], "end_turn", **usage)


def idle(client: anthropic.Anthropic, session_id: str, after: str | None) -> tuple[Any, list[Any]]:
    """Follow the session with the long-poll until it idles; the idle event and every event after ``after``."""
    seen: list[Any] = []
    for _ in range(60):
        query: dict[str, Any] = {"wait": 5}
        if after:
            query["page"] = after
        page = client.beta.sessions.events.list(session_id, extra_query=query)
        seen += page.data
        if page.data:
            after = page.data[-1].id
        stops = [event for event in seen if event.type == "session.status_idle"]
        if stops:
            return stops[-1], seen
    raise AssertionError(f"session {session_id} did not idle: {[e.type for e in seen]}")


def system_text(request: dict[str, Any]) -> str:
    system = request["system"]  # a string, or text blocks when prompt-cache breakpoints are placed
    return system if isinstance(system, str) else "".join(block["text"] for block in system)


def user_text(request: dict[str, Any]) -> list[str]:
    return [
        block.get("text", "")
        for m in request["messages"]
        if m["role"] == "user"
        for block in (m["content"] if isinstance(m["content"], list) else [{"text": m["content"]}])
        if block.get("type", "text") == "text"
    ]


def test_the_official_sdk_runs_an_agent_with_a_client_tool_and_an_approval_across_turns(
    stack: LocalStack, fake_api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake_api.script = [
        tool_use(("toolu_calc", "calculator", {"expression": "6*7"}), ("toolu_wx", "get_weather", {"city": "Paris"})),
        answer("6*7 is 42, and Paris is 18°C and sunny."),
        tool_use(("toolu_calc2", "calculator", {"expression": "2**10"})),
        answer("Understood, no calculator."),
        answer("Version 2 here."),
    ]
    # Given an agent with a client-executed tool and a built-in tool that needs a person's approval
    agent = client.beta.agents.create(
        name="helper", model="claude-haiku-4-5", system="Be brief.", tools=[WEATHER, ASK_CALCULATOR]
    )
    assert agent.id.startswith("agent_") and agent.version == 1
    # And a session on it, with a budget of 50 cents
    session = client.beta.sessions.create(
        agent=agent.id,
        environment_id="env_local",
        title="weather and maths",
        budget={"type": "limit", "max_list_cost": {"amount": "50", "currency": "USD"}},
    )
    assert session.id.startswith("sesn_") and session.status == "idle" and session.agent.version == 1

    # When a message asks for both tools
    sent = client.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "6*7? Weather in Paris?"}]}]
    )
    assert [e.type for e in sent.data] == ["user.message"]
    stop, events = idle(client, session.id, None)
    # Then the turn idles for its client: the calculator waits for approval, the weather for the client's result
    assert stop.stop_reason.type == "requires_action"
    uses = {e.name: e for e in events if e.type in ("agent.tool_use", "agent.custom_tool_use")}
    assert uses["calculator"].type == "agent.tool_use" and uses["calculator"].evaluated_permission == "ask"
    assert uses["get_weather"].type == "agent.custom_tool_use" and uses["get_weather"].input == {"city": "Paris"}
    assert sorted(stop.stop_reason.event_ids) == sorted([uses["calculator"].id, uses["get_weather"].id])
    assert [e.type for e in events][:3] == ["user.message", "session.status_running", "span.model_request_start"]
    end = next(e for e in events if e.type == "span.model_request_end")
    assert end.model_usage.input_tokens == 50 and end.model_usage.output_tokens == 10

    # And while it waits nothing computes: no Lambda invocation, no running execution
    invocations = dict(stack.lambdas.invocations)
    approved = client.beta.sessions.events.send(
        session.id, events=[{"type": "user.tool_confirmation", "tool_use_id": uses["calculator"].id, "result": "allow"}]
    )
    waiting = client.beta.sessions.retrieve(session.id)
    assert waiting.status == "idle"
    assert waiting.stop_reason == {"type": "requires_action", "event_ids": [uses["get_weather"].id]}  # type: ignore[attr-defined]
    running = stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn, statusFilter="RUNNING")
    assert running["executions"] == []
    # (the webhooks function fans out the turn's end once, as it idles: not compute while it waits)
    behind_the_api = set(invocations) - {stack.topology.api_function, stack.topology.webhooks_function}
    assert behind_the_api and all(stack.lambdas.invocations[name] == invocations[name] for name in behind_the_api)

    # When the client answers its tool
    client.beta.sessions.events.send(
        session.id,
        events=[
            {
                "type": "user.custom_tool_result",
                "custom_tool_use_id": uses["get_weather"].id,
                "content": [{"type": "text", "text": "18°C, sunny"}],
            }
        ],
    )
    stop, events = idle(client, session.id, approved.data[-1].id)
    # Then the approved calculator ran first, and the model saw both results
    assert stop.stop_reason.type == "end_turn"
    result = next(e for e in events if e.type == "agent.tool_result")
    assert result.tool_use_id == uses["calculator"].id and result.content[0].text == "42"
    results = {b["tool_use_id"]: b for b in fake_api.requests[1]["messages"][-1]["content"]}
    assert results["toolu_calc"]["content"] == "42" and results["toolu_wx"]["content"] == "18°C, sunny"
    assert next(e for e in events if e.type == "agent.message").content[0].text.startswith("6*7 is 42")

    # When a follow-up message is sent in the same session
    last = events[-1].id
    client.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "And 2**10?"}]}]
    )
    stop, events = idle(client, session.id, last)
    # Then the model received the whole earlier conversation, then the new message
    follow_up = fake_api.requests[2]
    roles = [m["role"] for m in follow_up["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert user_text(follow_up) == ["6*7? Weather in Paris?", "And 2**10?"]
    assert system_text(follow_up) == "Be brief."
    assert stop.stop_reason.type == "requires_action"

    # When the person denies the calculator, with a message
    (pending,) = stop.stop_reason.event_ids
    client.beta.sessions.events.send(
        session.id,
        events=[
            {"type": "user.tool_confirmation", "tool_use_id": pending, "result": "deny", "deny_message": "No maths."}
        ],
    )
    stop, events = idle(client, session.id, stop.id)
    # Then the model sees the denial as the call's error result, and no calculator ran
    denied = {k: v for k, v in fake_api.requests[3]["messages"][-1]["content"][0].items() if k != "cache_control"}
    assert denied == {"type": "tool_result", "tool_use_id": "toolu_calc2", "content": "No maths.", "is_error": True}
    assert stop.stop_reason.type == "end_turn"
    assert not [e for e in events if e.type == "agent.tool_result"]

    # And the session reports its usage and Stepwise's exact cost, summed over its four model calls
    done = client.beta.sessions.retrieve(session.id)
    prices = default_price_book()
    assert done.usage.input_tokens == 200 and done.usage.output_tokens == 40
    expected = prices.cost("claude-haiku-4-5", Usage(input_tokens=200, output_tokens=40))
    assert Decimal(done.usage.cost_usd) == expected  # type: ignore[attr-defined]

    # When the agent is updated, a new session pins version 2 and the old one keeps version 1
    updated = client.beta.agents.update(agent.id, version=1, system="Be very brief.")
    assert updated.version == 2
    with pytest.raises(anthropic.ConflictError):
        client.beta.agents.update(agent.id, version=1, system="stale")
    fresh = client.beta.sessions.create(agent=agent.id, environment_id="env_local")
    assert fresh.agent.version == 2 and fresh.agent.system == "Be very brief."
    assert client.beta.sessions.retrieve(session.id).agent.version == 1
    assert [v.version for v in client.beta.agents.versions.list(agent.id)] == [2, 1]
    assert client.beta.agents.retrieve(agent.id, version=1).system == "Be brief."
    pinned = client.beta.sessions.create(agent={"type": "agent", "id": agent.id, "version": 1}, environment_id="e")
    assert pinned.agent.version == 1
    assert session.id in [s.id for s in client.beta.sessions.list(agent_id=agent.id)]


def test_a_session_that_reaches_its_budget_idles_with_budget_reached_and_never_spends_past_it(
    stack: LocalStack, fake_api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    # Given a model that keeps asking for the calculator, each call costing $0.0045
    fake_api.script = [
        tool_use((f"toolu_{n}", "calculator", {"expression": "1+1"}), input_tokens=2000, output_tokens=500)
        for n in range(30)
    ]
    agent = client.beta.agents.create(
        name="looper", model="claude-haiku-4-5", tools=[{"type": "stepwise_toolset_20261201"}]
    )
    session = client.beta.sessions.create(
        agent=agent.id,
        environment_id="e",
        budget={"type": "limit", "max_list_cost": {"amount": "5", "currency": "USD"}},
    )
    # When a message starts a turn
    client.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "count forever"}]}]
    )
    stop, events = idle(client, session.id, None)
    # Then the turn idles with budget_reached, and the session spent at most its 5 cents
    assert stop.stop_reason.type == "budget_reached"
    done = client.beta.sessions.retrieve(session.id)
    spent = Decimal(done.usage.cost_usd)  # type: ignore[attr-defined]
    calls = len([e for e in events if e.type == "span.model_request_end"])
    assert calls == len(fake_api.requests) >= 2
    assert spent == Decimal("0.0045") * calls and spent <= Decimal("0.05")
    # (each reservation is a call's worst case: the last one refused was the one that could have passed it)
    assert done.usage.list_cost.amount == str(round(spent * 100))


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"tools": [{"type": "agent_toolset_20260401"}]}, "agent_toolset_20260401"),
        (
            {
                "tools": [
                    {"type": "stepwise_toolset_20261201", "default_config": {"permission_policy": {"type": "auto"}}}
                ]
            },
            "permission_policy: 'auto'",
        ),
        ({"skills": [{"type": "anthropic", "skill_id": "xlsx"}]}, "skills"),
        ({"tools": [{"type": "web_search_20250305"}]}, "tools.0.type"),
        ({"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata"),
        ({"model": "claude-unknown-9"}, "claude-unknown-9"),
    ],
)
def test_unsupported_agent_fields_answer_400_naming_them_and_write_nothing(
    stack: LocalStack, client: anthropic.Anthropic, body: dict[str, Any], named: str
) -> None:
    before = len(client.beta.agents.list(limit=100).data)
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.beta.agents.create(**{"name": "x", "model": "claude-haiku-4-5", **body})
    assert named in str(raised.value)
    assert len(client.beta.agents.list(limit=100).data) == before


def test_unsupported_session_fields_answer_400_and_a_running_session_refuses_messages_with_409(
    stack: LocalStack, fake_api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    agent = client.beta.agents.create(name="x", model="claude-haiku-4-5")
    with pytest.raises(anthropic.BadRequestError, match="vault_ids"):
        client.beta.sessions.create(agent=agent.id, environment_id="e", vault_ids=["vlt_1"])
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.create(agent="agent_00000000000000000000000000", environment_id="e")
    session = client.beta.sessions.create(agent=agent.id, environment_id="e")
    with pytest.raises(anthropic.BadRequestError, match="no call waits"):
        client.beta.sessions.events.send(
            session.id, events=[{"type": "user.tool_confirmation", "tool_use_id": "sevt_x", "result": "allow"}]
        )
    with pytest.raises(anthropic.BadRequestError, match="only text blocks"):
        client.beta.sessions.events.send(
            session.id,
            events=[{"type": "user.message", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]}],
        )
    # A message while a turn runs is refused (409), not queued
    import threading

    release = threading.Event()

    def slow(_: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        release.wait(timeout=20)
        return answer("done")

    fake_api.script = [slow]
    client.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "hi"}]}]
    )
    try:
        with pytest.raises(anthropic.ConflictError, match="running"):
            client.beta.sessions.events.send(
                session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "again"}]}]
            )
    finally:
        release.set()
    stop, _ = idle(client, session.id, None)
    assert stop.stop_reason.type == "end_turn"


def test_an_interrupt_stops_the_turn_and_the_next_turn_answers_the_new_message_not_the_old_one(
    stack: LocalStack, fake_api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    import threading

    release = threading.Event()

    def slow(_: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        release.wait(timeout=20)
        return answer("a poem about the sea", input_tokens=100, output_tokens=50)

    fake_api.script = [slow, answer("a haiku", input_tokens=120, output_tokens=20)]
    agent = client.beta.agents.create(name="poet", model="claude-haiku-4-5")
    session = client.beta.sessions.create(agent=agent.id, environment_id="e")
    client.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "write a poem"}]}]
    )
    for _ in range(200):  # the model is answering
        if fake_api.requests:
            break
        threading.Event().wait(0.05)
    # When the user interrupts while the call is in flight
    interrupted = client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])
    assert [e.type for e in interrupted.data] == ["user.interrupt"]
    # (a retried interrupt gets the same answer, not a 409, and stores nothing twice)
    again = client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])
    assert [e.id for e in again.data] == [e.id for e in interrupted.data]
    # Then the session reports running until that call settles, and refuses a message meanwhile
    assert client.beta.sessions.retrieve(session.id).status == "running"
    with pytest.raises(anthropic.ConflictError, match="still being settled"):
        client.beta.sessions.events.send(
            session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "too soon"}]}]
        )
    release.set()
    stop, events = idle(client, session.id, None)
    # The interrupt comes before the turn's idle, and the billed call was recorded and charged
    types = [e.type for e in events]
    assert types.index("user.interrupt") < types.index("session.status_idle") and stop.stop_reason.type == "end_turn"
    assert types.count("span.model_request_end") == 1
    # When the next message is sent, the model answers it, with the whole conversation so far
    client.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "a haiku instead"}]}]
    )
    stop, events = idle(client, session.id, stop.id)
    assert stop.stop_reason.type == "end_turn" and len(fake_api.requests) == 2
    assert user_text(fake_api.requests[1])[-1] == "a haiku instead"
    assert next(e for e in events if e.type == "agent.message").content[0].text == "a haiku"
    done = client.beta.sessions.retrieve(session.id)
    assert done.usage.input_tokens == 220 and done.usage.output_tokens == 70


@pytest.mark.parametrize(
    ("events", "named"),
    [
        ([{"type": "user.message", "content": 5}], "events.0.user.message.content"),
        ([{"type": "user.tool_confirmation", "tool_use_id": "x", "result": "allow", "deny_message": "no"}],
         "deny_message goes with result 'deny' only"),
        ([{"type": "user.define_outcome", "description": "d"}], "'user.define_outcome' is not supported"),
        ([], "events: List should have at least 1 item"),
    ],
)  # fmt: skip
def test_malformed_events_answer_400_naming_the_problem(
    stack: LocalStack, client: anthropic.Anthropic, events: list[dict[str, Any]], named: str
) -> None:
    agent = client.beta.agents.create(name="x", model="claude-haiku-4-5")
    session = client.beta.sessions.create(agent=agent.id, environment_id="e")
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.beta.sessions.events.send(session.id, events=events)  # type: ignore[arg-type]
    assert named in str(refused.value)
    assert client.beta.sessions.events.list(session.id).data == []
    with pytest.raises(anthropic.BadRequestError, match="not a next_page"):
        client.beta.sessions.events.list(session.id, page="garbage")
