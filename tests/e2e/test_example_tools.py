"""The README's "Tools in your deployment" examples, on the local stack as `stepwise local --context ...` builds it:
the example MCP server (examples/inventory_mcp.py) and Lambda tool (examples/refund_order.py), their agents
created from examples/*.yaml and chatted with through the CLI (offline: the labelled stub model answers)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from functions.adapters import wiring
from stepwise import cli
from stepwise.local.stack import LocalStack
from stepwise.local.template import synthesize
from tests.e2e.test_examples import EXAMPLES, load

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def inventory() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(load("inventory_mcp").build("demo-token"), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True


@pytest.fixture(scope="module")
def stack(inventory: str) -> Iterator[LocalStack]:
    context = {"mcp_servers": [{"url": inventory, "secret": "stepwise/mcp/inventory"}],
               "lambda_tools": [{"function": "refund-order"}]}  # fmt: skip
    with LocalStack(port=0, template=synthesize(context=context),
                    lambda_tools={"refund-order": "examples.refund_order.handler"}) as local:  # fmt: skip
        local.put_secret("stepwise/mcp/inventory", "demo-token")
        yield local


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    wiring.reset()


def create(stack: LocalStack, path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["--endpoint", stack.url, "agents", "create", "-f", str(path), "--json"]) == 0
    # (the in-process stack's functions print their EMF metrics to this same stdout, a line each)
    printed = "\n".join(line for line in capsys.readouterr().out.splitlines() if not line.startswith('{"_aws"'))
    return str(json.loads(printed)["id"])


def test_the_inventory_example_lists_and_calls_the_example_mcp_server(
    stack: LocalStack, inventory: str, offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    definition = (EXAMPLES / "inventory_agent.yaml").read_text().replace("http://127.0.0.1:8799/mcp", inventory)
    (tmp_path / "agent.yaml").write_text(definition)
    agent_id = create(stack, tmp_path / "agent.yaml", capsys)

    assert cli.main(["--endpoint", stack.url, "chat", agent_id, "-m", "lookup_sku"]) == 0

    printed = capsys.readouterr().out
    assert "mcp inventory (allow) lookup_sku" in printed
    assert "lookup_sku: unknown SKU (known: A-1, B-7)" in printed  # the stub passes its message as the sku
    assert "idle: end_turn" in printed


def test_the_refund_example_asks_then_invokes_the_lambda_tool_once(
    stack: LocalStack, offline: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refunds: list[dict[str, Any]] = __import__("examples.refund_order", fromlist=["REFUNDS"]).REFUNDS
    refunds.clear()
    agent_id = create(stack, EXAMPLES / "refund_agent.yaml", capsys)
    asked: list[str] = []
    monkeypatch.setattr(cli.console, "input", lambda prompt: asked.append(prompt) or "allow")

    assert cli.main(["--endpoint", stack.url, "chat", agent_id, "-m", "refund_order A-1001"]) == 0

    printed = capsys.readouterr().out
    assert len(asked) == 1 and asked[0].startswith("allow refund_order(")
    assert refunds == [{"order_id": "refund_order A-1001"}]  # invoked once, with the model's input
    assert '"refund_id": "RF-0001"' in printed and "idle: end_turn" in printed
