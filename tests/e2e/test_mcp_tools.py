"""An agent with an MCP toolset, on the local stack, against a real MCP server built with the official ``mcp`` SDK
on 127.0.0.1, driven by the official ``anthropic`` SDK. The server's bearer token lives only in (moto's) Secrets
Manager: it must never appear in a stored item, an event or a log line."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import boto3
import pytest

from functions.adapters import wiring
from stepwise.local.stack import RESULTS_BUCKET, TABLE_NAME, LocalStack
from tests.e2e.test_managed_agents import answer, idle, tool_use
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.mcp_server import TOKEN, InventoryServer

pytestmark = pytest.mark.e2e
SECRET = "stepwise/mcp/inventory-e2e"  # (the examples' test uses stepwise/mcp/inventory)


@pytest.fixture(scope="module")
def mcp() -> Iterator[InventoryServer]:
    with InventoryServer() as server:
        yield server


@pytest.fixture(scope="module")
def stack(template: dict[str, Any], mcp: InventoryServer) -> Iterator[LocalStack]:
    """The deployment allows this one MCP server (as CDK context mcp_servers would), its token in a secret."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEPWISE_MCP_SERVERS", json.dumps([{"url": mcp.url, "secret": SECRET}]))
        with LocalStack(port=0, template=template) as local:
            boto3.client("secretsmanager").create_secret(Name=SECRET, SecretString=TOKEN)
            yield local


@pytest.fixture
def client(stack: LocalStack) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-local", base_url=stack.url, max_retries=0)


def inventory_agent(client: anthropic.Anthropic, mcp: InventoryServer) -> Any:
    return client.beta.agents.create(
        name="stock keeper",
        model="claude-haiku-4-5",
        tools=[
            {
                "type": "mcp_toolset",
                "mcp_server_name": "inventory",
                "configs": [{"name": "reserve_stock", "permission_policy": {"type": "always_ask"}}],
            }
        ],
        mcp_servers=[{"type": "url", "name": "inventory", "url": mcp.url}],
    )


def test_an_agent_calls_two_mcp_tools_one_after_a_confirmation_and_the_token_is_never_kept(
    stack: LocalStack, fake_api: FakeAnthropic, client: anthropic.Anthropic, mcp: InventoryServer,
    function_logs: io.StringIO,
) -> None:  # fmt: skip
    fake_api.script = [
        tool_use(("toolu_look", "lookup_sku", {"sku": "A-1"})),
        tool_use(("toolu_res", "reserve_stock", {"sku": "A-1", "quantity": 2})),
        answer("Reserved 2 of A-1 (R-1)."),
    ]
    mcp.calls.clear()
    agent = inventory_agent(client, mcp)
    session = client.beta.sessions.create(agent=agent.id, environment_id="env_local")
    listed = mcp.methods.count("tools/list")  # (the SDK also relists after a call, to check results)

    # When the model looks a SKU up (always_allow) and then reserves stock (always_ask)
    client.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "Reserve 2 of A-1"}]}]
    )
    stop, events = idle(client, session.id, None)

    # Then the lookup ran on the server, and the reservation waits for a person
    assert stop.stop_reason.type == "requires_action"
    uses = [e for e in events if e.type == "agent.mcp_tool_use"]
    assert [(u.name, u.mcp_server_name, u.evaluated_permission) for u in uses] == [
        ("lookup_sku", "inventory", "allow"), ("reserve_stock", "inventory", "ask"),
    ]  # fmt: skip
    results = [e for e in events if e.type == "agent.mcp_tool_result"]
    assert [(r.mcp_tool_use_id, r.content[0].text, r.is_error) for r in results] == [
        (uses[0].id, "A-1: 12 in stock", False)
    ]
    assert stop.stop_reason.event_ids == [uses[1].id]
    assert mcp.calls == [("lookup_sku", {"sku": "A-1"})]
    # the model was offered the server's tools, with the schemas the server lists
    offered = {tool["name"]: tool for tool in fake_api.requests[0]["tools"]}
    assert sorted(offered) == ["lookup_sku", "reserve_stock"]
    assert offered["reserve_stock"]["input_schema"]["required"] == ["sku", "quantity"]

    # When the person allows it
    client.beta.sessions.events.send(
        session.id, events=[{"type": "user.tool_confirmation", "tool_use_id": uses[1].id, "result": "allow"}]
    )
    stop, more = idle(client, session.id, stop.id)

    # Then it runs once, the model sees its result, and the turn ends
    assert stop.stop_reason.type == "end_turn"
    assert mcp.calls == [("lookup_sku", {"sku": "A-1"}), ("reserve_stock", {"sku": "A-1", "quantity": 2})]
    result = next(e for e in more if e.type == "agent.mcp_tool_result")
    assert result.mcp_tool_use_id == uses[1].id and result.content[0].text == "reserved 2 of A-1; reservation R-1"
    sent = [{k: v for k, v in block.items() if k != "cache_control"}
            for block in fake_api.requests[-1]["messages"][-1]["content"]]  # fmt: skip
    assert sent == [{"type": "tool_result", "tool_use_id": "toolu_res",
                     "content": "reserved 2 of A-1; reservation R-1", "is_error": False}]  # fmt: skip
    assert mcp.refused == 0

    # And the listing was made once for the agent version: a second session reads it from the cache
    before = mcp.methods.count("tools/list")
    client.beta.sessions.create(agent=agent.id, environment_id="env_local")
    assert mcp.methods.count("tools/list") == before
    assert listed >= 1  # the first session's creation listed the server

    # And the token is in no stored item, no event, no object and no log line
    items = boto3.client("dynamodb").scan(TableName=TABLE_NAME)["Items"]
    assert items and TOKEN not in json.dumps(items)
    page = client.beta.sessions.events.list(session.id, limit=100)
    assert TOKEN not in json.dumps([e.model_dump(mode="json") for e in page.data])
    objects = boto3.client("s3").list_objects_v2(Bucket=RESULTS_BUCKET).get("Contents", [])
    assert all(TOKEN not in boto3.client("s3").get_object(Bucket=RESULTS_BUCKET, Key=o["Key"])["Body"].read().decode()
               for o in objects)  # fmt: skip
    logs = function_logs.getvalue()
    assert '"message":"tool done"' in logs and "reserve_stock" in logs  # the functions' logs were captured
    assert TOKEN not in logs


def test_an_mcp_server_the_deployment_does_not_allow_is_refused_when_the_agent_is_created(
    client: anthropic.Anthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.beta.agents.create(
            name="elsewhere",
            model="claude-haiku-4-5",
            tools=[{"type": "mcp_toolset", "mcp_server_name": "other"}],
            mcp_servers=[{"type": "url", "name": "other", "url": "https://mcp.example.net/mcp"}],
        )
    assert "mcp_servers.0.url: this deployment does not allow MCP server" in str(refused.value)


def test_a_config_naming_a_tool_the_server_does_not_list_fails_the_session_creation(
    client: anthropic.Anthropic, mcp: InventoryServer
) -> None:
    agent = client.beta.agents.create(
        name="typo",
        model="claude-haiku-4-5",
        tools=[
            {"type": "mcp_toolset", "mcp_server_name": "inventory", "configs": [{"name": "reserve", "enabled": False}]}
        ],
        mcp_servers=[{"type": "url", "name": "inventory", "url": mcp.url}],
    )
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.beta.sessions.create(agent=agent.id, environment_id="env_local")
    assert "MCP server 'inventory' lists no tool 'reserve' (it lists lookup_sku, reserve_stock)" in str(refused.value)
    wiring.reset()
