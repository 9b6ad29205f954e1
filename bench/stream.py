"""What a live event stream costs, counted on the local stack (offline stub model): the table reads an open stream
makes while nothing happens, how large a session's items are (what each read pays for), how soon a turn's events
arrive, and what opening a stream takes. Prices are computed from the list prices in the README.

Usage: python bench/stream.py [--watch 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anthropic
import yaml

from functions.adapters import wiring
from stepwise.local.stack import TABLE_NAME, LocalStack

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent.yaml"
GB_SECOND_ARM = 0.0000133334  # USD, Lambda on ARM
READ_UNIT = 0.125 / 1_000_000  # USD, DynamoDB on-demand
STREAM_MB = 256  # the stream function's memory (infra/functions.py)


def counting_queries() -> list[float]:
    """The time of every Query the functions' shared DynamoDB client makes from now on."""
    queries: list[float] = []
    lock = threading.Lock()

    def record(**_: Any) -> None:
        with lock:
            queries.append(time.monotonic())

    wiring.aws_client("dynamodb").meta.events.register("before-call.dynamodb.Query", record)
    return queries


def session_bytes(stack: LocalStack, session_id: str) -> int:
    """The size of a session's items, as DynamoDB counts it (names and values; close enough for read units)."""
    key = {":pk": {"S": f"T#local#R#{session_id}"}}
    items = stack.dynamodb.query(TableName=TABLE_NAME, KeyConditionExpression="pk = :pk",
                                 ExpressionAttributeValues=key)["Items"]  # fmt: skip
    return sum(len(name) + len(str(value)) for item in items for name, value in item.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watch", type=float, default=10.0, help="seconds to hold a stream open on an idle session")
    args = parser.parse_args()
    os.environ.pop("ANTHROPIC_API_KEY", None)
    with LocalStack(port=0) as stack:
        client = anthropic.Anthropic(api_key="local", base_url=stack.url)
        agent = client.beta.agents.create(**yaml.safe_load(EXAMPLE.read_text()))
        session = client.beta.sessions.create(agent=agent.id, environment_id="bench")
        api = stack.topology.api_function

        # a turn followed through the stream: how soon its events arrive after the message is sent
        before = stack.lambdas.invocations[api]
        opened = time.monotonic()
        with client.beta.sessions.events.stream(session.id) as events:
            open_seconds = time.monotonic() - opened
            sent = time.monotonic()
            message = {"type": "user.message", "content": [{"type": "text", "text": "What is 12*12?"}]}
            client.beta.sessions.events.send(session.id, events=[message])  # type: ignore[list-item]
            arrivals = []
            for event in events:
                arrivals.append((event.type, time.monotonic() - sent))
                if event.type == "session.status_idle":
                    break
        api_requests = stack.lambdas.invocations[api] - before
        print(f"opening a stream: {open_seconds * 1000:.0f} ms (the API's 307 with a ticket, then the stream's first "
              f"read); the turn's {len(arrivals)} events arrived {arrivals[0][1]:.2f} s to {arrivals[-1][1]:.2f} s "
              f"after the message; API requests for the stream and the message: {api_requests}")  # fmt: skip

        # an open stream on an idle session: its reads (the stream ends itself after --watch seconds)
        os.environ["STEPWISE_STREAM_MAX_SECONDS"] = str(args.watch)
        wiring.reset()
        queries = counting_queries()
        size = session_bytes(stack, session.id)
        started = time.monotonic()
        with client.beta.sessions.events.stream(session.id) as events:
            assert list(events) == []
        held = time.monotonic() - started
        reads = len(queries)
        units = max(1, -(-size // 4096))  # strongly consistent: one read unit per 4 KB (rounded up)
        per_minute = reads / held * 60
        print(
            f"an open stream on an idle session for {held:.1f} s: {reads} table reads (Query), "
            f"{per_minute:.0f} a minute; the session's items: {size:,} bytes, {units} read unit(s) a read"
        )
        lambda_minute = STREAM_MB / 1024 * 60 * GB_SECOND_ARM
        print(
            f"per minute open: Lambda ${lambda_minute:.6f} ({STREAM_MB} MB, ARM), reads "
            f"${per_minute * units * READ_UNIT:.7f}; per 14-minute connection: Lambda ${lambda_minute * 14:.4f}"
        )


if __name__ == "__main__":
    main()
