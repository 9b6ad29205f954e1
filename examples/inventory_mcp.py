"""An MCP server for the README's MCP example, built with the official ``mcp`` SDK: ``lookup_sku`` (read-only)
and ``reserve_stock`` (changes the stock), over streamable HTTP on 127.0.0.1, behind a bearer token.

    .venv/bin/python examples/inventory_mcp.py            # http://127.0.0.1:8799/mcp, token "demo-token"
    INVENTORY_PORT=9000 INVENTORY_TOKEN=s3cret .venv/bin/python examples/inventory_mcp.py
"""

from __future__ import annotations

import os
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

STOCK = {"A-1": 12, "B-7": 3}


def build(token: str) -> Any:
    """The ASGI app: the MCP server behind a check of ``Authorization: Bearer <token>``."""
    server = MCPServer("inventory")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def lookup_sku(sku: str) -> str:
        """How many units of a SKU (e.g. A-1) are in stock."""
        return f"{sku}: {STOCK[sku]} in stock" if sku in STOCK else f"{sku}: unknown SKU (known: {', '.join(STOCK)})"

    @server.tool()
    def reserve_stock(sku: str, quantity: int) -> str:
        """Reserve units of a SKU for an order. Changes the stock."""
        if STOCK.get(sku, 0) < quantity:
            return f"cannot reserve {quantity} of {sku}: {STOCK.get(sku, 0)} in stock"
        STOCK[sku] -= quantity
        return f"reserved {quantity} of {sku}; {STOCK[sku]} left"

    app = server.streamable_http_app(stateless_http=True, json_response=True)

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or [])
        if scope["type"] == "http" and headers.get(b"authorization", b"").decode() != f"Bearer {token}":
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await app(scope, receive, send)

    return guarded


if __name__ == "__main__":
    port = int(os.environ.get("INVENTORY_PORT", "8799"))
    print(f"inventory MCP server on http://127.0.0.1:{port}/mcp")
    uvicorn.run(
        build(os.environ.get("INVENTORY_TOKEN", "demo-token")), host="127.0.0.1", port=port, log_level="warning"
    )
