"""Claude on Amazon Bedrock through the Converse API: request and response mapping, errors, and a
cross-provider fallback. A real boto3 bedrock-runtime client with botocore's Stubber: no network."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from functions.adapters.bedrock_model import CACHE_POINT, BedrockModel, ProviderModels, to_converse
from functions.agent.breaker import Breaker
from functions.agent.caching import place_cache_breakpoints
from functions.agent.circuit import CircuitConfig
from functions.agent.errors import FatalModelError, RequestRejectedError, RetryableModelError
from functions.agent.models import ModelRequest, RunRequest, RunStatus, StepRef, Usage
from functions.agent.pricing import default_price_book
from functions.tools import builtin_registry
from tests.fakes import core
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.model import ScriptedModel
from tests.unit.test_circuit import MemoryCircuits

BEDROCK_HAIKU = "global.anthropic.claude-haiku-4-5-20251001-v1:0"
PRICES = default_price_book()
REQUEST = ModelRequest(
    model=BEDROCK_HAIKU,
    system="be brief",
    messages=[
        {"role": "user", "content": "What is 6*7?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "calculator", "input": {"expression": "6*7"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42", "is_error": False}]},
    ],
    tools=builtin_registry().schemas(["calculator"]),
    max_tokens=256,
)


def client() -> Any:
    return boto3.client("bedrock-runtime", region_name="us-east-1")


def answer(content: list[dict[str, Any]], stop: str, **usage: int) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0, **usage},
        "metrics": {"latencyMs": 120},
    }


def test_the_request_maps_to_converse_with_cache_points() -> None:
    kwargs = to_converse(place_cache_breakpoints(REQUEST, ttl="5m"))
    assert kwargs["modelId"] == BEDROCK_HAIKU and kwargs["inferenceConfig"] == {"maxTokens": 256}
    assert kwargs["system"] == [{"text": "be brief"}, CACHE_POINT]
    assert kwargs["toolConfig"]["tools"][0]["toolSpec"]["name"] == "calculator"
    assert kwargs["toolConfig"]["tools"][-1] == CACHE_POINT
    assert kwargs["messages"][1]["content"][0] == {
        "toolUse": {"toolUseId": "t1", "name": "calculator", "input": {"expression": "6*7"}}
    }
    result = kwargs["messages"][2]["content"]
    assert result[0] == {"toolResult": {"toolUseId": "t1", "content": [{"text": "42"}], "status": "success"}}
    assert result[-1] == CACHE_POINT  # the latest turn's breakpoint


def test_the_answer_maps_back_with_usage_including_cache_tokens() -> None:
    bedrock = client()
    with Stubber(bedrock) as stub:
        stub.add_response(
            "converse",
            answer(
                [{"text": "6 * 7 = 42"}],
                "end_turn",
                inputTokens=12,
                outputTokens=8,
                cacheReadInputTokens=900,
                cacheWriteInputTokens=40,
            ),
            {"modelId": BEDROCK_HAIKU, "messages": ANY, "system": ANY, "toolConfig": ANY, "inferenceConfig": ANY},
        )
        response = BedrockModel(bedrock).create(REQUEST)
    assert response.provider == "bedrock" and response.model == BEDROCK_HAIKU
    assert response.content == [{"type": "text", "text": "6 * 7 = 42"}] and response.stop_reason == "end_turn"
    assert response.usage == Usage(
        input_tokens=12, output_tokens=8, cache_read_input_tokens=900, cache_creation_input_tokens=40
    )


def test_tool_use_and_refusals_map_to_the_messages_api_shapes() -> None:
    bedrock = client()
    with Stubber(bedrock) as stub:
        stub.add_response(
            "converse",
            answer(
                [{"toolUse": {"toolUseId": "b1", "name": "calculator", "input": {"expression": "1+1"}}}], "tool_use"
            ),
        )
        stub.add_response("converse", answer([{"text": "no"}], "guardrail_intervened"))
        tools = BedrockModel(bedrock).create(REQUEST)
        refused = BedrockModel(bedrock).create(REQUEST)
    assert [c.name for c in tools.tool_calls()] == ["calculator"] and tools.stop_reason == "tool_use"
    assert refused.stop_reason == "refusal"


@pytest.mark.parametrize(
    ("code", "status", "raised", "model_code"),
    [
        ("ThrottlingException", 429, RetryableModelError, None),
        ("ServiceUnavailableException", 503, RetryableModelError, None),
        ("ModelTimeoutException", 408, RetryableModelError, None),
        ("InternalFailure", 500, RetryableModelError, None),  # any 5xx, whatever the code
        ("503", 503, RetryableModelError, None),  # a load balancer's body botocore cannot parse
        ("ModelErrorException", 424, RetryableModelError, None),
        ("ValidationException", 400, FatalModelError, "MODEL_400"),
        ("AccessDeniedException", 403, FatalModelError, "MODEL_403"),
    ],
)
def test_bedrock_errors_follow_the_taxonomy(
    code: str, status: int, raised: type[Exception], model_code: str | None
) -> None:
    bedrock = client()
    with Stubber(bedrock) as stub, pytest.raises(raised) as caught:
        stub.add_client_error("converse", service_error_code=code, service_message="nope", http_status_code=status)
        BedrockModel(bedrock).create(REQUEST)
    if model_code:
        assert caught.value.code == model_code  # type: ignore[attr-defined]


def test_a_run_falls_back_from_the_anthropic_api_to_bedrock_when_its_circuit_is_open() -> None:
    # Given the Anthropic API's circuit for claude-haiku-4-5 open, and a run whose fallback is Bedrock
    circuits = MemoryCircuits()
    breaker = Breaker(circuits, CircuitConfig(failure_threshold=1), now=lambda: 100.0)
    breaker.failed("anthropic:claude-haiku-4-5")
    store = InMemoryRunStore()
    request = RunRequest(input="Say hello.", model="claude-haiku-4-5", fallbacks=[BEDROCK_HAIKU])
    run = core.submitter(store, providers=frozenset({"anthropic", "bedrock"})).submit("t", request).run
    bedrock = client()
    anthropic_api = ScriptedModel()  # must not be called
    models = ProviderModels(
        lambda m: PRICES.price(m).provider, {"anthropic": anthropic_api, "bedrock": BedrockModel(bedrock)}
    )
    # When the step runs
    with Stubber(bedrock) as stub:
        stub.add_response("converse", answer([{"text": "hello"}], "end_turn", inputTokens=1000, outputTokens=10))
        outcome = core.runner(store, models, breaker=breaker).run(StepRef(run.key, 0))
    # Then Bedrock served it, at Bedrock's price, and the step says so
    record = store.load_history(run.key).steps[0]
    assert outcome.status is RunStatus.SUCCEEDED and anthropic_api.requests == []
    assert (record.provider, record.requested_model) == ("bedrock", BEDROCK_HAIKU)
    assert "circuit open for claude-haiku-4-5" in str(record.route_reason)
    assert record.cost_usd == Decimal(1000 * 1 + 10 * 5) / Decimal(1_000_000)  # global profile: list price


def test_a_bedrock_model_is_refused_where_the_deployment_does_not_call_bedrock() -> None:
    with pytest.raises(RequestRejectedError, match="deploy with -c bedrock_fallback=true"):
        anthropic_only = core.submitter(InMemoryRunStore(), providers=frozenset({"anthropic"}))
        anthropic_only.submit("t", RunRequest(input="x", model=BEDROCK_HAIKU))
