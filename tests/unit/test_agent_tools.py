"""An agent's server-side tools (functions/agent/agents.py): Lambda tools the deployment allows, MCP servers it
allows, and what a session's engine config holds once the servers are listed."""

from __future__ import annotations

from typing import Any

import pytest

from functions.agent.agents import Agent, Agents, LambdaFunction, engine_config
from functions.agent.errors import RequestRejectedError
from tests.fakes.clock import FixedClock
from tests.unit.test_agents import BUILTINS, MemoryAgents, refuse_unpriced

MCP_URL = "https://mcp.example.com/mcp"
INVENTORY = [
    {"name": "lookup_sku", "description": "Look up", "input_schema": {"type": "object"}, "idempotent": True},
    {"name": "reserve_stock", "description": "Reserve", "input_schema": {"type": "object"}, "idempotent": False},
]
REFUND = {
    "type": "stepwise_lambda_20261201",
    "name": "refund_order",
    "description": "Refund an order",
    "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    "function": "refund-order",
}


@pytest.fixture
def agents() -> Agents:
    ids = iter(f"agent_{n:026x}" for n in range(1, 100))
    return Agents(store=MemoryAgents(), clock=FixedClock(), new_id=lambda: next(ids), builtins=BUILTINS,
                  check_model=refuse_unpriced,
                  lambda_functions=[LambdaFunction(function="refund-order", idempotent=False, timeout_seconds=20)],
                  mcp_allowed=lambda url: url.startswith("https://mcp.example.com/"))  # fmt: skip


def create(agents: Agents, **fields: Any) -> Agent:
    return agents.create("acme", {"name": "helper", "model": "claude-haiku-4-5", **fields})


def mcp_agent(agents: Agents, **toolset: Any) -> Agent:
    return create(agents, tools=[{"type": "mcp_toolset", "mcp_server_name": "inv", **toolset}],
                  mcp_servers=[{"type": "url", "name": "inv", "url": MCP_URL}])  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"tools": [{**REFUND, "function": "delete-everything"}]},
         "tools.0.function: 'delete-everything' is not a Lambda tool this deployment allows (allowed: refund-order"),
        ({"tools": [{**REFUND, "permission_policy": {"type": "auto"}}]}, "tools.0.permission_policy: 'auto'"),
        ({"tools": [REFUND, {**REFUND}]}, "two tools have the same name"),
        ({"tools": [{"type": "mcp_toolset", "mcp_server_name": "x"}],
          "mcp_servers": [{"type": "url", "name": "x", "url": "https://elsewhere.example.net/mcp"}]},
         "mcp_servers.0.url: this deployment does not allow MCP server 'https://elsewhere.example.net/mcp'"),
        ({"tools": [{"type": "mcp_toolset", "mcp_server_name": "x",
                     "default_config": {"permission_policy": {"type": "auto"}}}],
          "mcp_servers": [{"type": "url", "name": "x", "url": MCP_URL}]},
         "tools.0.default_config.permission_policy: 'auto' is not offered"),
        ({"tools": [{"type": "mcp_toolset", "mcp_server_name": "x", "configs": [{"name": "a", "colour": 1}]}],
          "mcp_servers": [{"type": "url", "name": "x", "url": MCP_URL}]}, "colour: Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_server_side_tools_the_deployment_does_not_allow_are_refused(
    agents: Agents, fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(RequestRejectedError) as refused:
        create(agents, **fields)
    assert problem in str(refused.value)
    assert agents.store.heads == {}  # type: ignore[attr-defined]


def test_a_lambda_tool_gets_the_deployments_function_settings(agents: Agents) -> None:
    agent = create(agents, tools=[{**REFUND, "permission_policy": {"type": "always_ask"}}])

    _, config = engine_config(agent, BUILTINS, functions=agents.lambda_functions)

    (tool,) = config.lambda_tools
    assert (tool.name, tool.function, tool.idempotent, tool.timeout_seconds) == (
        "refund_order",
        "refund-order",
        False,
        20,
    )
    assert config.ask == ["refund_order"] and config.needs_client("refund_order")
    assert config.definitions() == [{"name": "refund_order", "description": "Refund an order",
                                     "input_schema": REFUND["input_schema"]}]  # fmt: skip
    # a function the deployment no longer allows: the session is refused, naming it
    with pytest.raises(RequestRejectedError, match="'refund-order' is no longer a Lambda tool"):
        engine_config(agent, BUILTINS, functions={})


def test_an_mcp_toolset_offers_the_listed_tools_it_enables_with_their_policies(agents: Agents) -> None:
    agent = mcp_agent(agents, default_config={"enabled": True},
                      configs=[{"name": "reserve_stock", "permission_policy": {"type": "always_ask"}}])  # fmt: skip
    listed: list[tuple[str, str]] = []

    def listing(server: str, url: str) -> list[dict[str, Any]]:
        listed.append((server, url))
        return INVENTORY

    _, config = engine_config(agent, BUILTINS, mcp_tools=listing)

    assert listed == [("inv", MCP_URL)]
    assert [(t.name, t.server, t.idempotent) for t in config.mcp_tools] == [
        ("lookup_sku", "inv", True), ("reserve_stock", "inv", False),
    ]  # fmt: skip
    assert config.ask == ["reserve_stock"] and config.mcp_servers == {"inv": MCP_URL}


def test_an_mcp_toolset_can_enable_only_some_tools(agents: Agents) -> None:
    agent = mcp_agent(agents, default_config={"enabled": False}, configs=[{"name": "lookup_sku", "enabled": True}])

    _, config = engine_config(agent, BUILTINS, mcp_tools=lambda server, url: INVENTORY)

    assert [t.name for t in config.mcp_tools] == ["lookup_sku"] and config.ask == []


@pytest.mark.parametrize(
    ("listing", "problem"),
    [
        ([{**INVENTORY[0], "name": "calculator"}], "tool 'calculator' is named twice"),
        ([{**INVENTORY[0], "name": "repo.search"}], "lists a tool named 'repo.search', which the Messages API"),
        ([{**INVENTORY[0], "name": "search\n"}], "lists a tool named 'search\\\\n'"),
        ([{**INVENTORY[0], "input_schema": {"type": "object", "description": "x" * 100_001}}],
         "its MCP servers list"),
    ],
)  # fmt: skip
def test_an_mcp_listing_that_collides_or_is_too_large_is_refused(
    agents: Agents, listing: list[dict[str, Any]], problem: str
) -> None:
    agent = create(
        agents,
        tools=[{"type": "stepwise_toolset_20261201"}, {"type": "mcp_toolset", "mcp_server_name": "inv"}],
        mcp_servers=[{"type": "url", "name": "inv", "url": MCP_URL}],
    )
    with pytest.raises(RequestRejectedError, match=problem):
        engine_config(agent, BUILTINS, mcp_tools=lambda server, url: listing)


def test_a_deployment_without_mcp_servers_refuses_sessions_on_an_mcp_agent(agents: Agents) -> None:
    agent = mcp_agent(agents)
    with pytest.raises(RequestRejectedError, match="cannot reach MCP servers"):
        engine_config(agent, BUILTINS, mcp_tools=None)
