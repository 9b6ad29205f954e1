"""http_fetch: GET a page or an API response from a domain the deployment allows.

Configured by the deployment (CDK context): ``http_fetch_allowed_domains`` (exact hosts, or ``*.example.com`` for
its subdomains; none: the tool refuses every URL) and ``egress_allow_addresses`` (private addresses it may reach,
none by default). Every hop of a redirect is checked the same way; at most ``MAX_BYTES`` are read, within the
tool's timeout."""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urljoin

from pydantic import BaseModel, Field

from functions.agent.errors import ToolServerError
from functions.tools import ToolInputError, tool
from functions.tools.egress import Egress

DOMAINS_VARIABLE = "STEPWISE_HTTP_FETCH_DOMAINS"
ADDRESSES_VARIABLE = "STEPWISE_EGRESS_ALLOW_ADDRESSES"
MAX_BYTES = 2_000_000
MAX_REDIRECTS = 5
TIMEOUT_SECONDS = 15.0
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "application/javascript")


class HttpFetchInput(BaseModel):
    url: str = Field(min_length=1, max_length=2048, description="http(s) URL on a domain this deployment allows")


def allowed_domains() -> list[str]:
    return [domain.strip() for domain in os.environ.get(DOMAINS_VARIABLE, "").split(",") if domain.strip()]


@tool(idempotent=True, timeout_seconds=TIMEOUT_SECONDS + 5)
def http_fetch(arguments: HttpFetchInput) -> str:
    """Fetch a URL with GET (only domains this deployment allows) and return its status, content type and text."""
    domains = allowed_domains()
    if not domains:
        raise ToolInputError("no domains are allowed in this deployment (CDK context http_fetch_allowed_domains)")
    import httpx2 as httpx  # the HTTP client the anthropic and mcp SDKs ship; imported on first use (cold starts)

    egress = Egress.parse(os.environ.get(ADDRESSES_VARIABLE))
    deadline = time.monotonic() + TIMEOUT_SECONDS
    url = arguments.url
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                egress.check_url(url, domains)
            except ToolServerError as exc:
                raise ToolInputError(str(exc)) from exc
            remaining = max(deadline - time.monotonic(), 0.1)
            try:
                with client.stream(
                    "GET", url, timeout=remaining, headers={"User-Agent": "stepwise-http-fetch"}
                ) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    return _describe(response, deadline)
            except httpx.TimeoutException as exc:
                raise ToolInputError(f"{url[:200]} did not answer within {TIMEOUT_SECONDS:g} s") from exc
            except httpx.HTTPError as exc:
                raise ToolInputError(f"{url[:200]}: {type(exc).__name__}: {exc}") from exc
    raise ToolInputError(f"more than {MAX_REDIRECTS} redirects")


def _describe(response: Any, deadline: float) -> str:
    body = bytearray()
    cut = False
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_BYTES:
            del body[MAX_BYTES:]
            cut = True
            break
        if time.monotonic() > deadline:
            raise ToolInputError(f"reading the body took longer than {TIMEOUT_SECONDS:g} s")
    kind = response.headers.get("content-type", "")
    head = f"HTTP {response.status_code} {kind}".rstrip()
    if kind and not kind.lower().startswith(TEXT_TYPES):
        return f"{head}\n\n[{len(body):,} bytes of {kind}: not text, not shown]"
    text = bytes(body).decode(response.encoding or "utf-8", errors="replace")
    return f"{head}\n\n{text}" + (f"\n[cut at {MAX_BYTES:,} bytes]" if cut else "")
