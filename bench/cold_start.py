"""Cold import time of each Lambda handler module: a fresh interpreter per sample, median of N.

Usage: python bench/cold_start.py [--samples 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

MODULES = [
    "functions.handlers.api",
    "functions.handlers.intake",
    "functions.handlers.step",
    "functions.handlers.tool",
    "functions.handlers.finalize",
    "functions.handlers.mark_failed",
    # imported lazily by the step function on its first invocation (the real model client):
    "functions.adapters.anthropic_model",
]
PROBE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def sample(module: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip()) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    print(f"cold import, fresh process each, {args.samples} samples (ms)   python {sys.version.split()[0]}")
    print(f"{'module':<40} {'median':>8} {'min':>8} {'max':>8}")
    for module in MODULES:
        times = [sample(module) for _ in range(args.samples)]
        print(f"{module:<40} {statistics.median(times):8.0f} {min(times):8.0f} {max(times):8.0f}")


if __name__ == "__main__":
    main()
