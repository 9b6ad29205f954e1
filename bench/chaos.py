"""Fault injection on the local stack: N runs through a provider that fails retryably at a given rate,
crashing step Lambdas, conflicting DynamoDB writes, duplicate intake deliveries and cancels while runs work.
Prints what happened to every run and audits the accounting and the tool calls (lost runs, double-charged steps
and calls without a result must all be 0).

Usage: python bench/chaos.py [--runs 200] [--retryable 0.3] [--cancels 0.1] [--seed 7]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.chaos import Faults, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--retryable", type=float, default=0.3, help="share of model calls failing retryably")
    parser.add_argument("--huge", type=float, default=0.02)
    parser.add_argument("--duplicates", type=float, default=0.2, help="share of runs delivered to intake twice")
    parser.add_argument("--crashes", type=float, default=0.05, help="share of step invocations dying after the call")
    parser.add_argument("--conflicts", type=float, default=0.05, help="share of transactions losing a write race")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cancels", type=float, default=0.1, help="share of runs cancelled while they work")
    args = parser.parse_args()
    # moto's Step Functions interpreter logs an execution stopped inside its Map (a cancel) as an error, with the
    # whole state machine: the runs' own outcomes are what this audits
    logging.getLogger("moto.stepfunctions").setLevel(logging.CRITICAL)
    faults = Faults(args.retryable, args.huge, args.duplicates, args.crashes, args.conflicts, args.seed, args.cancels)
    print(f"chaos: {args.runs} runs, {faults}", flush=True)
    report = run_chaos(args.runs, faults)
    print("\n".join(report.lines()))
    for code, example in report.extra.get("failure_examples", {}).items():
        print(f"  e.g. {code}: {example}")
    for line in report.accounting_mismatches[:10]:
        print("  mismatch:", line)
    for line in report.unanswered_calls[:10]:
        print("  unanswered:", line)
    return 0 if report.lost == report.double_charged_steps == len(report.unanswered_calls) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
