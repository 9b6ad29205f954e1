"""Cold import time of each Lambda handler module: a fresh interpreter per sample, median of N.

Each sample runs as on Lambda: LAMBDA_TASK_ROOT is set, so the X-Ray SDK takes its Lambda path and each function's
tracer is on (it patches botocore at import). Outside Lambda the SDK also builds an X-Ray client for sampling rules
at import (~130 ms more), which a function never does; --outside-lambda measures that instead.
The X-Ray SDK marks itself initialised in /tmp/.aws-xray/ (its Lambda path does). The last row is the tracer's
own share of each handler's time, measured alone (the wall-clock medians move more than that on a busy machine).

Usage: python bench/cold_start.py [--samples 5] [--outside-lambda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

MODULES = [
    "functions.handlers.api",
    "functions.handlers.intake",
    "functions.handlers.step",
    "functions.handlers.tool",
    "functions.handlers.finalize",
    "functions.handlers.mark_failed",
    "functions.handlers.authorizer",
    "functions.handlers.workflow_ended",
    "functions.handlers.webhooks",
    "functions.handlers.gauges",
    # imported lazily by the step function on its first invocation (the real model client):
    "functions.adapters.anthropic_model",
]
REGION = "us-east-1"
# wall time, and the process's CPU time (steadier than wall time on a busy machine)
PROBE = (
    "{setup}\nimport time; t, c = time.perf_counter(), time.process_time(); {measured}; "
    "print(time.perf_counter() - t, time.process_time() - c)"
)
# What a function's tracer adds to its cold start, alone: made once the rest is imported and a boto3 client exists
# (as on a function's first invocation), so the botocore modules a client loads anyway are not counted.
TRACER_SETUP = (
    "import boto3, functions.adapters.wiring; from aws_lambda_powertools import Tracer; "
    f"boto3.client('dynamodb', region_name={REGION!r})"
)
TRACER = "Tracer(service='bench', auto_patch=True, patch_modules=('botocore',))"


def sample(measured: str, environment: dict[str, str], setup: str = "pass") -> tuple[float, float]:
    probe = PROBE.format(setup=setup, measured=measured)  # the setup runs before the clock starts
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=environment)
    wall, cpu = out.stdout.split()
    return float(wall) * 1000, float(cpu) * 1000


def report(name: str, samples: list[tuple[float, float]]) -> None:
    times, cpu = [wall for wall, _ in samples], [cpu for _, cpu in samples]
    print(f"{name:<40} {statistics.median(times):8.0f} {min(times):8.0f} {max(times):8.0f} "
          f"{statistics.median(cpu):8.0f}")  # fmt: skip


def lambda_environment(task_root: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("POWERTOOLS_TRACE_DISABLED", "_X_AMZN_TRACE_ID")}
    return {**environment, "LAMBDA_TASK_ROOT": task_root, "AWS_LAMBDA_FUNCTION_NAME": "bench", "AWS_REGION": REGION}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--outside-lambda", action="store_true", help="without LAMBDA_TASK_ROOT (the local stack)")
    args = parser.parse_args()
    where = "outside Lambda" if args.outside_lambda else "as on Lambda (tracer on)"
    print(f"cold import, fresh process each, {args.samples} samples (ms), {where}   python {sys.version.split()[0]}")
    print(f"{'module':<40} {'median':>8} {'min':>8} {'max':>8} {'cpu med':>8}")
    with tempfile.TemporaryDirectory() as task_root:
        environment = dict(os.environ) if args.outside_lambda else lambda_environment(task_root)
        for module in MODULES:
            report(module, [sample(f"import {module}", environment) for _ in range(args.samples)])
        report("(of each: the X-Ray tracer)", [sample(TRACER, environment, TRACER_SETUP) for _ in range(args.samples)])


if __name__ == "__main__":
    main()
