"""The MCP adapter (functions/adapters/mcp_tools.py) against a real MCP server built with the official SDK, on
127.0.0.1: listing, calling, credentials, refused addresses, timeouts; and the listing cached per agent version."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from functions.adapters.mcp_tools import CachedMcpCatalog, McpAccess, McpClient, McpServerConfig, result_text
from functions.agent.agents import Agent
from functions.agent.errors import ToolServerError
from functions.tools.egress import Egress
from tests.fakes.mcp_server import TOKEN, InventoryServer


@pytest.fixture(scope="module")
def server() -> Iterator[InventoryServer]:
    with InventoryServer() as running:
        yield running


def client(
    server: InventoryServer, *, token: str = TOKEN, allow: str = "127.0.0.1", secret: str | None = "s"
) -> McpClient:
    access = McpAccess([McpServerConfig(url=server.url, secret=secret)], Egress.parse(allow), secret=lambda name: token)
    return McpClient(access)


def test_the_servers_tools_are_listed_with_their_schemas_and_hints(server: InventoryServer) -> None:
    tools = client(server).list_tools(server.url)
    assert [(t["name"], t["idempotent"]) for t in tools] == [("lookup_sku", True), ("reserve_stock", False)]
    assert tools[1]["input_schema"]["required"] == ["sku", "quantity"] and "title" not in tools[1]["input_schema"]


def test_a_call_returns_the_tools_text(server: InventoryServer) -> None:
    server.calls.clear()
    assert client(server).call(server.url, "lookup_sku", {"sku": "B-7"}, timeout=10) == ("B-7: 12 in stock", False)
    assert server.calls == [("lookup_sku", {"sku": "B-7"})]


def test_a_call_with_invalid_arguments_is_an_error_result_from_the_server(server: InventoryServer) -> None:
    text, is_error = client(server).call(server.url, "reserve_stock", {"sku": "B-7"}, timeout=10)
    assert is_error is True and "quantity" in text


def test_a_wrong_credential_is_refused_by_the_server(server: InventoryServer) -> None:
    refused = server.refused
    with pytest.raises(ToolServerError) as failed:
        client(server, token="wrong").list_tools(server.url)
    assert server.refused > refused
    assert "wrong" not in str(failed.value)


def test_a_server_at_an_address_the_deployment_does_not_allow_is_not_contacted(server: InventoryServer) -> None:
    before = len(server.methods)
    with pytest.raises(ToolServerError, match=r"address 127\.0\.0\.1 is private"):
        client(server, allow="").list_tools(server.url)
    assert len(server.methods) == before


def test_a_server_the_deployment_does_not_configure_is_refused(server: InventoryServer) -> None:
    with pytest.raises(ToolServerError, match="is not allowed by this deployment"):
        client(server).call("http://127.0.0.1:1/other", "x", {}, timeout=1)


def test_an_unreachable_server_is_a_tool_server_error_before_anything_was_sent() -> None:
    access = McpAccess([McpServerConfig(url="http://127.0.0.1:9/mcp")], Egress.parse("127.0.0.1"), secret=str)
    with pytest.raises(ToolServerError) as unreachable:
        McpClient(access).call("http://127.0.0.1:9/mcp", "x", {}, timeout=5)
    assert unreachable.value.before_sending  # so a call with side effects is "failed", not "outcome unknown"


def test_a_slow_call_times_out(server: InventoryServer) -> None:
    started = time.monotonic()
    with pytest.raises(ToolServerError, match="no answer within") as slow:
        client(server).call(server.url, "lookup_sku", {"sku": "A"}, timeout=0.001)
    assert slow.value.timed_out and time.monotonic() - started < 5


def test_a_credential_that_cannot_be_read_is_named_without_its_value(server: InventoryServer) -> None:
    def unreadable(name: str) -> str:
        raise KeyError(f"{name}: no such secret")

    access = McpAccess([McpServerConfig(url=server.url, secret="stepwise/mcp/x")], Egress.parse("127.0.0.1"),
                       secret=unreadable)  # fmt: skip
    with pytest.raises(ToolServerError, match=r"the credential of MCP server http://127\.0\.0\.1:\d+ cannot be read"):
        McpClient(access).list_tools(server.url)


class Cache:
    def __init__(self) -> None:
        self.items: dict[tuple[str, int, str], list[dict[str, Any]]] = {}

    def get_mcp_listing(self, agent: Agent, server: str) -> list[dict[str, Any]] | None:
        return self.items.get((agent.id, agent.version, server))

    def put_mcp_listing(self, agent: Agent, server: str, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.items.setdefault((agent.id, agent.version, server), tools)


def test_the_catalog_lists_a_server_once_per_agent_version(server: InventoryServer) -> None:
    catalog = CachedMcpCatalog(Cache(), client(server))
    agent = Agent(id="agent_1", tenant="t", name="a", model="m", version=1, created_at="", updated_at="")
    before = server.methods.count("tools/list")

    first = catalog.tools(agent, "inv", server.url)
    again = catalog.tools(agent, "inv", server.url)
    catalog.tools(agent.model_copy(update={"version": 2}), "inv", server.url)

    assert first == again and server.methods.count("tools/list") == before + 2  # versions 1 and 2, once each


def test_non_text_content_is_named_for_the_model() -> None:
    from mcp_types import CallToolResult, ImageContent, TextContent

    result = CallToolResult(content=[TextContent(type="text", text="chart:"),
                                     ImageContent(type="image", data="AAAA", mime_type="image/png")])  # fmt: skip
    assert result_text(result) == "chart:\n[image image/png not shown]"


@pytest.mark.parametrize(
    ("url", "served"),
    [
        ("https://mcp.example.com/mcp", True),
        ("https://mcp.example.com/mcp/", True),
        ("https://mcp.example.com/mcp/tenant-a", True),
        ("https://mcp.example.com/mcpx", False),  # a path that only starts with the allowed one
        ("https://mcp.example.com/other", False),
        ("http://mcp.example.com/mcp", False),  # another scheme
        ("https://mcp.example.com:8443/mcp", False),  # another port
        ("https://mcp.example.com.evil.net/mcp", False),
        ("https://user:pw@mcp.example.com/mcp", False),
        ("https://mcp.example.com/mcp/../admin", False),  # an HTTP client resolves dot segments
        ("https://mcp.example.com/mcp/%2e%2e/admin", False),
        ("https://mcp.example.com/mcp/..%2fadmin", False),
        ("https://mcp.example.com/mcp/..;/admin", False),  # servlet containers resolve it to /admin
        ("https://mcp.example.com/mcp/v1;session=1", True),
        ("https://mcp.example.com:99999/mcp", False),  # a port out of range: not served, not a crash
    ],
)
def test_a_configured_server_serves_its_own_origin_and_path_only(url: str, served: bool) -> None:
    assert McpServerConfig(url="https://mcp.example.com/mcp").serves(url) is served


def test_the_longest_configured_path_gives_the_credential() -> None:
    access = McpAccess(
        [McpServerConfig(url="https://mcp.example.com/mcp", secret="outer"),
         McpServerConfig(url="https://mcp.example.com/mcp/team", secret="team")],
        Egress(resolver=lambda host, port: ["93.184.216.34"]), secret=lambda name: f"token-{name}",
    )  # fmt: skip
    assert access.headers("https://mcp.example.com/mcp/team/x") == {"Authorization": "Bearer token-team"}
    assert access.headers("https://mcp.example.com/mcp/other") == {"Authorization": "Bearer token-outer"}


@pytest.mark.parametrize("secret", ['{\n "token": "sk-live-SECRET123"\n}', "tok\r\nX-Evil: 1", "tökén", ""])
def test_a_credential_that_is_no_header_value_is_refused_without_showing_it(
    server: InventoryServer, secret: str
) -> None:
    config = McpServerConfig(url=server.url, secret="stepwise/mcp/x")
    mcp = McpClient(McpAccess([config], Egress.parse("127.0.0.1"), secret=lambda name: secret))
    with pytest.raises(ToolServerError) as refused:
        mcp.list_tools(server.url)
    assert "is not a valid Authorization header value" in str(refused.value) and refused.value.before_sending
    assert all(part not in str(refused.value) for part in secret.split() if len(part) > 3)


def test_an_error_text_that_quotes_the_credential_is_scrubbed() -> None:
    from functions.adapters.mcp_tools import _scrub

    assert _scrub("Illegal header value b'Bearer abc123secret'", ["Bearer abc123secret"]) == (
        "Illegal header value b'[credential]'"
    )
