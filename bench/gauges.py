"""What the gauges function costs a month, at a number of active runs and sessions: its Queries of the index of active
work and the read units they take, what it prints (EMF and its log line), and its CPU time, running the real handler.

Read units are computed as DynamoDB bills a Query on an index: the size of the index entries it reads (their keys and
projected attributes, by DynamoDB's item-size rules), rounded up to 4 KB, half a unit per 4 KB eventually consistent,
half a unit at least.

The function's CPU time is measured apart from moto's: each Query's answer is recorded on moto, then replayed to
botocore, which still serialises, signs and parses every call, so only the network is left out. Its billed duration
is estimated from it (see the header line printed).

Usage: python bench/gauges.py [--active 0 100 1000 10000] [--tenants 50] [--samples 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from botocore.awsrequest import AWSResponse
from moto import mock_aws
from moto.core.botocore_stubber import MockRawResponse

from bench.meter import item_size
from functions.adapters import settings, wiring
from functions.adapters.dynamodb_store import ACTIVE_INDEX, ACTIVE_PK, ACTIVE_PROJECTION, ACTIVE_SK, run_to_item
from functions.agent.census import REPORTED
from functions.agent.models import Budget, Run, RunStatus, Turn
from functions.handlers import gauges
from stepwise.local.lambdas import LocalContext

EVENT = json.loads((Path(__file__).resolve().parents[1] / "events" / "gauges" / "scheduled.json").read_text())
TABLE = "stepwise-bench"
T0 = "2026-12-01T00:00:00.000+00:00"
INVOCATIONS = 60 * 24 * 30  # a month of 30 days, one a minute
# us-east-1 list prices (/work/shared/reference/FACTS.md; CloudWatch Logs ingestion)
READ_UNIT, REQUEST, GB_SECOND, LOG_GB, METRIC = 0.125e-6, 0.20e-6, 0.0000133334, 0.50, 0.30
MEMORY_MB, FULL_CPU_MB = 128, 1769  # Lambda gives a function CPU in proportion to its memory, a vCPU at 1,769 MB
WAIT_PER_QUERY = 0.010  # seconds a Query's round trip takes in the region: assumed, not measured here


def entry(n: int, tenants: int) -> Run:
    """The n-th active run: one in ten a session in its first turn, the rest a third queued and two thirds running."""
    tenant = f"tenant-{n % tenants:03d}"
    if n % 10 == 9:
        return Run(run_id=f"sesn_{n:026x}", tenant=tenant, status=RunStatus.RUNNING, input="", model="claude-haiku-4-5",
                   tools=[], budget=Budget(), session={"rev": 1, "agent_id": "agent_a", "archived_at": None},
                   turns=[Turn(first_step=0, started_at=T0)], created_at=T0, updated_at=T0,
                   created_by="key_0123456789abcdef")  # fmt: skip
    status = RunStatus.QUEUED if n % 3 == 0 else RunStatus.RUNNING
    return Run(run_id=f"run_{n:026x}", tenant=tenant, status=status, input="x", model="claude-haiku-4-5", tools=[],
               budget=Budget(), created_at=T0, updated_at=T0, created_by="key_0123456789abcdef")  # fmt: skip


def populate(client: Any, active: int, tenants: int) -> None:
    client.create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", ACTIVE_PK, ACTIVE_SK)],
        GlobalSecondaryIndexes=[{"IndexName": ACTIVE_INDEX, "KeySchema": [
            {"AttributeName": ACTIVE_PK, "KeyType": "HASH"}, {"AttributeName": ACTIVE_SK, "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(ACTIVE_PROJECTION)}}],
    )  # fmt: skip
    for start in range(0, active, 25):
        puts = [{"PutRequest": {"Item": run_to_item(entry(n, tenants))}} for n in range(start, min(active, start + 25))]
        client.batch_write_item(RequestItems={TABLE: puts})


def measure(active: int, tenants: int, samples: int) -> dict[str, Any]:
    """Count on moto once, recording each Query's answer; then run the handler on those answers, replayed to botocore
    (which still serialises, signs and parses each call: all the function does but wait on the network)."""
    answers: list[tuple[int, dict[str, str], bytes]] = []

    def on_query(http_response: Any, **_: Any) -> None:
        answers.append((http_response.status_code, dict(http_response.headers), http_response.content))

    with mock_aws():
        client = fresh_client()
        populate(client, active, tenants)
        client.meta.events.register("after-call.dynamodb.Query", on_query)
        with logging_to(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            counted = gauges.handler(EVENT, LocalContext(function_name="gauges"))
    sizes = [sum(item_size(item) for item in json.loads(body)["Items"]) for _, _, body in answers]
    cpu, printed, logged = [], io.StringIO(), io.StringIO()
    for _ in range(samples):
        fresh_client().meta.events.register("before-send.dynamodb", replaying(answers))
        printed.seek(0), printed.truncate(), logged.seek(0), logged.truncate()
        with logging_to(logged), contextlib.redirect_stdout(printed):
            started = time.process_time()
            gauges.handler(EVENT, LocalContext(function_name="gauges"))
            cpu.append(time.process_time() - started)
    units = sum(max(1, math.ceil(size / 4096)) * 0.5 for size in sizes)
    return {"counted": counted["runs"] + counted["sessions"], "queries": len(sizes), "bytes": sum(sizes),
            "units": units, "cpu_ms": statistics.median(cpu) * 1000,
            "emf_bytes": len(printed.getvalue().encode()), "log_bytes": len(logged.getvalue().encode())}  # fmt: skip


def replaying(answers: list[tuple[int, dict[str, str], bytes]]) -> Callable[..., AWSResponse]:
    """A before-send hook that answers each call with the next recorded answer (nothing reaches the network)."""
    replayed = iter(answers)

    def answer(request: Any, event_name: str, **_: Any) -> AWSResponse:
        assert event_name.endswith(".Query"), event_name
        status, headers, body = next(replayed)
        return AWSResponse(request.url, status, headers, MockRawResponse(body))

    return answer


def fresh_client() -> Any:
    """The DynamoDB client the handler will use (wiring's, built anew)."""
    settings.reset()
    wiring.reset()
    return wiring.aws_client("dynamodb")


@contextlib.contextmanager
def logging_to(buffer: io.StringIO) -> Iterator[None]:
    """The gauges function's log lines, at INFO as deployed, into ``buffer`` (and nowhere else)."""
    logger = logging.getLogger(gauges.logger.name)  # powertools' Logger writes through this one
    own, level = list(logger.handlers), logger.level
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(gauges.logger.registered_formatter)
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.handlers, logger.level = own, level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--active", type=int, nargs="+", default=[0, 100, 1000, 10000])
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--samples", type=int, default=5, help="replays of each count (the median's CPU time)")
    args = parser.parse_args()
    # the table the handler reads; made-up credentials: every call is answered in this process (moto, then replayed)
    os.environ.update({"STEPWISE_TABLE": TABLE, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench"})  # fmt: skip
    series = 2 * len(REPORTED)  # published every minute: each kind in each reported status
    print(
        f"one invocation, {args.tenants} tenants; a month = {INVOCATIONS:,} invocations at {MEMORY_MB} MB "
        f"(duration: the CPU time at {MEMORY_MB}/{FULL_CPU_MB} of a vCPU, plus {WAIT_PER_QUERY * 1000:.0f} ms "
        "a Query)"
    )
    print(f"{'active':>7} {'queries':>7} {'KB read':>8} {'RRU':>6} {'cpu ms':>7} {'dur ms':>7} {'EMF B':>6} "
          f"{'log B':>6} | {'reads $':>8} {'logs $':>7} {'requests $':>10} {'GB-s $':>7} {'total $':>8}")  # fmt: skip
    for active in args.active:
        m = measure(active, args.tenants, args.samples)
        assert m["counted"] == active, m
        duration = m["cpu_ms"] / 1000 * FULL_CPU_MB / MEMORY_MB + m["queries"] * WAIT_PER_QUERY
        costs = (m["units"] * INVOCATIONS * READ_UNIT, (m["emf_bytes"] + m["log_bytes"]) * INVOCATIONS / 1e9 * LOG_GB,
                 INVOCATIONS * REQUEST, duration * MEMORY_MB / 1024 * INVOCATIONS * GB_SECOND)  # fmt: skip
        print(f"{active:>7} {m['queries']:>7} {m['bytes'] / 1024:>8.1f} {m['units']:>6.1f} {m['cpu_ms']:>7.1f} "
              f"{duration * 1000:>7.0f} {m['emf_bytes']:>6} {m['log_bytes']:>6} | {costs[0]:>8.3f} {costs[1]:>7.3f} "
              f"{costs[2]:>10.3f} {costs[3]:>7.3f} {sum(costs):>8.3f}")  # fmt: skip
    print(f"plus the custom metrics: {series} series published every minute, ${series * METRIC:.2f} a month "
          f"(${METRIC:.2f} each); the schedule's events are free (EventBridge's own)")  # fmt: skip


if __name__ == "__main__":
    main()
