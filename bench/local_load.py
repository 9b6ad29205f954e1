"""The local stack under load: N concurrent POST /runs (no client retries) and the cost of moto's transactions as
the table grows.

* ``runs``: starts the local stack (offline stub model), does one warm-up run, then, in each of --bursts bursts,
  opens N connections at once (a barrier), each POSTing a run with no retry; prints the answers (202s, resets,
  other errors), the time until every run is terminal, and the process's memory before and after (RSS, and with
  --tracemalloc the Python heap), per run; then what the runs left: the table's items and bytes per run, and the
  Step Functions event histories kept and pruned.
* ``transactions``: a 7-item TransactWriteItems on tables of 0, 1,000 and 6,000 items, with moto as it is and with
  the local stack's patch (stepwise/local/moto_dynamodb.py): the patched cost does not grow with the table.

Usage: python bench/local_load.py [runs|transactions|all] [--runs 300] [--bursts 2] [--histories 100] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stepwise.local import moto_dynamodb, moto_stepfunctions
from stepwise.local.stack import TABLE_NAME, LocalStack
from tests.fakes.load import call as _call
from tests.fakes.load import submit

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "BUDGET_EXCEEDED", "TIMED_OUT"}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_terminal(stack: LocalStack, run_ids: list[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    pending, statuses = set(run_ids), {}
    while pending and time.monotonic() < deadline:
        for run_id in list(pending):
            _, run = _call(stack, "GET", f"/runs/{run_id}")
            if run.get("status") in TERMINAL:
                pending.discard(run_id)
                statuses[run["status"]] = statuses.get(run["status"], 0) + 1
        time.sleep(0.5)
    statuses["not terminal"] = len(pending)
    while stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn, statusFilter="RUNNING")["executions"]:
        time.sleep(0.2)  # the executions' last states (Finalize, Done) run after the run's status is final
    return statuses


def bench_runs(count: int, bursts: int, histories: int, trace: bool, timeout: float) -> None:
    """``bursts`` bursts of ``count`` concurrent POST /runs, one after the other, each waited for: the first burst's
    growth includes the allocator's high-water mark (arenas, thread stacks of ``count`` concurrent connections),
    the later ones' is what each run keeps."""
    with LocalStack(port=0, histories=histories) as stack:
        _, accepted = _call(stack, "POST", "/runs", {"input": "What is 6 * 7?"})  # warm-up: imports, clients
        wait_terminal(stack, [accepted["run_id"]], 120)
        finished = 1
        gc.collect()
        if trace:
            tracemalloc.start()
        print(f"{bursts} burst(s) of {count} concurrent POST /runs, no client retries; the event histories of the "
              f"last {histories} finished executions kept")  # fmt: skip
        for burst in range(1, bursts + 1):
            rss_before, heap_before = rss_mb(), tracemalloc.get_traced_memory()[0] / 2**20
            started = time.monotonic()
            answers, run_ids = submit(stack, count)
            submitted = time.monotonic() - started
            statuses = wait_terminal(stack, run_ids, timeout)
            took = time.monotonic() - started
            time.sleep(3)  # a janitor pass (stack.py): finished threads forgotten, older histories pruned
            gc.collect()
            rss_after, heap_after = rss_mb(), tracemalloc.get_traced_memory()[0] / 2**20
            finished += len(run_ids)
            resets = answers.get("ConnectionResetError", 0)
            errors = sum(n for kind, n in answers.items() if kind not in ("202", "ConnectionResetError"))
            done = max(len(run_ids), 1)
            print(f"burst {burst}: {answers.get('202', 0)} accepted, {resets} reset, {errors} other errors {answers}; "
                  f"all answered in {submitted:.1f} s, all terminal in {took:.1f} s: {statuses}")  # fmt: skip
            grown = (rss_after - rss_before) * 1024 / done
            line = f"  RSS {rss_before:.0f} -> {rss_after:.0f} MB: {grown:.0f} KB per run"
            if trace:
                line += (f"; Python heap (tracemalloc) {heap_before:.1f} -> {heap_after:.1f} MB: "
                         f"{(heap_after - heap_before) * 1024 / done:.0f} KB per run")  # fmt: skip
            print(line)
        items, stored = table_size(stack)
        kept, pruned = execution_histories()
        print(f"kept after {finished} runs: the table's items {items} ({items / finished:.1f} a run), "
              f"{stored / finished:,.0f} bytes a run as DynamoDB counts them; Step Functions: {kept} executions' "
              f"event histories kept, {pruned} pruned (their records kept)")  # fmt: skip


def table_size(stack: LocalStack) -> tuple[int, int]:
    """The table's items and their bytes by DynamoDB's size rules (what the runs stored: kept, as DynamoDB keeps
    it)."""
    from functions.adapters.dynamodb_history import item_bytes

    items = stored = 0
    for page in stack.dynamodb.get_paginator("scan").paginate(TableName=TABLE_NAME):
        items += len(page["Items"])
        stored += sum(item_bytes(item) for item in page["Items"])
    return items, stored


def execution_histories() -> tuple[int, int]:
    """moto's executions whose event histories are kept, and those pruned (stepwise/local/moto_stepfunctions.py)."""
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    executions = [
        execution
        for account in stepfunctions_parser_backends.values()
        for backend in account.values()
        for machine in backend.state_machines
        for execution in machine.executions
    ]
    pruned = sum(1 for execution in executions if moto_stepfunctions.is_pruned(execution))
    return len(executions) - pruned, pruned


def bench_transactions(sizes: tuple[int, ...] = (0, 1000, 6000), repeats: int = 30) -> None:
    import boto3
    from moto import mock_aws

    def measure() -> list[float]:
        timings = []
        with mock_aws():
            client = boto3.client("dynamodb", region_name="us-east-1")
            client.create_table(
                TableName="t",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
            filled = 0
            for size in sizes:
                while filled < size:
                    batch = [
                        {
                            "PutRequest": {
                                "Item": {
                                    "pk": {"S": f"run#{i // 20}"},
                                    "sk": {"S": f"step#{i:06d}"},
                                    "body": {"S": "x" * 500},
                                }
                            }
                        }
                        for i in range(filled, min(size, filled + 25))
                    ]
                    client.batch_write_item(RequestItems={"t": batch})
                    filled += len(batch)
                started = time.perf_counter()
                for n in range(repeats):
                    client.transact_write_items(
                        TransactItems=[
                            {
                                "Put": {
                                    "TableName": "t",
                                    "Item": {"pk": {"S": f"bench#{size}#{n}"}, "sk": {"S": f"i{i}"}, "n": {"N": "1"}},
                                }
                            }
                            for i in range(7)
                        ]
                    )
                timings.append((time.perf_counter() - started) * 1000 / repeats)
        return timings

    plain = measure()
    moto_dynamodb.install()
    patched = measure()
    print("a 7-item TransactWriteItems, ms (mean of", repeats, "):")
    for size, before, after in zip(sizes, plain, patched, strict=True):
        print(f"  table of {size:>5} items: moto {before:7.1f} ms, local stack (patched) {after:5.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=("runs", "transactions", "all"), default="all")
    parser.add_argument("--runs", type=int, default=300, help="concurrent POST /runs (a burst)")
    parser.add_argument("--bursts", type=int, default=2, help="bursts, one after the other (default: 2)")
    parser.add_argument("--histories", type=int, default=moto_stepfunctions.DEFAULT_HISTORIES,
                        help="finished executions whose event histories the local stack keeps")  # fmt: skip
    parser.add_argument("--tracemalloc", action="store_true", help="also the Python heap (slows everything ~3x)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for every run to end")
    args = parser.parse_args()
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    if args.what in ("transactions", "all"):
        bench_transactions()  # first: it compares moto before and after the patch the local stack installs
    if args.what in ("runs", "all"):
        bench_runs(args.runs, args.bursts, args.histories, args.tracemalloc, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
