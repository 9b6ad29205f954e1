"""Automatic prompt-caching breakpoints: where they go, how many, and that the input is never touched."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from functions.agent.caching import MAX_BREAKPOINTS, CacheTTL, cache_control, count_breakpoints, place_cache_breakpoints
from functions.agent.models import ModelRequest

FIVE = {"type": "ephemeral", "ttl": "5m"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
TOOLS = [
    {"name": "calculator", "description": "math", "input_schema": {"type": "object"}},
    {"name": "current_time", "description": "time", "input_schema": {"type": "object"}},
]


def tool_turn(n: int) -> list[dict[str, Any]]:
    """An assistant tool call and the user's tool result."""
    return [
        {"role": "assistant", "content": [{"type": "tool_use", "id": f"t{n}", "name": "calculator", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{n}", "content": str(n)}]},
    ]


def conversation(turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is 6 * 7?"}]
    for n in range(turns):
        messages += tool_turn(n)
    return messages


def request(
    *,
    system: str | list[dict[str, Any]] | None = "You are careful.",
    tools: list[dict[str, Any]] | None = None,
    messages: list[dict[str, Any]] | None = None,
) -> ModelRequest:
    return ModelRequest(
        model="claude-sonnet-4-5",
        system=system,
        tools=copy.deepcopy(TOOLS) if tools is None else tools,
        messages=conversation(2) if messages is None else messages,
        max_tokens=256,
    )


def marked(request: ModelRequest) -> list[str]:
    """Where the markers are, in prompt order, as short labels."""
    found = [f"tool:{t['name']}" for t in request.tools if t.get("cache_control")]
    if isinstance(request.system, list):
        found += [f"system:{i}" for i, b in enumerate(request.system) if b.get("cache_control")]
    for m, message in enumerate(request.messages):
        if isinstance(message["content"], list):
            found += [f"msg:{m}:{b}" for b, block in enumerate(message["content"]) if block.get("cache_control")]
    return found


def ttls_in_order(request: ModelRequest) -> list[str]:
    blocks: list[dict[str, Any]] = list(request.tools) + (request.system if isinstance(request.system, list) else [])
    for message in request.messages:
        if isinstance(message["content"], list):
            blocks += message["content"]
    return [b["cache_control"].get("ttl", "5m") for b in blocks if b.get("cache_control")]


# ------------------------------------------------------------------------------------------- placement


def test_a_full_request_gets_tools_system_latest_and_previous_turn() -> None:
    # Given a conversation of the first user turn and two tool round trips (5 messages)
    placed = place_cache_breakpoints(request())

    # Then the tools prefix, the system prompt, the latest turn and the previous user turn are marked
    assert marked(placed) == ["tool:current_time", "system:0", "msg:2:0", "msg:4:0"]
    assert count_breakpoints(placed) == MAX_BREAKPOINTS


def test_the_marker_is_ephemeral_with_the_default_ttl_of_5_minutes() -> None:
    placed = place_cache_breakpoints(request())

    assert placed.tools[-1]["cache_control"] == FIVE
    assert cache_control() == FIVE


@pytest.mark.parametrize("ttl", ["5m", "1h"])
def test_the_ttl_is_passed_through_to_every_marker(ttl: str) -> None:
    placed = place_cache_breakpoints(request(), ttl=ttl)  # type: ignore[arg-type]

    assert ttls_in_order(placed) == [ttl] * 4
    assert placed.tools[-1]["cache_control"] == {"type": "ephemeral", "ttl": ttl}


def test_a_str_system_becomes_one_marked_text_block() -> None:
    placed = place_cache_breakpoints(request(system="Be brief."))

    assert placed.system == [{"type": "text", "text": "Be brief.", "cache_control": FIVE}]


def test_a_list_system_has_its_last_block_marked() -> None:
    system = [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]

    placed = place_cache_breakpoints(request(system=system))

    assert isinstance(placed.system, list)
    assert "cache_control" not in placed.system[0]
    assert placed.system[1] == {"type": "text", "text": "Part two.", "cache_control": FIVE}


def test_a_str_latest_message_becomes_one_marked_text_block() -> None:
    # Given the first step: one user message with str content
    placed = place_cache_breakpoints(request(messages=[{"role": "user", "content": "What is 6 * 7?"}]))

    assert placed.messages == [
        {"role": "user", "content": [{"type": "text", "text": "What is 6 * 7?", "cache_control": FIVE}]}
    ]
    # And with a single message there is no previous turn to mark
    assert marked(placed) == ["tool:current_time", "system:0", "msg:0:0"]


def test_the_last_block_of_a_list_content_is_marked() -> None:
    results = [
        {"type": "tool_result", "tool_use_id": "a", "content": "1"},
        {"type": "tool_result", "tool_use_id": "b", "content": "2"},
    ]
    messages = [*conversation(0), tool_turn(0)[0], {"role": "user", "content": results}]

    placed = place_cache_breakpoints(request(messages=messages))

    assert "cache_control" not in placed.messages[-1]["content"][0]
    assert placed.messages[-1]["content"][1]["cache_control"] == FIVE


def test_a_str_previous_user_turn_is_converted_and_marked() -> None:
    # Given the second step: the user's str input is now the previous user turn
    placed = place_cache_breakpoints(request(messages=conversation(1)))

    assert placed.messages[0]["content"] == [{"type": "text", "text": "What is 6 * 7?", "cache_control": FIVE}]
    assert marked(placed) == ["tool:current_time", "system:0", "msg:0:0", "msg:2:0"]


def test_the_previous_turn_is_the_last_user_message_before_the_latest() -> None:
    placed = place_cache_breakpoints(request(messages=conversation(3)))  # 7 messages

    assert marked(placed)[-2:] == ["msg:4:0", "msg:6:0"]
    assert all("cache_control" not in block for m in placed.messages[:4] for block in m["content"])


def test_two_messages_are_not_enough_for_a_previous_turn() -> None:
    # Given a user message and an assistant prefill
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi"}]},
    ]

    placed = place_cache_breakpoints(request(messages=messages))

    assert marked(placed) == ["tool:current_time", "system:0", "msg:1:0"]


def test_no_tools_places_no_tool_marker() -> None:
    placed = place_cache_breakpoints(request(tools=[]))

    assert placed.tools == []
    assert marked(placed) == ["system:0", "msg:2:0", "msg:4:0"]
    assert count_breakpoints(placed) == 3


@pytest.mark.parametrize("system", [None, "", []])
def test_no_system_places_no_system_marker(system: Any) -> None:
    placed = place_cache_breakpoints(request(system=system))

    assert placed.system == system
    assert marked(placed) == ["tool:current_time", "msg:2:0", "msg:4:0"]


def test_nothing_to_cache_places_nothing() -> None:
    placed = place_cache_breakpoints(request(system=None, tools=[], messages=[]))

    assert count_breakpoints(placed) == 0
    assert placed.messages == []


def test_empty_content_is_skipped() -> None:
    placed = place_cache_breakpoints(request(messages=[{"role": "user", "content": ""}]))

    assert placed.messages == [{"role": "user", "content": ""}]
    assert marked(placed) == ["tool:current_time", "system:0"]


def test_thinking_and_empty_text_blocks_are_passed_over_for_an_earlier_block() -> None:
    content = [
        {"type": "text", "text": "Let me think."},
        {"type": "thinking", "thinking": "...", "signature": "sig"},
        {"type": "text", "text": ""},
    ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]

    placed = place_cache_breakpoints(request(messages=messages))

    assert [("cache_control" in b) for b in placed.messages[1]["content"]] == [True, False, False]


def test_a_message_of_only_uncacheable_blocks_gets_no_marker() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]},
    ]

    placed = place_cache_breakpoints(request(messages=messages))

    assert marked(placed) == ["tool:current_time", "system:0"]


# -------------------------------------------------------------------------------------- the 4-marker limit


def test_existing_markers_count_and_lowest_priority_placements_are_dropped() -> None:
    # Given one marker the caller placed on the first tool
    tools = copy.deepcopy(TOOLS)
    tools[0]["cache_control"] = FIVE

    placed = place_cache_breakpoints(request(tools=tools))

    # Then the previous turn (lowest priority) is dropped and the caller's marker is kept as it was
    assert marked(placed) == ["tool:calculator", "tool:current_time", "system:0", "msg:4:0"]
    assert count_breakpoints(placed) == 4


def test_with_two_existing_markers_only_system_and_tools_are_added() -> None:
    messages = conversation(2)
    messages[1]["content"][0]["cache_control"] = FIVE
    messages[3]["content"][0]["cache_control"] = FIVE

    placed = place_cache_breakpoints(request(messages=messages))

    assert marked(placed) == ["tool:current_time", "system:0", "msg:1:0", "msg:3:0"]


def test_with_three_existing_markers_only_the_system_is_added() -> None:
    messages = conversation(2)
    for index in (0, 1, 3):
        block = messages[index]["content"]
        if isinstance(block, str):
            messages[index]["content"] = block = [{"type": "text", "text": block}]
        block[0]["cache_control"] = FIVE

    placed = place_cache_breakpoints(request(messages=messages))

    assert marked(placed) == ["system:0", "msg:0:0", "msg:1:0", "msg:3:0"]


def test_four_existing_markers_leave_the_request_as_it_was() -> None:
    system = [{"type": "text", "text": f"part {i}", "cache_control": FIVE} for i in range(4)]
    original = request(system=system)

    placed = place_cache_breakpoints(original)

    assert placed == original
    assert count_breakpoints(placed) == 4


def test_more_than_four_existing_markers_are_counted_and_nothing_is_added() -> None:
    system = [{"type": "text", "text": f"part {i}", "cache_control": FIVE} for i in range(5)]
    original = request(system=system)

    placed = place_cache_breakpoints(original)

    assert placed == original
    assert count_breakpoints(placed) == 5


def test_a_target_already_marked_keeps_its_marker_and_uses_no_extra_slot() -> None:
    tools = copy.deepcopy(TOOLS)
    tools[-1]["cache_control"] = HOUR

    placed = place_cache_breakpoints(request(tools=tools))

    assert placed.tools[-1]["cache_control"] == HOUR
    assert marked(placed) == ["tool:current_time", "system:0", "msg:2:0", "msg:4:0"]


def test_markers_nested_in_a_tool_result_are_counted() -> None:
    messages = conversation(2)
    messages[2]["content"][0]["content"] = [{"type": "text", "text": "0", "cache_control": FIVE}]

    placed = place_cache_breakpoints(request(messages=messages))

    assert count_breakpoints(placed) == 4
    assert marked(placed) == ["tool:current_time", "system:0", "msg:4:0"]  # plus the nested one


def test_a_marker_set_to_none_is_not_counted() -> None:
    tools: list[dict[str, Any]] = copy.deepcopy(TOOLS)
    tools[0]["cache_control"] = None

    assert count_breakpoints(request(tools=tools)) == 0
    assert count_breakpoints(place_cache_breakpoints(request(tools=tools))) == 4


def test_count_breakpoints_counts_tools_system_and_messages() -> None:
    tools = copy.deepcopy(TOOLS)
    tools[0]["cache_control"] = FIVE
    messages = conversation(1)
    messages[2]["content"][0]["cache_control"] = HOUR
    system = [{"type": "text", "text": "s", "cache_control": FIVE}]

    assert count_breakpoints(request(tools=tools, system=system, messages=messages)) == 3
    assert count_breakpoints(request()) == 0  # a str system and str content carry no marker


SHAPES: dict[str, list[Any]] = {
    "system": [
        None,
        "",
        "sys",
        [{"type": "text", "text": "a"}],
        [{"type": "text", "text": "a", "cache_control": FIVE}],
    ],
    "tools": ["none", "plain", "first-marked", "all-marked"],
    "turns": [-1, 0, 1, 2, 5],
    "marked_turns": [0, 1, 3],
}


def _shape(system: Any, tools: str, turns: int, marked_turns: int) -> ModelRequest:
    tool_list = [] if tools == "none" else copy.deepcopy(TOOLS)
    if tools == "first-marked":
        tool_list[0]["cache_control"] = FIVE
    if tools == "all-marked":
        for tool in tool_list:
            tool["cache_control"] = FIVE
    messages = [] if turns < 0 else conversation(turns)
    for message in messages[1 : 1 + marked_turns]:
        message["content"][0]["cache_control"] = FIVE
    return request(system=copy.deepcopy(system), tools=tool_list, messages=messages)


@pytest.mark.parametrize(
    ("system", "tools", "turns", "marked_turns"),
    list(itertools.product(*SHAPES.values())),
)
def test_never_more_than_four_markers_are_added_and_existing_ones_survive(
    system: Any, tools: str, turns: int, marked_turns: int
) -> None:
    original = _shape(system, tools, turns, marked_turns)
    snapshot = original.model_dump()
    before = count_breakpoints(original)

    placed = place_cache_breakpoints(original)

    # Targets in priority order and whether they are still unmarked
    latest, previous = 2 * turns, 2 * turns - 2
    targets = {
        "system": bool(system) and not (isinstance(system, list) and system[-1].get("cache_control")),
        "tools": tools in ("plain", "first-marked"),
        "latest": turns >= 0 and not 1 <= latest <= marked_turns,
        "previous": turns >= 1 and not 1 <= previous <= marked_turns,
    }
    fresh = sum(targets.values())
    assert count_breakpoints(placed) == max(before, min(MAX_BREAKPOINTS, before + fresh))
    assert original.model_dump() == snapshot  # never mutated
    assert set(ttls_in_order(placed)) <= {"5m"}


# ------------------------------------------------------------------------------------------ immutability


def test_the_input_request_is_never_mutated() -> None:
    original = request(system=[{"type": "text", "text": "sys"}])
    snapshot = copy.deepcopy(original.model_dump())

    placed = place_cache_breakpoints(original)

    assert original.model_dump() == snapshot
    assert count_breakpoints(original) == 0
    assert placed is not original
    assert placed.messages is not original.messages
    assert placed.messages[-1] is not original.messages[-1]
    assert placed.tools[-1] is not original.tools[-1]


def test_a_str_input_stays_a_str_in_the_original() -> None:
    original = request(system="sys", messages=[{"role": "user", "content": "hi"}])

    place_cache_breakpoints(original)

    assert original.system == "sys"
    assert original.messages == [{"role": "user", "content": "hi"}]


def test_placing_twice_is_idempotent() -> None:
    once = place_cache_breakpoints(request())

    assert place_cache_breakpoints(once) == once


def test_unmarked_strs_stay_strs_when_no_slot_is_left() -> None:
    tools = copy.deepcopy(TOOLS)
    for tool in tools:
        tool["cache_control"] = FIVE
    messages = conversation(1)
    messages[1]["content"][0]["cache_control"] = FIVE
    messages[2]["content"][0]["cache_control"] = FIVE

    placed = place_cache_breakpoints(request(system="sys", tools=tools, messages=messages))

    assert placed.system == "sys"
    assert placed.messages[0]["content"] == "What is 6 * 7?"


# ------------------------------------------------------------------------------------------------- TTLs


def test_one_ttl_for_all_keeps_1h_before_5m() -> None:
    ttl: CacheTTL
    for ttl in ("5m", "1h"):
        placed = place_cache_breakpoints(request(), ttl=ttl)
        assert len(set(ttls_in_order(placed))) == 1


def test_a_new_1h_marker_after_an_existing_5m_marker_is_dropped() -> None:
    # Given the caller marked the system with 5m
    system = [{"type": "text", "text": "sys", "cache_control": FIVE}]

    placed = place_cache_breakpoints(request(system=system), ttl="1h")

    # Then 1h may go on the tools (before the system) but not on any message (after it)
    assert ttls_in_order(placed) == ["1h", "5m"]
    assert marked(placed) == ["tool:current_time", "system:0"]


def test_a_new_5m_marker_before_an_existing_1h_marker_is_dropped() -> None:
    # Given the caller marked the previous user turn with 1h
    messages = conversation(2)
    messages[2]["content"][0]["cache_control"] = HOUR

    placed = place_cache_breakpoints(request(messages=messages), ttl="5m")

    # Then only the latest turn, after it, can take a 5m marker
    assert marked(placed) == ["msg:2:0", "msg:4:0"]
    assert ttls_in_order(placed) == ["1h", "5m"]


def test_a_1h_marker_nested_in_a_tool_result_orders_before_its_parent_block() -> None:
    messages = conversation(1)
    messages[2]["content"][0]["content"] = [{"type": "text", "text": "0", "cache_control": HOUR}]

    placed = place_cache_breakpoints(request(messages=messages), ttl="5m")

    # The tool_result's own marker ends after its nested content, so 5m there is allowed
    assert placed.messages[2]["content"][0]["cache_control"] == FIVE
    assert "cache_control" not in placed.tools[-1]
