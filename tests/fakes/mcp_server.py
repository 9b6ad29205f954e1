"""A real MCP server, built with the official ``mcp`` SDK (``MCPServer``, mcp 2's FastMCP), on 127.0.0.1 over
streamable HTTP, behind a bearer-token check. It records the JSON-RPC methods and tool calls it served."""

from __future__ import annotations

import json
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

TOKEN = "mcp-secret-7f3a9c1d2e"  # a value a test can grep for


class InventoryServer:
    """Tools: ``lookup_sku`` (read-only) and ``reserve_stock`` (side effects)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.methods: list[str] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refused = 0
        server = MCPServer("inventory")

        @server.tool(annotations=ToolAnnotations(read_only_hint=True))
        def lookup_sku(sku: str) -> str:
            """Look up how many of a SKU are in stock."""
            self.calls.append(("lookup_sku", {"sku": sku}))
            return f"{sku}: 12 in stock"

        @server.tool()
        def reserve_stock(sku: str, quantity: int) -> str:
            """Reserve units of a SKU for an order (changes the stock)."""
            self.calls.append(("reserve_stock", {"sku": sku, "quantity": quantity}))
            return f"reserved {quantity} of {sku}; reservation R-1"

        self.app = server.streamable_http_app(stateless_http=True, json_response=True)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI app: refuse a wrong token, record the JSON-RPC method, then serve."""
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
            if headers.get("authorization") != f"Bearer {self.token}":
                self.refused += 1
                await send(
                    {"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"application/json")]}
                )
                await send({"type": "http.response.body", "body": b'{"error": "unauthorized"}'})
                return
            body = b""
            more = True
            messages = []
            while more:
                message = await receive()
                messages.append(message)
                body += message.get("body", b"")
                more = message.get("more_body", False)
            if body:
                try:
                    payload = json.loads(body)
                    for item in payload if isinstance(payload, list) else [payload]:
                        if isinstance(item, dict) and "method" in item:
                            self.methods.append(str(item["method"]))
                except ValueError:
                    pass
            replay = iter(messages)

            async def replayed() -> Any:
                return next(replay, {"type": "http.disconnect"})

            await self.app(scope, replayed, send)
            return
        await self.app(scope, receive, send)

    def __enter__(self) -> InventoryServer:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.server = uvicorn.Server(uvicorn.Config(self, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the MCP server did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
