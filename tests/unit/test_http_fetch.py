"""The deployer's example tool, tools/http_fetch.py, tested like a built-in: through the registry, against pages
served on 127.0.0.1 (which the tests allow, as the local stack does)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from functions.agent.models import ToolCall, ToolError, ToolOutcome
from functions.tools import ToolRegistry
from functions.tools.registry import deployer_tools
from tools import http_fetch

PAGES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/hello": (200, {"content-type": "text/plain; charset=utf-8"}, "héllo".encode()),
    "/json": (200, {"content-type": "application/json"}, b'{"ok": true}'),
    "/image": (200, {"content-type": "image/png"}, b"\x89PNG" + b"\0" * 100),
    "/big": (200, {"content-type": "text/plain"}, b"a" * 5000),
    "/hop": (302, {"location": "/hello"}, b""),
    "/away": (302, {"location": "http://169.254.169.254/latest/meta-data/"}, b""),
    "/loop": (302, {"location": "/loop"}, b""),
    "/missing": (404, {"content-type": "text/plain"}, b"no such page"),
}


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = PAGES[self.path]
            self.send_response(status)
            for name, value in {**headers, "content-length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(http_fetch.DOMAINS_VARIABLE, "127.0.0.1")
    monkeypatch.setenv(http_fetch.ADDRESSES_VARIABLE, "127.0.0.1")


def fetch(url: str) -> ToolOutcome:
    registry = ToolRegistry(deployer_tools())  # discovered from the tools/ package, as the functions do
    return registry.execute(ToolCall(id="t1", name="http_fetch", input={"url": url}), ["http_fetch"])


@pytest.mark.usefixtures("allowed")
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/hello", "HTTP 200 text/plain; charset=utf-8\n\nhéllo"),
        ("/json", 'HTTP 200 application/json\n\n{"ok": true}'),
        ("/image", "HTTP 200 image/png\n\n[104 bytes of image/png: not text, not shown]"),
        ("/hop", "HTTP 200 text/plain; charset=utf-8\n\nhéllo"),  # a redirect on an allowed host is followed
        ("/missing", "HTTP 404 text/plain\n\nno such page"),  # the model sees the status
    ],
)
def test_pages_of_an_allowed_host_are_fetched(site: str, path: str, expected: str) -> None:
    outcome = fetch(site + path)
    assert (outcome.is_error, outcome.content) == (False, expected)


@pytest.mark.usefixtures("allowed")
def test_a_body_beyond_the_limit_is_cut_and_says_so(site: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_fetch, "MAX_BYTES", 1000)
    outcome = fetch(site + "/big")
    assert outcome.content == "HTTP 200 text/plain\n\n" + "a" * 1000 + "\n[cut at 1,000 bytes]"


@pytest.mark.usefixtures("allowed")
@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/away", "http_fetch failed: host '169.254.169.254' is not allowed by this deployment"),
        ("/loop", "http_fetch failed: more than 5 redirects"),
    ],
)
def test_redirects_are_checked_hop_by_hop(site: str, path: str, problem: str) -> None:
    outcome = fetch(site + path)
    assert (outcome.is_error, outcome.error_kind, outcome.content) == (True, ToolError.REJECTED, problem)


def test_nothing_is_fetched_when_no_domain_is_allowed(site: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(http_fetch.DOMAINS_VARIABLE, raising=False)
    outcome = fetch(site + "/hello")
    assert outcome.content == (
        "http_fetch failed: no domains are allowed in this deployment (CDK context http_fetch_allowed_domains)"
    )


def test_an_allowed_host_at_a_private_address_is_refused_unless_that_address_is_allowed(
    site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(http_fetch.DOMAINS_VARIABLE, "127.0.0.1")
    monkeypatch.delenv(http_fetch.ADDRESSES_VARIABLE, raising=False)
    outcome = fetch(site + "/hello")
    assert outcome.is_error and "address 127.0.0.1 is private, loopback" in outcome.content


def test_http_fetch_is_in_the_deployments_toolset_and_idempotent() -> None:
    (tool,) = [t for t in deployer_tools() if t.name == "http_fetch"]
    assert tool.idempotent and tool.timeout_seconds == http_fetch.TIMEOUT_SECONDS + 5
    assert tool.schema()["input_schema"]["required"] == ["url"]
