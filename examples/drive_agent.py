"""Drive the example agent with the official `anthropic` SDK pointed at Stepwise (the local stack by default).

    make local                            # in one terminal (or any deployed endpoint you can reach)
    .venv/bin/python examples/drive_agent.py

It creates the agent from examples/agent.yaml, opens a session with a 10-cent budget, sends one message,
allows the calculator, runs word_count here (a client tool), and prints every event and the session's cost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anthropic
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from word_count import word_count

HERE = Path(__file__).parent
MESSAGE = "Please word_count this sentence: the quick brown fox jumps over the lazy dog. Then what is 12*12?"


def follow(client: anthropic.Anthropic, session_id: str, after: str | None) -> tuple[Any, str | None]:
    """Print events as they arrive (a long-poll: `wait` seconds) until the session idles."""
    while True:
        query: dict[str, Any] = {"wait": 10, **({"page": after} if after else {})}
        page = client.beta.sessions.events.list(session_id, extra_query=query)
        for event in page.data:
            after = event.id
            print(f"  {event.type:<26} {describe(event)}")
            if event.type == "session.status_idle" and not page.next_page:
                return event, after


def describe(event: Any) -> str:
    if event.type == "agent.message":
        return "".join(block.text for block in event.content)
    if event.type in ("agent.tool_use", "agent.custom_tool_use"):
        return f"{event.name}({json.dumps(event.input)})"
    if event.type == "span.model_request_end":
        usage = event.model_usage
        return f"{usage.input_tokens} in / {usage.output_tokens} out, ${getattr(event, 'cost_usd', '?')}"
    if event.type == "session.status_idle":
        return event.stop_reason.type
    return ""


def main(base_url: str) -> dict[str, Any]:
    client = anthropic.Anthropic(api_key="unused-by-the-local-stack", base_url=base_url)
    definition = yaml.safe_load((HERE / "agent.yaml").read_text())
    agent = client.beta.agents.create(**definition)
    session = client.beta.sessions.create(
        agent=agent.id,
        environment_id="examples",
        budget={"type": "limit", "max_list_cost": {"amount": "10", "currency": "USD"}},
    )
    print(f"agent {agent.id} v{agent.version}, session {session.id}")
    client.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": MESSAGE}]}]
    )
    after = None
    while True:
        idle, after = follow(client, session.id, after)
        if idle.stop_reason.type != "requires_action":
            break
        answers = []
        for event_id in idle.stop_reason.event_ids:
            call = next(e for e in client.beta.sessions.events.list(session.id, limit=1000).data if e.id == event_id)
            if call.type == "agent.custom_tool_use":  # our tool: run it here
                result = word_count(str(call.input.get("text", "")))
                answers.append({"type": "user.custom_tool_result", "custom_tool_use_id": event_id,
                                "content": [{"type": "text", "text": result}]})  # fmt: skip
            else:  # always_ask: this script approves; `stepwise chat` asks a person
                answers.append({"type": "user.tool_confirmation", "tool_use_id": event_id, "result": "allow"})
        client.beta.sessions.events.send(session.id, events=answers)
    done = client.beta.sessions.retrieve(session.id)
    print(f"stop: {idle.stop_reason.type}; tokens {done.usage.input_tokens} in / {done.usage.output_tokens} out; "
          f"cost ${getattr(done.usage, 'cost_usd', '?')}")  # fmt: skip
    return {"session": done, "stop_reason": idle.stop_reason.type}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8787")
    main(parser.parse_args().base_url)
