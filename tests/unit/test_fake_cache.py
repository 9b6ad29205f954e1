"""The fake Messages API's opt-in prompt-cache simulation reports usage the way the real API does."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from functions.adapters.anthropic_model import AnthropicModel
from functions.agent.caching import place_cache_breakpoints
from functions.agent.errors import FatalModelError
from functions.agent.models import ModelRequest
from tests.fakes.anthropic_server import FakeAnthropic, PromptCacheSimulator, estimate_tokens, message

FIVE = {"type": "ephemeral", "ttl": "5m"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
LONG_SYSTEM = "You are a careful agent. Follow the house rules exactly. " * 120  # ~1,700 tokens
TOOLS = [
    {"name": "calculator", "description": "Evaluate arithmetic exactly.", "input_schema": {"type": "object"}},
    {"name": "current_time", "description": "The time in a zone.", "input_schema": {"type": "object"}},
]
REPLY = message([{"type": "text", "text": "42"}], "end_turn", model="claude-haiku-4-5", output_tokens=7)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def body(
    *, system: Any = LONG_SYSTEM, messages: list[dict[str, Any]] | None = None, model: str = "claude-haiku-4-5"
) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 100,
        "tools": copy.deepcopy(TOOLS),
        "system": copy.deepcopy(system),
        "messages": messages if messages is not None else [{"role": "user", "content": "What is 6 * 7?"}],
    }


def text(value: str, cache: dict[str, str]) -> dict[str, Any]:
    return {"type": "text", "text": value, "cache_control": cache}


def marked_system(cache: dict[str, str] = FIVE) -> list[dict[str, Any]]:
    return [{"type": "text", "text": LONG_SYSTEM, "cache_control": cache}]


def prompt_tokens(request: dict[str, Any]) -> int:
    return sum(unit.tokens for unit in PromptCacheSimulator().units(request))


def tokens_of(*blocks: Any) -> int:
    return sum(estimate_tokens(block) for block in blocks)


def blocks_of(messages: list[dict[str, Any]]) -> list[Any]:
    return [block for m in messages for block in m["content"]]


def input_side(usage: dict[str, Any]) -> tuple[int, int, int]:
    return usage["input_tokens"], usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"]


def conversation(turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is 6 * 7?"}]
    for n in range(turns):
        messages.append(
            {"role": "assistant", "content": [{"type": "tool_use", "id": f"t{n}", "name": "calculator", "input": {}}]}
        )
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{n}", "content": "x"}]})
    return messages


def model_request(turns: int) -> ModelRequest:
    return ModelRequest(
        model="claude-haiku-4-5", system=LONG_SYSTEM, tools=TOOLS, messages=conversation(turns), max_tokens=100
    )


# ---------------------------------------------------------------------------------------------- simulator


def test_without_cache_control_everything_is_input() -> None:
    cache = PromptCacheSimulator(min_tokens=1024)
    request = body()

    first, second = cache.usage(request), cache.usage(request)

    assert input_side(first) == input_side(second) == (prompt_tokens(request), 0, 0)
    assert first["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
    assert cache.entries == {}


def test_the_first_call_writes_the_prefix_up_to_the_breakpoint() -> None:
    cache = PromptCacheSimulator(min_tokens=1024)
    request = body(system=marked_system())
    prefix = tokens_of(*TOOLS, {"type": "text", "text": LONG_SYSTEM})

    usage = cache.usage(request)

    assert prefix >= 1024
    assert input_side(usage) == (prompt_tokens(request) - prefix, prefix, 0)
    assert usage["cache_creation"] == {"ephemeral_5m_input_tokens": prefix, "ephemeral_1h_input_tokens": 0}


def test_a_second_call_with_the_same_prefix_reads_it() -> None:
    cache = PromptCacheSimulator(min_tokens=1024)
    request = body(system=marked_system())
    first = cache.usage(request)

    # When the same prefix comes again with a different question after it
    second = cache.usage(body(system=marked_system(), messages=[{"role": "user", "content": "And 7 * 8?"}]))

    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
    assert second["cache_creation_input_tokens"] == 0
    assert second["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}


def test_a_growing_conversation_reads_the_old_prefix_and_writes_the_new_turn() -> None:
    cache = PromptCacheSimulator(min_tokens=1024)
    step = [place_cache_breakpoints(model_request(turns)).model_dump(exclude_none=True) for turns in range(3)]

    first, second, third = (cache.usage(request) for request in step)

    # The first step writes everything it marked: tools, system and the user's question
    assert input_side(first) == (0, prompt_tokens(step[0]), 0)
    # The next step reads that whole prefix and writes only the new assistant turn and tool result
    new_turn = tokens_of(*blocks_of(conversation(1)[1:]))
    assert input_side(second) == (0, new_turn, prompt_tokens(step[0]))
    # And so on: what the previous step wrote is read
    assert input_side(third) == (0, tokens_of(*blocks_of(conversation(2)[3:])), prompt_tokens(step[1]))


def test_input_write_and_read_always_add_up_to_the_whole_prompt() -> None:
    cache = PromptCacheSimulator(min_tokens=1024)
    for turns in range(6):
        request = place_cache_breakpoints(model_request(turns)).model_dump(exclude_none=True)
        assert sum(input_side(cache.usage(request))) == prompt_tokens(request)


def test_a_prefix_below_the_minimum_is_never_cached() -> None:
    cache = PromptCacheSimulator(min_tokens=1024)
    request = body(system=[{"type": "text", "text": "Be brief.", "cache_control": FIVE}])

    first, second = cache.usage(request), cache.usage(request)

    assert input_side(first) == input_side(second) == (prompt_tokens(request), 0, 0)
    assert cache.entries == {}


def test_a_short_breakpoint_folds_into_the_next_one_that_reaches_the_minimum() -> None:
    # Given a short marked tools prefix and a long marked system prompt
    cache = PromptCacheSimulator(min_tokens=1024)
    request = body(system=marked_system())
    request["tools"][-1]["cache_control"] = FIVE

    usage = cache.usage(request)

    # Then only the system breakpoint is cached, and its write includes the tools
    assert usage["cache_creation_input_tokens"] == tokens_of(*TOOLS, {"type": "text", "text": LONG_SYSTEM})
    assert len(cache.entries) == 1


def test_cache_writes_are_split_by_the_ttl_of_each_breakpoint() -> None:
    # Given 1h on the system prompt and 5m on the conversation
    cache = PromptCacheSimulator(min_tokens=1024)
    question = {"type": "text", "text": "What is 6 * 7?", "cache_control": FIVE}
    request = body(system=marked_system(HOUR), messages=[{"role": "user", "content": [question]}])

    usage = cache.usage(request)

    prefix = tokens_of(*TOOLS, {"type": "text", "text": LONG_SYSTEM})
    split = {"ephemeral_5m_input_tokens": tokens_of(question), "ephemeral_1h_input_tokens": prefix}
    assert usage["cache_creation"] == split
    assert usage["cache_creation_input_tokens"] == prefix + tokens_of(question)
    assert usage["input_tokens"] == 0


def test_a_5m_entry_expires_after_5_minutes_and_a_1h_entry_does_not() -> None:
    clock = Clock()
    cache = PromptCacheSimulator(min_tokens=1024, clock=clock)
    five, hour = body(system=marked_system(FIVE)), body(system=marked_system(HOUR), model="claude-opus-4-5")
    cache.usage(five)
    cache.usage(hour)

    clock.now += 301

    assert cache.usage(five)["cache_read_input_tokens"] == 0  # written again
    assert cache.usage(hour)["cache_read_input_tokens"] > 0


def test_a_read_refreshes_the_ttl() -> None:
    clock = Clock()
    cache = PromptCacheSimulator(min_tokens=1024, clock=clock)
    request = body(system=marked_system())
    cache.usage(request)

    clock.now += 200
    cache.usage(request)  # a hit: the entry lives 5 more minutes from here
    clock.now += 200

    assert cache.usage(request)["cache_creation_input_tokens"] == 0


def test_another_model_or_a_changed_prefix_misses() -> None:
    cache = PromptCacheSimulator(min_tokens=1024)
    cache.usage(body(system=marked_system()))

    other_model = cache.usage(body(system=marked_system(), model="claude-opus-4-5"))
    changed = body(system=[{"type": "text", "text": LONG_SYSTEM + " Also be kind.", "cache_control": FIVE}])

    assert other_model["cache_read_input_tokens"] == 0
    assert cache.usage(changed)["cache_read_input_tokens"] == 0


def test_the_marker_and_its_ttl_are_not_part_of_the_cache_key() -> None:
    # A prefix written at the latest turn is read at the same blocks when they are the previous turn
    cache = PromptCacheSimulator(min_tokens=1024)
    cache.usage(body(system=marked_system(FIVE)))

    assert cache.usage(body(system=marked_system(HOUR)))["cache_read_input_tokens"] > 0


def test_a_str_and_a_one_block_list_count_and_key_the_same() -> None:
    as_str = body(system=LONG_SYSTEM)
    as_list = body(system=[{"type": "text", "text": LONG_SYSTEM}])

    assert PromptCacheSimulator().units(as_str) == PromptCacheSimulator().units(as_list)


def test_the_token_estimate_is_about_four_characters_per_token() -> None:
    block = {"type": "text", "text": "x" * 4000}

    assert 1000 <= estimate_tokens(block) <= 1010
    assert estimate_tokens({**block, "cache_control": FIVE}) == estimate_tokens(block)


@pytest.mark.parametrize(
    ("system", "reason"),
    [
        ([{"type": "text", "text": str(i), "cache_control": FIVE} for i in range(5)], "maximum of 4"),
        ([text("a", FIVE), text("b", HOUR)], "must not come after"),
        ([{"type": "text", "text": "a", "cache_control": {"type": "ephemeral", "ttl": "2h"}}], "ttl"),
    ],
)
def test_breakpoints_the_real_api_refuses_are_a_400(system: list[dict[str, Any]], reason: str) -> None:
    refused = PromptCacheSimulator().validate(body(system=system))

    assert refused is not None
    status, payload = refused
    assert status == 400
    assert payload["error"]["type"] == "invalid_request_error"
    assert reason in payload["error"]["message"]


def test_1h_before_5m_and_four_markers_are_valid() -> None:
    system = [text("a", HOUR), text("b", FIVE)]
    request = body(system=system)
    request["tools"][0]["cache_control"] = HOUR
    request["messages"] = [{"role": "user", "content": [{"type": "text", "text": "q", "cache_control": FIVE}]}]

    assert PromptCacheSimulator().validate(request) is None


# ------------------------------------------------------------------------------ through the anthropic SDK


@pytest.fixture
def cached_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(cache=PromptCacheSimulator(min_tokens=1024)) as fake:
        yield fake


def model_for(fake: FakeAnthropic) -> AnthropicModel:
    return AnthropicModel(anthropic.Anthropic(api_key="test-key", base_url=fake.base_url, max_retries=0))


def test_the_sdk_parses_the_simulated_usage_and_the_reply_is_kept(cached_fake: FakeAnthropic) -> None:
    request = ModelRequest(
        model="claude-haiku-4-5",
        system=marked_system(HOUR),
        messages=[{"role": "user", "content": "What is 6 * 7?"}],
        tools=TOOLS,
        max_tokens=100,
    )
    cached_fake.script.extend([(200, copy.deepcopy(REPLY)), (200, copy.deepcopy(REPLY))])
    model = model_for(cached_fake)

    first, second = model.create(request), model.create(request)

    prefix = tokens_of(*TOOLS, {"type": "text", "text": LONG_SYSTEM})
    assert first.usage.cache_creation_input_tokens == prefix
    assert first.usage.cache_creation_1h_input_tokens == prefix
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == prefix
    assert second.usage.cache_creation_input_tokens == 0
    assert first.usage.input_tokens == second.usage.input_tokens > 0
    # The scripted content, stop reason and output tokens are kept
    assert second.text() == "42"
    assert second.stop_reason == "end_turn"
    assert second.usage.output_tokens == 7
    assert cached_fake.cache is not None and len(cached_fake.cache.usages) == 2


def test_the_raw_sdk_message_carries_cache_creation(cached_fake: FakeAnthropic) -> None:
    cached_fake.script.append((200, copy.deepcopy(REPLY)))
    client = anthropic.Anthropic(api_key="test-key", base_url=cached_fake.base_url, max_retries=0)

    reply = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        system=marked_system(),  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "hi"}],
    )

    assert reply.usage.cache_creation is not None
    assert reply.usage.cache_creation_input_tokens
    assert reply.usage.cache_creation.ephemeral_5m_input_tokens == reply.usage.cache_creation_input_tokens
    assert reply.usage.cache_creation.ephemeral_1h_input_tokens == 0


def test_a_refused_request_is_a_fatal_400_and_does_not_use_up_the_script(cached_fake: FakeAnthropic) -> None:
    cached_fake.script.append((200, copy.deepcopy(REPLY)))
    system = [{"type": "text", "text": str(i), "cache_control": FIVE} for i in range(5)]
    request = ModelRequest(
        model="claude-haiku-4-5", system=system, messages=[{"role": "user", "content": "q"}], max_tokens=10
    )

    with pytest.raises(FatalModelError) as raised:
        model_for(cached_fake).create(request)

    assert raised.value.code == "MODEL_400"
    assert len(cached_fake.script) == 1


def test_errors_pass_through_without_touching_the_cache(cached_fake: FakeAnthropic) -> None:
    cached_fake.script.append((529, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}))
    request = ModelRequest(
        model="claude-haiku-4-5", system=marked_system(), messages=[{"role": "user", "content": "q"}], max_tokens=10
    )

    with pytest.raises(Exception, match="overloaded"):
        model_for(cached_fake).create(request)

    assert cached_fake.cache is not None and cached_fake.cache.entries == {}


def test_without_the_simulator_the_scripted_usage_is_kept() -> None:
    with FakeAnthropic((200, message([{"type": "text", "text": "ok"}], "end_turn", input_tokens=5))) as fake:
        response = model_for(fake).create(
            ModelRequest(model="m", system=marked_system(), messages=[{"role": "user", "content": "q"}], max_tokens=5)
        )

    assert response.usage.input_tokens == 5
    assert response.usage.cache_creation_input_tokens == 0
