"""Tracing: the model and tool subsegments (functions/adapters/tracing.py) and the handlers' annotations
(functions/handlers/observability.py), recorded in memory (tests/fakes/xray.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools import Tracer

from functions.adapters.tracing import SUBSEGMENT_ANNOTATIONS, TracedMcp, TracedModel, traced_model, traced_tools
from functions.agent.errors import FatalModelError, RetryableModelError, ToolServerError
from functions.agent.models import ModelRequest, ToolCall
from functions.agent.sessions import SESSION_PREFIX
from functions.handlers import observability as observability_module
from functions.handlers.observability import TRACE_ANNOTATIONS, TraceError, observability
from functions.tools import builtin_registry
from tests.fakes.model import ScriptedModel, text_response
from tests.fakes.xray import XRay, recording

REQUEST = ModelRequest(model="claude-haiku-4-5", messages=[{"role": "user", "content": "tell me about quinces"}],
                       max_tokens=100)  # fmt: skip


@pytest.fixture
def tracer() -> Tracer:
    return Tracer(service="stepwise-test", auto_patch=False)


@pytest.fixture
def xray(monkeypatch: pytest.MonkeyPatch, tracer: Tracer) -> Iterator[XRay]:
    with recording(monkeypatch, tracer) as recorded:
        yield recorded


def call(xray: XRay, fn: Any) -> Any:
    """``fn()`` in a traced invocation; what it raised is re-raised."""
    return xray.invoke(lambda event, context: fn(), {}, None)


class Mcp:
    def __init__(self, *answers: tuple[str, bool] | Exception) -> None:
        self.answers = list(answers)

    def call(self, url: str, name: str, arguments: dict[str, Any], *, timeout: float) -> tuple[str, bool]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_model_call_is_a_subsegment_naming_provider_model_and_stop_reason(xray: XRay, tracer: Tracer) -> None:
    model = TracedModel(ScriptedModel(text_response("quinces are pomes")), tracer)
    response = call(xray, lambda: model.create(REQUEST))
    assert response.content[0]["text"] == "quinces are pomes" and model.provider == "scripted"
    (subsegment,) = xray.last.named("model_call")
    assert subsegment["annotations"] == {"provider": "scripted", "model": "claude-haiku-4-5", "stop_reason": "end_turn"}
    assert "quince" not in xray.last.text()


@pytest.mark.parametrize(
    ("error", "kind", "flag"),
    [
        (RetryableModelError("429 rate_limit_error: sk-ant-api03-abcdef", kind="throttled"), "throttled", "throttle"),
        (RetryableModelError("529 overloaded_error: sk-ant-api03-abcdef", kind="overloaded"), "overloaded", "fault"),
        (FatalModelError("invalid_request_error", "messages.0: sk-ant-api03-abcdef"), "fatal", "error"),
        (KeyError("sk-ant-api03-abcdef"), "unexpected", "fault"),
    ],
)
def test_a_failed_model_call_records_its_kind_and_flag_never_its_message(
    xray: XRay, tracer: Tracer, error: Exception, kind: str, flag: str
) -> None:
    model = TracedModel(ScriptedModel(error), tracer)
    with pytest.raises(type(error)) as raised:
        call(xray, lambda: model.create(REQUEST))
    assert raised.value is error  # re-raised as it was
    (subsegment,) = xray.last.named("model_call")
    assert subsegment["annotations"]["error"] == kind and subsegment[flag] is True
    assert "cause" not in subsegment and "sk-ant" not in xray.last.text() and "quince" not in xray.last.text()


def test_a_python_tool_call_is_a_subsegment_with_its_registered_name_and_outcome(xray: XRay, tracer: Tracer) -> None:
    toolbox, mcp = traced_tools(builtin_registry(), None, tracer)
    assert mcp is None and toolbox.names == builtin_registry().names
    ok = call(xray, lambda: toolbox.execute(ToolCall(id="t1", name="calculator", input={"expression": "7 * 191"}),
                                            ["calculator"]))  # fmt: skip
    assert ok.content == "1337"
    assert xray.last.named("tool_call")[0]["annotations"] == {"tool": "calculator", "tool_kind": "python",
                                                              "is_error": False}  # fmt: skip
    bad = call(xray, lambda: toolbox.execute(ToolCall(id="t2", name="made_up_by_the_model", input={}), ["calculator"]))
    assert bad.is_error
    # a name the deployment does not register is the model's text: not annotated
    assert xray.last.named("tool_call")[0]["annotations"] == {"tool_kind": "python", "is_error": True,
                                                              "error_kind": "unavailable"}  # fmt: skip
    assert "1337" not in xray.traces[0].text() and "made_up" not in xray.last.text()


def test_an_mcp_tool_call_is_a_subsegment_with_its_name_outcome_and_failure_kind(xray: XRay, tracer: Tracer) -> None:
    refused = ToolServerError("https://mcp.example/token=hunter2 timed out", timed_out=True)
    mcp = TracedMcp(Mcp(("the stock is 12 quinces", True), refused), tracer)
    assert call(xray, lambda: mcp.call("https://mcp.example", "stock", {"sku": "Q-1"}, timeout=5)) == (
        "the stock is 12 quinces", True)  # fmt: skip
    assert xray.last.named("tool_call")[0]["annotations"] == {"tool": "stock", "tool_kind": "mcp", "is_error": True}
    with pytest.raises(ToolServerError):
        call(xray, lambda: mcp.call("https://mcp.example", "stock", {"sku": "Q-1"}, timeout=5))
    (failed,) = xray.last.named("tool_call")
    assert failed["annotations"]["error"] == "timed_out" and failed["fault"] is True
    text = "".join(trace.text() for trace in xray.traces)
    assert "hunter2" not in text and "quince" not in text and "Q-1" not in text and "mcp.example" not in text


def test_ports_are_not_wrapped_where_tracing_is_off() -> None:
    off = Tracer(service="stepwise-test", auto_patch=False)  # the tests' environment turns tracing off
    assert off.disabled
    model, registry, mcp = ScriptedModel(), builtin_registry(), Mcp()
    assert traced_model(model, off) is model and traced_model(model, None) is model
    assert traced_tools(registry, mcp, off) == (registry, mcp)


def test_every_subsegment_annotation_is_documented_and_a_valid_xray_key() -> None:
    for key in [*SUBSEGMENT_ANNOTATIONS, *TRACE_ANNOTATIONS]:
        assert key.replace("_", "").isalnum() and key.isascii(), key  # X-Ray drops other keys


def test_a_handler_annotates_its_run_and_a_session_with_its_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    obs = observability("step")  # before recording: a Tracer made while tracing is off switches the X-Ray SDK off
    session = SESSION_PREFIX + "1" * 26
    with recording(monkeypatch, obs.tracer) as xray:
        call(xray, lambda: obs.annotate_run("acme", "run_" + "0" * 26, turn=0, step=3))
        call(xray, lambda: obs.annotate_run("acme", session, turn=2))
    run, turn = (trace.documents[0]["annotations"] for trace in xray.traces)
    assert run == {"tenant": "acme", "run_id": "run_" + "0" * 26, "step": 3}
    assert turn == {"tenant": "acme", "run_id": session, "session_id": session, "turn": 2}
    assert observability_module.SESSION_PREFIX == SESSION_PREFIX  # the copy the handlers use without the import


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"input": "what is 2 + 2"}, "not in TRACE_ANNOTATIONS"),  # an unknown key: what a run says never is one
        ({"run_id": "x" * 257}, "1 to 256 printable characters"),
        ({"tenant": "acme\nforged"}, "printable"),
        ({"tenant": ""}, "printable"),
        ({"step": 1.5}, "a string or an int"),
        ({"step": True}, "a string or an int"),
    ],
)
def test_an_annotation_outside_the_list_or_unbounded_is_refused(annotations: dict[str, Any], message: str) -> None:
    with pytest.raises(TraceError, match=message):
        observability("step").annotate(**annotations)
