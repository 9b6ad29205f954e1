"""What a session costs while it waits for a person, and per turn: Lambda invocations, running executions and
state transitions, counted on the local stack (offline stub model; the counts are the workflow's, not the
model's).

Usage: python bench/session_idle.py [--wait 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anthropic
import yaml

from stepwise.local.stack import LocalStack

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent.yaml"


def idle(client: anthropic.Anthropic, stack: LocalStack, session_id: str) -> Any:
    """The session once it is idle and its turn's execution has ended (Finalize's Done comes just after)."""
    for _ in range(600):
        session = client.beta.sessions.retrieve(session_id)
        running = stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn, statusFilter="RUNNING")
        if session.status == "idle" and not running["executions"]:
            return session
        time.sleep(0.05)
    raise SystemExit(f"session {session_id} did not idle")


def behind_the_api(stack: LocalStack) -> int:
    """The workflow's and intake's invocations (not the webhooks function's: it fans each turn's end out once)."""
    apart = {stack.topology.api_function, stack.topology.webhooks_function}
    return sum(count for name, count in stack.lambdas.invocations.items() if name not in apart)


def transitions(stack: LocalStack) -> int:
    total = 0
    for execution in stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]:
        events = stack.sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
        total += sum(1 for event in events if event["type"].endswith("StateEntered"))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to watch the idle session")
    args = parser.parse_args()
    os.environ.pop("ANTHROPIC_API_KEY", None)  # the offline stub: counts do not depend on the model
    with LocalStack(port=0) as stack:
        client = anthropic.Anthropic(api_key="local", base_url=stack.url)
        agent = client.beta.agents.create(**yaml.safe_load(EXAMPLE.read_text()))
        session = client.beta.sessions.create(agent=agent.id, environment_id="bench")
        text = "word_count: the quick brown fox. And 12*12?"
        client.beta.sessions.events.send(
            session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
        )
        waiting = idle(client, stack, session.id)
        invocations, states = behind_the_api(stack), transitions(stack)
        time.sleep(args.wait)
        running = stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn, statusFilter="RUNNING")
        print(f"python bench/session_idle.py --wait {args.wait:g}")
        print(f"turn 1 idled {waiting.stop_reason['type']} waiting for {len(waiting.stop_reason['event_ids'])} calls")
        print(f"  turn 1: {invocations} Lambda invocations, {states} state transitions")
        print(
            f"  while idle for {args.wait:g} s: {behind_the_api(stack) - invocations} Lambda invocations, "
            f"{len(running['executions'])} running executions, {transitions(stack) - states} state transitions"
        )
        answers: list[Any] = []
        for event_id in waiting.stop_reason["event_ids"]:
            call = next(e for e in client.beta.sessions.events.list(session.id, limit=1000).data if e.id == event_id)
            if call.type == "agent.custom_tool_use":
                answers.append({"type": "user.custom_tool_result", "custom_tool_use_id": event_id,
                                "content": [{"type": "text", "text": "7"}]})  # fmt: skip
            else:
                answers.append({"type": "user.tool_confirmation", "tool_use_id": event_id, "result": "allow"})
        before, states_before = behind_the_api(stack), transitions(stack)
        client.beta.sessions.events.send(session.id, events=answers)
        done = idle(client, stack, session.id)
        print(
            f"  turn 2 ({done.stop_reason['type']}): {behind_the_api(stack) - before} Lambda invocations, "
            f"{transitions(stack) - states_before} state transitions"
        )


if __name__ == "__main__":
    main()
