"""X-Ray subsegments around the ports a step and a tool call go out through: ``model_call`` (one model call) and
``tool_call`` (one call of a deployment's Python tool or of an MCP server's tool), so a trace shows where a step's
time went. wiring.py wraps the ports it gives the core when the handler passes its tracer: the core
(functions/agent) never imports a tracer, and nothing is wrapped where tracing is off.

A subsegment records what the call was, never what was said: the provider, the model, the tool and how the call
ended are annotations; no prompt, answer, tool input, result or error text is recorded. A failure is its kind
(``error``) and the subsegment's fault, error or throttle flag; its message stays out (it may quote a provider, a
URL or a credential), as it does in the handlers' own subsegments (``capture_error=False``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from functions.agent.errors import FatalModelError, RetryableModelError, ToolServerError
from functions.agent.models import ModelRequest, ModelResponse, ToolCall, ToolOutcome
from functions.agent.ports import McpCaller, ModelClient, Toolbox

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

MODEL_CALL, TOOL_CALL = "model_call", "tool_call"
# the subsegments' annotations (README, Operations: Tracing)
SUBSEGMENT_ANNOTATIONS: dict[str, str] = {
    "provider": "model_call: the provider that answered (the Anthropic+Bedrock router reads by-model on a failure)",
    "model": "model_call: the model requested",
    "stop_reason": "model_call: why the model stopped (end_turn, tool_use, max_tokens, ...)",
    "tool": "tool_call: a registered tool's name or an agent's MCP tool's (another name is the model's text: left out)",
    "tool_kind": "tool_call: python (the deployment's tools) or mcp",
    "is_error": "tool_call: the result is an error the model sees",
    "error_kind": "tool_call: why (invalid_input, crashed, timed_out, ...)",
    "error": "either: the call raised: a retryable kind (throttled, overloaded, ...), fatal, server_error, timed_out "
    "or unexpected",
}


class _Call:
    """The subsegment of one call being recorded (None: the recorder had no segment to add it to)."""

    def __init__(self, subsegment: Any) -> None:
        self._subsegment = subsegment

    def annotate(self, **annotations: str | int | bool | None) -> None:
        for key, value in annotations.items():
            if value is not None and self._subsegment is not None:
                self._subsegment.put_annotation(key, value)

    def failed(self, exc: Exception) -> None:
        """Its kind and flag (fault: the far side or a bug; error: refused as asked; throttle), never its text."""
        if self._subsegment is None:
            return
        if isinstance(exc, RetryableModelError):
            error, flag = exc.kind, "throttle" if exc.kind == "throttled" else "fault"
        elif isinstance(exc, FatalModelError):
            error, flag = "fatal", "error"
        elif isinstance(exc, ToolServerError):
            error, flag = "timed_out" if exc.timed_out else "server_error", "fault"
        else:
            error, flag = "unexpected", "fault"
        self.annotate(error=error)
        getattr(self._subsegment, f"add_{flag}_flag")()


@contextmanager
def _recorded(tracer: Tracer, name: str, **annotations: str | int | bool | None) -> Iterator[_Call]:
    """A subsegment around the block; an exception leaving it is recorded by ``_Call.failed`` only."""
    manager = tracer.provider.in_subsegment(name=name)
    call = _Call(manager.__enter__())
    call.annotate(**annotations)
    try:
        yield call
    except Exception as exc:
        call.failed(exc)
        raise
    finally:
        manager.__exit__(None, None, None)  # as if nothing was raised: X-Ray would record the message and stack


class TracedModel:
    """A ModelClient whose every call is a ``model_call`` subsegment."""

    def __init__(self, inner: ModelClient, tracer: Tracer) -> None:
        self.inner, self.tracer = inner, tracer
        self.provider = inner.provider

    def create(self, request: ModelRequest) -> ModelResponse:
        with _recorded(self.tracer, MODEL_CALL, provider=self.inner.provider, model=request.model) as call:
            response = self.inner.create(request)
            call.annotate(provider=response.provider, stop_reason=response.stop_reason)
            return response


class TracedToolbox:
    """A Toolbox whose every ``execute`` is a ``tool_call`` subsegment (everything else is passed through)."""

    def __init__(self, inner: Toolbox, tracer: Tracer) -> None:
        self.inner, self.tracer = inner, tracer

    @property
    def names(self) -> list[str]:
        return self.inner.names

    def check(self, names: Iterable[str]) -> list[str]:
        return self.inner.check(names)

    def schemas(self, names: Iterable[str]) -> list[dict[str, Any]]:
        return self.inner.schemas(names)

    def idempotent(self, name: str) -> bool:
        return self.inner.idempotent(name)

    def in_step_seconds(self, name: str) -> float | None:
        return self.inner.in_step_seconds(name)

    def execute(self, call: ToolCall, allowed: Iterable[str]) -> ToolOutcome:
        tool = call.name if call.name in self.inner.names else None
        with _recorded(self.tracer, TOOL_CALL, tool=tool, tool_kind="python") as recorded:
            outcome = self.inner.execute(call, allowed)
            recorded.annotate(is_error=outcome.is_error, error_kind=outcome.error_kind)
            return outcome


class TracedMcp:
    """An McpCaller whose every call is a ``tool_call`` subsegment. ``name`` is an agent's MCP tool (the core calls
    only the tools an agent version lists), never the model's free text."""

    def __init__(self, inner: McpCaller, tracer: Tracer) -> None:
        self.inner, self.tracer = inner, tracer

    def call(self, url: str, name: str, arguments: dict[str, Any], *, timeout: float) -> tuple[str, bool]:
        with _recorded(self.tracer, TOOL_CALL, tool=name, tool_kind="mcp") as recorded:
            text, is_error = self.inner.call(url, name, arguments, timeout=timeout)
            recorded.annotate(is_error=is_error)
            return text, is_error


def traced_model(model: ModelClient, tracer: Tracer | None) -> ModelClient:
    """The model client, its calls traced when ``tracer`` is on."""
    return TracedModel(model, tracer) if tracer is not None and not tracer.disabled else model


def traced_tools(toolbox: Toolbox, mcp: McpCaller | None, tracer: Tracer | None) -> tuple[Toolbox, McpCaller | None]:
    """The toolbox and the MCP caller, their calls traced when ``tracer`` is on."""
    if tracer is None or tracer.disabled:
        return toolbox, mcp
    return TracedToolbox(toolbox, tracer), TracedMcp(mcp, tracer) if mcp is not None else None
