"""AnthropicModel against a scripted fake Messages API on 127.0.0.1, through the real anthropic SDK."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from functions.adapters.anthropic_model import AnthropicModel
from functions.agent.errors import FatalModelError, RetryableModelError
from functions.agent.models import ModelRequest, ModelResponse
from functions.tools import builtin_registry
from tests.fakes.anthropic_server import FakeAnthropic, Reply, error, message

TOOLS = builtin_registry().schemas(["calculator", "current_time"])
REQUEST = ModelRequest(
    model="claude-haiku-4-5",
    system="You are a careful agent.",
    messages=[{"role": "user", "content": "What is 12*(3+4)?"}],
    tools=TOOLS,
    max_tokens=512,
)
TOOL_USE = [
    {"type": "text", "text": "Let me calculate."},
    {"type": "tool_use", "id": "toolu_01", "name": "calculator", "input": {"expression": "12*(3+4)"}},
]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    # One server for the module: shutting a FakeAnthropic down waits for its 0.5 s poll loop
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    server.script.clear()
    server.requests.clear()
    server.headers.clear()
    yield server
    server.script.clear()


def model_for(fake: FakeAnthropic) -> AnthropicModel:
    return AnthropicModel(anthropic.Anthropic(api_key="test-key", base_url=fake.base_url, max_retries=0))


def call(fake: FakeAnthropic, *script: Reply, request: ModelRequest = REQUEST) -> ModelResponse:
    fake.script.extend(script)
    return model_for(fake).create(request)


def fail(fake: FakeAnthropic, *script: Reply) -> pytest.ExceptionInfo[Exception]:
    fake.script.extend(script)
    with pytest.raises((RetryableModelError, FatalModelError)) as raised:
        model_for(fake).create(REQUEST)
    return raised


def api_key_sent(headers: dict[str, str]) -> str:
    """The SDK sends the key as x-api-key or as a bearer token, depending on its version."""
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")


def test_a_tool_use_reply_maps_to_a_response_with_tool_calls(fake: FakeAnthropic) -> None:
    # Given the API asks for the calculator
    response = call(fake, (200, message(TOOL_USE, "tool_use", input_tokens=120, output_tokens=40)))

    # Then the response carries the blocks, the stop reason and the tool calls
    assert response.stop_reason == "tool_use"
    assert response.provider == "anthropic"
    assert response.model == "claude-haiku-4-5"
    assert response.content == TOOL_USE
    assert response.text() == "Let me calculate."
    (tool_call,) = response.tool_calls()
    assert (tool_call.id, tool_call.name, tool_call.input) == ("toolu_01", "calculator", {"expression": "12*(3+4)"})
    assert (response.usage.input_tokens, response.usage.output_tokens) == (120, 40)
    assert len(fake.requests) == 1


def test_a_text_reply_maps_to_a_final_answer(fake: FakeAnthropic) -> None:
    response = call(fake, (200, message([{"type": "text", "text": "84"}], "end_turn", model="claude-sonnet-4-5")))

    assert response.stop_reason == "end_turn"
    assert response.text() == "84"
    assert response.tool_calls() == []
    assert response.model == "claude-sonnet-4-5"  # the model the API reports


def test_usage_with_cache_tokens_and_the_1h_split_is_mapped(fake: FakeAnthropic) -> None:
    # Given a reply that reports cache writes split by TTL and cache reads
    body = message(TOOL_USE, "tool_use", input_tokens=11, output_tokens=22,
                   cache_creation_input_tokens=3000, cache_read_input_tokens=5000)  # fmt: skip
    body["usage"]["cache_creation"] = {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 1000}

    response = call(fake, (200, body))

    usage = response.usage
    assert usage.input_tokens == 11
    assert usage.output_tokens == 22
    assert usage.cache_creation_input_tokens == 3000
    assert usage.cache_read_input_tokens == 5000
    assert usage.cache_creation_1h_input_tokens == 1000


def test_usage_without_cache_fields_is_zero(fake: FakeAnthropic) -> None:
    body = message(TOOL_USE, "tool_use")
    body["usage"] = {"input_tokens": 7, "output_tokens": 3}  # no cache fields at all

    response = call(fake, (200, body))

    assert response.usage.cache_creation_input_tokens == 0
    assert response.usage.cache_read_input_tokens == 0
    assert response.usage.cache_creation_1h_input_tokens == 0
    assert response.usage.total_tokens == 10


def test_the_request_contains_model_max_tokens_system_tools_and_messages(fake: FakeAnthropic) -> None:
    call(fake, (200, message(TOOL_USE, "tool_use")))

    (sent,) = fake.requests
    assert sent["model"] == "claude-haiku-4-5"
    assert sent["max_tokens"] == 512
    assert sent["system"] == "You are a careful agent."
    assert sent["messages"] == [{"role": "user", "content": "What is 12*(3+4)?"}]
    assert [t["name"] for t in sent["tools"]] == ["calculator", "current_time"]
    assert sent["tools"][0]["input_schema"]["required"] == ["expression"]
    assert api_key_sent(fake.headers[0]) == "test-key"
    assert "anthropic-version" in fake.headers[0]


def test_system_and_tools_are_omitted_when_empty(fake: FakeAnthropic) -> None:
    bare = ModelRequest(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}], max_tokens=16)

    call(fake, (200, message([{"type": "text", "text": "hello"}], "end_turn")), request=bare)

    (sent,) = fake.requests
    assert "system" not in sent
    assert "tools" not in sent
    assert sent["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "reply",
    [
        error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
        error(529, "overloaded_error", "Overloaded"),
        error(500, "api_error", "Internal server error"),
        error(503, "api_error", "Service unavailable"),
        error(408, "timeout_error", "Request timed out"),
    ],
)
def test_throttling_overload_and_server_errors_are_retryable(
    fake: FakeAnthropic, reply: tuple[int, dict[str, Any]]
) -> None:
    raised = fail(fake, reply)

    assert raised.type is RetryableModelError
    status, body = reply
    assert str(status) in str(raised.value)
    assert body["error"]["type"] in str(raised.value)
    assert len(fake.requests) == 1  # the adapter never retries by itself
    # And its kind is what the step function's ModelErrors metric counts: 429 and 529 are the throttles
    assert isinstance(raised.value, RetryableModelError)
    assert raised.value.kind == {429: "throttled", 529: "overloaded"}.get(status, "server_error")
    assert raised.value.throttled is (status in (429, 529))


def test_a_429_reporting_a_spend_limit_is_fatal(fake: FakeAnthropic) -> None:
    raised = fail(fake, error(429, "rate_limit_error", "Your workspace has reached its monthly Spend Limit."))

    assert raised.type is FatalModelError
    assert isinstance(raised.value, FatalModelError)
    assert raised.value.code == "SPEND_LIMIT"
    assert "spend limit" in raised.value.message.lower()


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (error(400, "invalid_request_error", "messages: field required"), "MODEL_400"),
        (error(401, "authentication_error", "invalid x-api-key"), "MODEL_401"),
        (error(403, "permission_error", "not allowed"), "MODEL_403"),
        (error(404, "not_found_error", "model: claude-nope"), "MODEL_404"),
    ],
)
def test_client_errors_are_fatal_with_a_status_code(
    fake: FakeAnthropic, reply: tuple[int, dict[str, Any]], code: str
) -> None:
    raised = fail(fake, reply)

    assert raised.type is FatalModelError
    assert isinstance(raised.value, FatalModelError)
    assert raised.value.code == code
    status, body = reply
    assert f"Anthropic API {status} " in raised.value.message
    assert body["error"]["type"] in raised.value.message
    assert body["error"]["message"] in raised.value.message
    assert len(fake.requests) == 1


def test_a_connection_failure_is_retryable() -> None:
    # Given a 127.0.0.1 port nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = AnthropicModel(anthropic.Anthropic(api_key="test-key", base_url=f"http://127.0.0.1:{port}", max_retries=0))

    with pytest.raises(RetryableModelError, match="connection to the Anthropic API failed"):
        model.create(REQUEST)


@pytest.mark.parametrize(
    "reply",
    [
        error(529, "overloaded_error", "Overloaded"),
        error(429, "rate_limit_error", "slow down"),
        error(500, "api_error", "boom"),
    ],
)
def test_create_client_switches_sdk_retries_off(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch, reply: tuple[int, Any]
) -> None:
    # Given a client built the production way, pointed at the fake through ANTHROPIC_BASE_URL,
    # and a script that would succeed on a second attempt
    fake.script.extend([reply, (200, message(TOOL_USE, "tool_use"))])
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    model = AnthropicModel.create_client(api_key="test-key", timeout_seconds=5)

    # When the API fails with a retryable error
    with pytest.raises(RetryableModelError):
        model.create(REQUEST)

    # Then exactly one HTTP request was made: Step Functions owns the retries
    assert len(fake.requests) == 1
    assert len(fake.script) == 1
    assert api_key_sent(fake.headers[0]) == "test-key"
    assert fake.headers[0]["x-stainless-retry-count"] == "0"
    assert model.client.max_retries == 0

    # And the next call is again exactly one request
    assert model.create(REQUEST).stop_reason == "tool_use"
    assert len(fake.requests) == 2


def test_a_retry_after_header_is_carried_on_the_retryable_error() -> None:
    import anthropic

    from functions.adapters.anthropic_model import AnthropicModel
    from functions.agent.errors import RetryableModelError
    from functions.agent.models import ModelRequest

    throttled = (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}, {"retry-after": "7"})
    with FakeAnthropic(throttled) as fake:
        model = AnthropicModel(anthropic.Anthropic(api_key="k", base_url=fake.base_url, max_retries=0))
        with pytest.raises(RetryableModelError) as raised:
            model.create(
                ModelRequest(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}], max_tokens=10)
            )
    assert raised.value.retry_after == 7.0
