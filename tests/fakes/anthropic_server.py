"""A scripted fake of the Anthropic Messages API: real HTTP on 127.0.0.1, for the real anthropic SDK.

Each POST /v1/messages takes the next scripted reply: ``(status, body)`` or a callable of the request body
returning one. Requests are recorded (headers and JSON body) so tests can assert what the SDK sent.

Opt-in prompt caching: ``FakeAnthropic(*script, cache=PromptCacheSimulator(min_tokens=1024))`` replaces the
input side of every scripted ``message`` reply's usage with what the real API reports for the request's
``cache_control`` breakpoints (see PromptCacheSimulator), and refuses requests the real API refuses for them
(more than 4 breakpoints, a "1h" breakpoint after a "5m" one) with a 400.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, Any]] | Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def message(
    content: list[dict[str, Any]], stop_reason: str, *, model: str = "claude-haiku-4-5", **usage: int
) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.get("input_tokens", 50),
            "output_tokens": usage.get("output_tokens", 10),
            "cache_creation_input_tokens": usage.get("cache_creation_input_tokens", 0),
            "cache_read_input_tokens": usage.get("cache_read_input_tokens", 0),
        },
    }


def error(status: int, kind: str, text: str) -> tuple[int, dict[str, Any]]:
    return status, {"type": "error", "error": {"type": kind, "message": text}}


TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
MAX_BREAKPOINTS = 4


def estimate_tokens(block: Any) -> int:
    """About 4 characters of canonical JSON per token (the block without its cache_control marker)."""
    return max(1, math.ceil(len(_canonical(_unmarked(block))) / 4))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _unmarked(block: Any) -> Any:
    """The block as it counts for the cache key and the token estimate: without cache_control markers."""
    if not isinstance(block, dict):
        return block
    clean = {key: value for key, value in block.items() if key != "cache_control"}
    if isinstance(clean.get("content"), list):  # the blocks of a tool_result
        clean["content"] = [_unmarked(inner) for inner in clean["content"]]
    return clean


def _markers_of(block: Any) -> list[str]:
    """TTLs of the markers on a block and the blocks nested in it ("5m" when a marker names none)."""
    if not isinstance(block, dict):
        return []
    nested = block.get("content")
    found = [ttl for inner in nested for ttl in _markers_of(inner)] if isinstance(nested, list) else []
    marker = block.get("cache_control")
    if marker is not None:
        found.append(str(marker.get("ttl", "5m")) if isinstance(marker, dict) else "5m")
    return found


@dataclass(frozen=True)
class PromptUnit:
    """One block of the prompt in API order, with the cache key of the prefix that ends with it."""

    key: str
    tokens: int
    ttl: str | None  # the TTL of its breakpoint, None if it is not one


@dataclass
class _CacheEntry:
    expires_at: float
    ttl: str


class PromptCacheSimulator:
    """Prompt caching the way the Messages API reports it in ``usage``, on estimated token counts.

    The prompt is walked in API order (tool definitions, system blocks, message content blocks); a block with
    ``cache_control`` is a breakpoint. Per request:

    - the longest breakpoint prefix written before and not expired is read (``cache_read_input_tokens``), and
      reading refreshes its TTL;
    - the tokens from there up to the last breakpoint are written (``cache_creation_input_tokens``, split by
      the TTL of the breakpoint that ends each segment into ``cache_creation.ephemeral_{5m,1h}_input_tokens``),
      and every breakpoint prefix in that range is remembered for its TTL;
    - a prefix shorter than ``min_tokens`` is never cached (no error: its tokens count as input, or fall into
      the segment of the next breakpoint);
    - everything else is ``input_tokens``. Without a breakpoint everything is ``input_tokens``.

    The cache key of a prefix is a hash chained over the model and the canonical JSON of each block without
    its marker, so a str system or str content and the equivalent one-text-block list share it. Unlike the
    real API there is no automatic look-back of ~20 blocks before a breakpoint: only marked prefixes hit.
    """

    def __init__(
        self,
        min_tokens: int = 1024,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_tokens_by_model: dict[str, int] | None = None,
    ) -> None:
        self.min_tokens = min_tokens
        # models whose minimum cacheable prefix differs from min_tokens (by model id prefix)
        self.min_tokens_by_model = min_tokens_by_model or {}
        self.clock = clock
        self.entries: dict[str, _CacheEntry] = {}
        self.usages: list[dict[str, Any]] = []  # the simulated usage of every reply, in order
        self._lock = threading.Lock()

    def units(self, body: dict[str, Any]) -> list[PromptUnit]:
        chain = hashlib.sha256(_canonical({"model": body.get("model")}).encode())
        units: list[PromptUnit] = []

        def add(where: dict[str, Any], block: Any) -> None:
            chain.update(_canonical({**where, "block": _unmarked(block)}).encode())
            ttls = _markers_of(block)
            units.append(PromptUnit(chain.copy().hexdigest(), estimate_tokens(block), ttls[-1] if ttls else None))

        for tool in body.get("tools") or []:
            add({"part": "tools"}, tool)
        system = body.get("system")
        for block in [{"type": "text", "text": system}] if isinstance(system, str) and system else system or []:
            add({"part": "system"}, block)
        for index, message in enumerate(body.get("messages") or []):
            content = message.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
            for block in blocks:
                add({"part": "messages", "message": index, "role": message.get("role")}, block)
        return units

    def validate(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """The 400 the real API gives for the request's breakpoints, or None if they are valid."""
        ttls = self._all_ttls(body)
        if len(ttls) > MAX_BREAKPOINTS:
            return error(
                400,
                "invalid_request_error",
                f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(ttls)}.",
            )
        unknown = sorted({ttl for ttl in ttls if ttl not in TTL_SECONDS})
        if unknown:
            return error(400, "invalid_request_error", f"cache_control.ttl: Input should be '5m' or '1h' ({unknown})")
        if "5m" in ttls and "1h" in ttls[ttls.index("5m") :]:
            return error(
                400,
                "invalid_request_error",
                "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block",
            )
        return None

    @staticmethod
    def _all_ttls(body: dict[str, Any]) -> list[str]:
        blocks: list[Any] = list(body.get("tools") or [])
        if isinstance(body.get("system"), list):
            blocks += body["system"]
        for message in body.get("messages") or []:
            if isinstance(message.get("content"), list):
                blocks += message["content"]
        return [ttl for block in blocks for ttl in _markers_of(block)]

    def usage(self, body: dict[str, Any]) -> dict[str, Any]:
        """The input side of ``usage`` for this request; updates the cache as the API would."""
        units = self.units(body)
        ends: list[int] = []  # cumulative tokens up to and including each unit
        for unit in units:
            ends.append((ends[-1] if ends else 0) + unit.tokens)
        total = ends[-1] if ends else 0
        breakpoints = [i for i, unit in enumerate(units) if unit.ttl is not None]
        model = str(body.get("model", ""))
        minimum = next(
            (n for prefix, n in self.min_tokens_by_model.items() if model.startswith(prefix)), self.min_tokens
        )
        with self._lock:
            now = self.clock()
            read_at = -1
            for i in reversed(breakpoints):
                entry = self.entries.get(units[i].key)
                if entry is not None and entry.expires_at > now:
                    read_at = i
                    entry.expires_at = now + TTL_SECONDS[entry.ttl]  # a hit refreshes the TTL
                    break
            read = ends[read_at] if read_at >= 0 else 0
            cached_to = read
            written = {"5m": 0, "1h": 0}
            for i in breakpoints:
                ttl = units[i].ttl or "5m"
                if i <= read_at or ends[i] < minimum:
                    continue
                written[ttl] += ends[i] - cached_to
                cached_to = ends[i]
                self.entries[units[i].key] = _CacheEntry(now + TTL_SECONDS[ttl], ttl)
            usage = {
                "input_tokens": total - cached_to,
                "cache_creation_input_tokens": cached_to - read,
                "cache_read_input_tokens": read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": written["5m"],
                    "ephemeral_1h_input_tokens": written["1h"],
                },
            }
            self.usages.append(usage)
        return usage

    def apply(self, body: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        """The scripted reply with its input-side usage replaced; content, stop reason and output kept."""
        usage = dict(reply.get("usage") or {})
        usage.update(self.usage(body))
        usage.setdefault("output_tokens", 0)
        return {**reply, "usage": usage}


CONTEXT_WINDOW = 200_000  # the Messages API refuses a longer prompt (400 "prompt is too long")


def prompt_tokens(body: dict[str, Any]) -> int:
    """The request's prompt as this fake counts it: system, tools and every message, ~4 characters a token."""
    system = body.get("system") or []
    parts = [*(system if isinstance(system, list) else [system]), *body.get("tools", [])]
    for message in body.get("messages", []):
        content = message.get("content")
        parts.extend(content if isinstance(content, list) else [content])
    return sum(estimate_tokens(part) for part in parts)


class FakeAnthropic:
    def __init__(
        self, *script: Reply, cache: PromptCacheSimulator | None = None, context_window: int = CONTEXT_WINDOW
    ) -> None:
        self.script: list[Reply] = list(script)
        self.cache = cache
        self.context_window = context_window
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                fake.requests.append(body)
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                headers: dict[str, str] = {}
                if self.path.rstrip("/") != "/v1/messages":
                    status, payload = error(404, "not_found_error", f"no route {self.path}")
                elif (tokens := prompt_tokens(body)) > fake.context_window:  # the script is not consumed
                    too_long = f"prompt is too long: {tokens} tokens > {fake.context_window} maximum"
                    status, payload = error(400, "invalid_request_error", too_long)
                elif fake.cache is not None and (refused := fake.cache.validate(body)) is not None:
                    status, payload = refused  # the script is not consumed, as the API would not answer
                elif not fake.script:
                    status, payload = error(500, "api_error", "the fake server's script is exhausted")
                else:
                    reply = fake.script.pop(0)
                    answer = reply(body) if callable(reply) else reply
                    status, payload = answer[0], answer[1]
                    headers = answer[2] if len(answer) > 2 else {}  # type: ignore[misc]  # (status, body, headers)
                    if fake.cache is not None and status == 200 and payload.get("type") == "message":
                        payload = fake.cache.apply(body, payload)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out first
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeAnthropic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
