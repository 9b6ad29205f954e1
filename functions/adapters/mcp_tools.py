"""MCP servers over streamable HTTP, with the official ``mcp`` SDK: listing a server's tools and calling one.

Only servers the deployment configures (``STEPWISE_MCP_SERVERS``) are reached, at addresses the egress rules allow
(functions/tools/egress.py). A server's credential is read from Secrets Manager by name or ARN and sent as a header;
it is never stored, put in an event, or logged (the SDK's HTTP client logs request lines, which carry no headers).

The ``mcp`` package is imported on first use: functions that never reach an MCP server never pay for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from functions.agent.errors import RequestRejectedError, ToolServerError
from functions.tools.egress import Egress

LIST_TIMEOUT_SECONDS = 10.0
MAX_LISTED_TOOLS = 128
MAX_LISTING_BYTES = 300_000
MAX_ERROR_CHARS = 500
logging.getLogger("httpx2").setLevel(logging.WARNING)  # no per-request lines in the functions' logs


class McpServerConfig(BaseModel):
    """One server the deployment allows: an agent's ``mcp_servers[].url`` must start with ``url``."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    url: str = Field(min_length=1)
    secret: str | None = None  # Secrets Manager name or ARN of the credential (the whole secret string)
    header: str = "Authorization"
    prefix: str = "Bearer "  # put before the secret in the header ("" for a raw API key header)

    def serves(self, url: str) -> bool:
        """Same scheme, host and port, and the same path or one below it ("/mcp" serves "/mcp/x", not "/mcpx");
        a URL with credentials, dot segments or encoded dots or slashes in its path is never served."""
        try:
            mine, theirs = urlsplit(self.url), urlsplit(url)
            if (mine.scheme, mine.hostname, mine.port) != (theirs.scheme, theirs.hostname, theirs.port):
                return False
        except ValueError:  # a port out of range, a malformed address
            return False
        if theirs.username or theirs.password or not _plain_path(theirs.path):
            return False
        base = mine.path.rstrip("/")
        return theirs.path.rstrip("/") == base or theirs.path.startswith(base + "/")

    @property
    def depth(self) -> int:
        return len(urlsplit(self.url).path.rstrip("/"))


def _plain_path(path: str) -> bool:
    """No "." or ".." segment and no percent-encoded "." or "/" (an HTTP client would resolve them elsewhere)."""
    lowered = path.lower()
    if "%2e" in lowered or "%2f" in lowered or "%5c" in lowered or "\\" in path:
        return False
    # "..;" too: servlet containers read a segment's parameters off before resolving it
    return not any(segment.split(";", 1)[0] in (".", "..") for segment in path.split("/"))


SERVERS: TypeAdapter[list[McpServerConfig]] = TypeAdapter(list[McpServerConfig], config=ConfigDict(defer_build=True))


def parse_servers(text: str | None) -> list[McpServerConfig]:
    return SERVERS.validate_json(text) if text else []


class McpAccess:
    """Which servers may be reached and with what credential."""

    def __init__(self, servers: list[McpServerConfig], egress: Egress, secret: Callable[[str], str]) -> None:
        self.servers, self.egress, self.secret = servers, egress, secret

    def config_for(self, url: str) -> McpServerConfig | None:
        """The configured server that serves ``url`` (the longest path, when several do)."""
        serving = [server for server in self.servers if server.serves(url)]
        return max(serving, key=lambda server: server.depth) if serving else None

    def headers(self, url: str) -> dict[str, str]:
        """The credential header for ``url``, after its host and addresses are checked. Raises ToolServerError
        (``before_sending``) naming the problem, never the credential."""
        config = self.config_for(url)
        if config is None:
            raise ToolServerError(f"MCP server {_origin(url)} is not allowed by this deployment", before_sending=True)
        host = urlsplit(url).hostname or ""
        try:
            self.egress.check_url(url, [host])
        except ToolServerError as exc:
            raise ToolServerError(str(exc), before_sending=True) from None
        if config.secret is None:
            return {}
        try:
            value = self.secret(config.secret).strip()
        except Exception as exc:  # the credential's message may name the secret, never its value
            problem = f"the credential of MCP server {_origin(url)} cannot be read ({type(exc).__name__})"
            raise ToolServerError(problem, before_sending=True) from None
        header = f"{config.prefix}{value}"
        if not value or not all(32 <= ord(c) < 127 for c in header):  # a header is one line of printable ASCII
            problem = (f"the credential of MCP server {_origin(url)} is not a valid {config.header} header value "
                       "(empty, or it holds line breaks or non-ASCII characters)")  # fmt: skip
            raise ToolServerError(problem, before_sending=True)
        return {config.header: header}


class McpClient:
    """The McpCaller port and the listing the McpCatalog caches."""

    def __init__(self, access: McpAccess) -> None:
        self.access = access

    def call(self, url: str, name: str, arguments: dict[str, Any], *, timeout: float) -> tuple[str, bool]:
        async def call(client: Any) -> tuple[str, bool]:
            sent["call"] = True  # from here on the server may have run it
            result = await client.call_tool(name, arguments)
            return result_text(result), bool(result.is_error)

        sent: dict[str, bool] = {}
        text, is_error = self._run(url, call, timeout, sent=sent)
        return str(text), bool(is_error)

    def list_tools(self, url: str) -> list[dict[str, Any]]:
        async def listing(client: Any) -> list[dict[str, Any]]:
            tools: list[Any] = []
            cursor: str | None = None
            while len(tools) <= MAX_LISTED_TOOLS:
                page = await client.list_tools(cursor=cursor)
                tools += page.tools
                cursor = page.next_cursor
                if not cursor:
                    break
            if len(tools) > MAX_LISTED_TOOLS:
                raise ToolServerError(f"lists more than {MAX_LISTED_TOOLS} tools")
            return [tool_entry(tool) for tool in tools]

        return list(self._run(url, listing, LIST_TIMEOUT_SECONDS))

    def _run(self, url: str, work: Callable[[Any], Any], timeout: float, sent: dict[str, bool] | None = None) -> Any:
        """``sent``: set by ``work`` once its request may have reached the server (errors before say so)."""
        headers = self.access.headers(url)
        secrets = [value for value in headers.values() if value]
        sent = sent if sent is not None else {"call": True}
        try:
            # the HTTP client's own timeouts are longer: the call's deadline is this one, reported as a timeout
            return asyncio.run(asyncio.wait_for(_session(url, headers, work, timeout + 5), timeout))
        except ToolServerError as exc:
            raise ToolServerError(_scrub(str(exc), secrets), timed_out=exc.timed_out,
                                  before_sending=exc.before_sending or not sent) from None  # fmt: skip
        except TimeoutError as exc:
            raise ToolServerError(f"no answer within {timeout:g} s", timed_out=True, before_sending=not sent) from exc
        except BaseException as exc:  # the SDK's task groups raise ExceptionGroups: name the first cause
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise ToolServerError(_describe(exc, secrets), before_sending=not sent) from None


async def _session(url: str, headers: dict[str, str], work: Callable[[Any], Any], timeout: float) -> Any:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    http = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(timeout))
    async with http, Client(streamable_http_client(url, http_client=http), cache=None) as client:
        return await work(client)


def _describe(exc: BaseException, secrets: list[str]) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        return f"the server refused Stepwise's credentials (HTTP {status})"
    if isinstance(exc, ToolServerError):
        return _scrub(str(exc), secrets)
    return f"{type(exc).__name__}: {_scrub(str(exc), secrets)[:MAX_ERROR_CHARS]}"  # scrubbed before it is cut


def _scrub(text: str, secrets: list[str]) -> str:
    """An error message never carries the credential (an HTTP library may quote a header it refused)."""
    for secret in secrets:
        for part in sorted({secret, *secret.split()}, key=len, reverse=True):
            if len(part) >= 4:
                text = text.replace(part, "[credential]")
    return text


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def tool_entry(tool: Any) -> dict[str, Any]:
    annotations = getattr(tool, "annotations", None)
    read_only = bool(getattr(annotations, "read_only_hint", None) or getattr(annotations, "readOnlyHint", None))
    idempotent = bool(getattr(annotations, "idempotent_hint", None) or getattr(annotations, "idempotentHint", None))
    schema = getattr(tool, "input_schema", None) or getattr(tool, "inputSchema", None) or {"type": "object"}
    schema = {k: v for k, v in dict(schema).items() if k != "title"}
    return {
        "name": tool.name,
        "description": tool.description or "",
        "input_schema": schema,
        "idempotent": read_only or idempotent,
    }


def result_text(result: Any) -> str:
    """A CallToolResult as text for the model: its text blocks; other blocks named; else its structured content."""
    parts: list[str] = []
    for block in result.content or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {getattr(block, 'mime_type', None) or getattr(block, 'mimeType', '')} not shown]")
        elif kind == "resource_link":
            parts.append(f"[resource {getattr(block, 'uri', '')}]")
        elif kind == "resource":
            resource = block.resource
            parts.append(getattr(resource, "text", None) or f"[resource {getattr(resource, 'uri', '')}]")
    if not parts and getattr(result, "structured_content", None) is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    return "\n".join(parts)


class CachedMcpCatalog:
    """The McpCatalog port: each agent version's listing of each server, listed once and kept in the table."""

    def __init__(self, cache: Any, client: McpClient) -> None:
        self.cache, self.client = cache, client  # cache: DynamoDBSessionStore (get/put_mcp_listing)

    def tools(self, agent: Any, server: str, url: str) -> list[dict[str, Any]]:
        cached: list[dict[str, Any]] | None = self.cache.get_mcp_listing(agent, server)
        if cached is not None:
            return cached
        listed = self.client.list_tools(url)
        size = len(json.dumps(listed, ensure_ascii=False).encode())
        if size > MAX_LISTING_BYTES:  # the table keeps it (an item is at most 400 KB); listing again will not help
            raise RequestRejectedError(
                f"MCP server {server!r} lists {size:,} bytes of tools (JSON); at most {MAX_LISTING_BYTES:,}"
            )
        return self.cache.put_mcp_listing(agent, server, listed)  # type: ignore[no-any-return]
