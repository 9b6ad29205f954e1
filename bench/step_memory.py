"""What the step function uses: peak memory (RSS) and CPU time per step, measured in a process that holds only what
its Lambda holds. What the step function's memory size is chosen from (infra/functions.py).

moto (DynamoDB, S3) runs as a server in this process and the fake Messages API on 127.0.0.1; a fresh interpreter
then does what a step Lambda container does, with the step function's environment from the synthesised template:
imports the handler (the X-Ray SDK too, as the tracer does on Lambda), and takes the steps of one run through the
real handler and the real anthropic SDK: each asks for the calculator (run in the step), the last answers. Each
answer carries ``--answer-chars`` of text, so the history each step reads and sends grows as a long run's does.
Printed: the process's peak RSS (Linux's VmHWM) before the import, after it, after the first step (the SDK's lazy
imports, the first call) and after the last; Python's own peak allocation during the last step (tracemalloc); CPU
time per warm step (median), and what that becomes at Lambda's CPU share for a few memory sizes (1,769 MB = 1 vCPU).

Usage: python bench/step_memory.py [--steps 40] [--answer-chars 4000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from functions.adapters.dynamodb_store import DynamoDBRunStore  # noqa: E402
from functions.agent.models import Budget, RunRequest  # noqa: E402
from stepwise.local.template import synthesize, topology  # noqa: E402
from tests.fakes import core  # noqa: E402
from tests.fakes.anthropic_server import FakeAnthropic, message  # noqa: E402

TABLE, BUCKET, TENANT = "stepwise-bench", "stepwise-bench-results", "bench"
FULL_VCPU_MB = 1769  # Lambda: memory buys CPU in proportion; 1,769 MB is one vCPU
SIZES_MB = (256, 512, 1024)

CHILD = """
import json, statistics, sys, time, tracemalloc
def rss():  # the peak RSS (VmHWM, MB): ru_maxrss would keep the parent's across fork and exec
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
figures = {"start": rss()}
import aws_xray_sdk.core  # the tracer's SDK: imported on Lambda, where the tracer is on
from functions.handlers import step
from stepwise.local.lambdas import LocalContext
figures["imported"] = rss()
tenant, run_id, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
cpu = []
for number in range(steps):
    if number == steps - 1:
        tracemalloc.start()
    started = time.process_time()
    state = step.handler({"tenant": tenant, "run_id": run_id, "step": number, "in_step": True},
                         LocalContext(function_name="step"))
    cpu.append((time.process_time() - started) * 1000)
    if number == 0:
        figures["first_step"] = rss()
    assert state["next"] == ("finish" if number == steps - 1 else "step"), state
figures["peak_alloc_last_step"] = tracemalloc.get_traced_memory()[1] / 2**20
figures["last_step"] = rss()
figures["cpu_first_ms"] = cpu[0]
figures["cpu_warm_ms"] = statistics.median(cpu[1:])
figures["cpu_last_ms"] = cpu[-1]
figures["final"] = state["next"]
print(json.dumps(figures))
"""


def answers(steps: int, chars: int) -> Any:
    """The fake Messages API: the calculator on every call but the last, which answers; each with ``chars`` of text."""
    calls = {"n": 0}

    def reply(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        calls["n"] += 1
        text = {"type": "text", "text": "x" * chars}
        if calls["n"] >= steps:
            return 200, message([text], "end_turn")
        use = {"type": "tool_use", "id": f"toolu_{calls['n']}", "name": "calculator", "input": {"expression": "6*7"}}
        return 200, message([text, use], "tool_use", input_tokens=1000, output_tokens=100)

    return reply


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--answer-chars", type=int, default=4000)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server: no line per request
    template = synthesize()
    shape = topology(template)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    aws = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}  # fmt: skip
    os.environ.update(aws)
    try:
        dynamodb = boto3.client("dynamodb")
        indexes = {"GlobalSecondaryIndexes": shape.table_indexes} if shape.table_indexes else {}
        dynamodb.create_table(TableName=TABLE, KeySchema=shape.table_key_schema,
                              AttributeDefinitions=shape.table_attributes, BillingMode="PAY_PER_REQUEST",
                              **indexes)  # fmt: skip
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        store = DynamoDBRunStore(TABLE, dynamodb)
        run = (
            core.submitter(store)
            .submit(
                TENANT, RunRequest(input="What is 6*7?", model="claude-haiku-4-5", budget=Budget(max_steps=args.steps))
            )
            .run
        )
        with FakeAnthropic(*([answers(args.steps, args.answer_chars)] * args.steps)) as fake:
            environment = shape.environment({
                "AWS::DynamoDB::GlobalTable": TABLE, "AWS::S3::Bucket": BUCKET, "AWS::SecretsManager::Secret": None,
                "STEPWISE_QUEUE_URL": "unused", "STEPWISE_WEBHOOKS_QUEUE_URL": "unused",
                "AWS::StepFunctions::StateMachine": "unused", "AWS::Lambda::Url": "https://unused.example/",
            })  # fmt: skip
            child_env = {**os.environ, **environment, **aws, "ANTHROPIC_API_KEY": "sk-ant-bench",
                         "ANTHROPIC_BASE_URL": fake.base_url, "STEPWISE_MODEL_PROVIDER": "anthropic",
                         "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true",
                         "POWERTOOLS_LOG_LEVEL": "ERROR", "PYTHONPATH": str(ROOT),
                         "STEPWISE_STEP_LOOP_STEPS": "1"}  # one step an invocation: measured step by step  # fmt: skip
            child_env.pop("STEPWISE_ANTHROPIC_SECRET_ARN", None)
            out = subprocess.run([sys.executable, "-c", CHILD, TENANT, run.run_id, str(args.steps)], env=child_env,
                                 capture_output=True, text=True, check=False)  # fmt: skip
    finally:
        server.stop()
    if out.returncode != 0:
        print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
        return 1
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"step function, {args.steps} steps of one run ({args.answer_chars:,} characters of text per answer), "
          f"python {sys.version.split()[0]}")  # fmt: skip
    print(
        f"  peak RSS: start {figures['start']:.0f} MB, handler imported {figures['imported']:.0f} MB, after the "
        f"first step {figures['first_step']:.0f} MB, after step {args.steps} {figures['last_step']:.0f} MB"
    )
    print(f"  Python allocations, peak during step {args.steps}: {figures['peak_alloc_last_step']:.1f} MB")
    print(
        f"  CPU per step: first {figures['cpu_first_ms']:.0f} ms (the SDK's imports and client), warm median "
        f"{figures['cpu_warm_ms']:.0f} ms, step {args.steps} {figures['cpu_last_ms']:.0f} ms"
    )
    for size in SIZES_MB:
        share = size / FULL_VCPU_MB
        print(
            f"  at {size:>4} MB ({share:.2f} vCPU): a warm step's CPU ~{figures['cpu_warm_ms'] / share:.0f} ms, "
            f"the first ~{figures['cpu_first_ms'] / share:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
