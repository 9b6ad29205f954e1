"""OFFLINE STUB MODEL: answers without any API call when no ANTHROPIC_API_KEY is set (local stack only).

It is not a language model. It recognises arithmetic and questions about the time, asks for the
``calculator`` / ``current_time`` tools like a real model would (and for any other tool whose name the message
contains, with the message as its first input property), then answers from their results, so the
whole workflow (steps, tool Map, persistence, accounting) can be exercised anywhere. Its token counts are
estimates (characters / 4), flagged by the provider name ``offline-stub`` on every step it serves.
"""

from __future__ import annotations

import json
import re
from typing import Any

from functions.agent.models import ModelRequest, ModelResponse, Usage

STUB_PROVIDER = "offline-stub"
STUB_LABEL = "[offline stub model]"
_ARITHMETIC = re.compile(r"(?:sqrt\s*)?[\d(][\d\s.+\-*/%()^]*(?:sqrt\s*\([\d\s.+\-*/%()]*\)[\d\s.+\-*/%()]*)*")
_ZONE = re.compile(r"\b([A-Z][a-z]+(?:/[A-Z][A-Za-z_]+)+)\b")
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")


def _estimate_tokens(value: Any) -> int:
    return max(1, len(json.dumps(value, default=str)) // 4)


def _text_of(content: Any) -> str:
    """A turn's text whether it is a string or a list of content blocks (as when cache breakpoints are placed)."""
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content if isinstance(block, dict))


def find_expressions(text: str) -> list[str]:
    found = []
    for match in _ARITHMETIC.finditer(_DATE.sub(" ", text)):
        expression = match.group(0).strip().rstrip(".").replace("^", "**")
        if re.search(r"\d\s*(\*\*|[+\-*/%])\s*[\d(s]", expression) or "sqrt" in expression:
            found.append(expression)
    return found


class OfflineStubModel:
    provider = STUB_PROVIDER

    def create(self, request: ModelRequest) -> ModelResponse:
        last = request.messages[-1]
        if isinstance(last["content"], list) and any(b.get("type") == "tool_result" for b in last["content"]):
            content: list[dict[str, Any]] = [{"type": "text", "text": self._answer(request.messages)}]
            stop_reason = "end_turn"
        else:
            content = self._tool_requests(_text_of(last["content"]), request.tools, len(request.messages))
            stop_reason = "tool_use" if content else "end_turn"
            if not content:
                content = [
                    {
                        "type": "text",
                        "text": f"{STUB_LABEL} No ANTHROPIC_API_KEY is set, so no model was called. This stub only "
                        "handles arithmetic (calculator), the time (current_time) and tools named in the message. "
                        "Set ANTHROPIC_API_KEY for real answers.",
                    }
                ]
        prompt = {"system": request.system, "messages": request.messages, "tools": request.tools}
        return ModelResponse(
            content=content,
            stop_reason=stop_reason,
            usage=Usage(input_tokens=_estimate_tokens(prompt), output_tokens=_estimate_tokens(content)),
            model=request.model,
            provider=self.provider,
        )

    @staticmethod
    def _tool_requests(text: str, schemas: list[dict[str, Any]], turn: int) -> list[dict[str, Any]]:
        tools = {tool["name"] for tool in schemas}
        calls: list[dict[str, Any]] = []
        if "calculator" in tools:
            calls += [{"name": "calculator", "input": {"expression": e}} for e in find_expressions(text)]
        if "current_time" in tools and re.search(r"\b(time|date|today|now)\b", text, re.IGNORECASE):
            zone = _ZONE.search(text)
            calls.append({"name": "current_time", "input": {"timezone": zone.group(1) if zone else "UTC"}})
        for tool in schemas:  # a session's custom tool, named in the text: its first property gets the text
            name = tool["name"]
            if name not in ("calculator", "current_time") and re.search(rf"\b{re.escape(name)}\b", text):
                field = next(iter(tool.get("input_schema", {}).get("properties") or {"query": None}))
                calls.append({"name": name, "input": {field: text[:2000]}})
        if not calls:
            return []
        intro = {"type": "text", "text": f"{STUB_LABEL} I will use {', '.join(c['name'] for c in calls)}."}
        return [intro] + [
            {"type": "tool_use", "id": f"toolu_stub_{turn:02d}_{i:02d}", "name": c["name"], "input": c["input"]}
            for i, c in enumerate(calls)
        ]

    @staticmethod
    def _answer(messages: list[dict[str, Any]]) -> str:
        calls = {
            block["id"]: block
            for block in messages[-2]["content"]
            if isinstance(block, dict) and block.get("type") == "tool_use"
        }
        lines = []
        for result in messages[-1]["content"]:
            call = calls.get(result["tool_use_id"], {})
            label = f"{call.get('name')}({json.dumps(call.get('input', {}))})"
            verdict = "failed: " if result.get("is_error") else "= "
            lines.append(f"{label} {verdict}{result['content']}")
        return f"{STUB_LABEL} From the tool results: " + "; ".join(lines) + "."
