"""Cold start as shipped: a fresh CPython 3.13 per sample importing each handler, with files laid out as on Lambda.

The layout is the Lambda asset's, built by the same code as ``make synth`` (infra/packaging.py) for this machine's
platform: the dependency layer on the path as ``/opt/python``, the functions' code as ``/var/task``, and boto3 (which
the runtime provides: the layer leaves it out) as the runtime's. Each row is timed twice: as shipped (the ``.pyc``
``make synth`` compiles, hash-based and unchecked) and without them (``--no-compile``, as before), with
PYTHONDONTWRITEBYTECODE set, so nothing is cached between samples, as on Lambda's read-only ``/opt`` and
``/var/task``. boto3 keeps its ``.pyc`` in both (as pip installs it).

Each sample runs as on Lambda: LAMBDA_TASK_ROOT is set, so the X-Ray SDK takes its Lambda path and each function's
tracer is on (it patches botocore at import). "step: ready to call the model" is the step function's first
invocation up to the model call: its handler imported, then ``wiring.step_runner`` (the DynamoDB client, the
tools, the prices, and the ``anthropic`` SDK imported with its client built). "ready, init ahead" is the same first
invocation when SnapStart or provisioned concurrency ran the init before it (AWS_LAMBDA_INITIALIZATION_TYPE set: the
handler imports the SDK there, untimed); a snapshot's restore, which Lambda does, is not in it. The time is measured
inside the process (the interpreter's own start, ~15 ms, is not in it); wall time and the process's CPU time
(steadier on a busy machine), medians of N; min and max are the shipped row's, and the goal is issue 12's, for the
shipped wall time.

Usage: python bench/cold_start.py [--samples 5] [--rows api,intake,step,ready,ahead,tracer] [--outside-lambda]
       [--code-from ../other-checkout]
Needs a CPython 3.13 (as ``make synth``: python3.13 on PATH, pyenv's or uv's, or STEPWISE_PYTHON313) and pip's
access to the package index the first time (the layer is built into .build/, then reused).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.constants import BUILD_DIR, LAMBDA_PYTHON_VERSION, ROOT
from infra.packaging import (
    CODE_ROOT,
    build_layer,
    code_packages,
    compile_bytecode,
    lambda_python,
    requirements_hash,
)

REGION = "us-east-1"
HANDLERS = {
    "api": "functions.handlers.api",
    "intake": "functions.handlers.intake",
    "step": "functions.handlers.step",
    "tool": "functions.handlers.tool",
    "finalize": "functions.handlers.finalize",
    "mark_failed": "functions.handlers.mark_failed",
    "authorizer": "functions.handlers.authorizer",
    "workflow_ended": "functions.handlers.workflow_ended",
    "webhooks": "functions.handlers.webhooks",
    "gauges": "functions.handlers.gauges",
}
# The step function's first invocation up to its model call (no AWS call is made: clients connect on first use)
READY = (
    "import functions.handlers.step as step; from functions.adapters import wiring; "
    "from functions.adapters.settings import load; wiring.step_runner(load(step.SETTINGS), step.tracer)"
)
# With SnapStart or provisioned concurrency the init (the handler's import, and with it the model client's) runs before
# any request: what the first request still does is building the clients (a snapshot's restore is not measured here)
INIT_AHEAD = "import functions.handlers.step as step"
READY_AFTER_INIT = (
    "from functions.adapters import wiring; from functions.adapters.settings import load; "
    "wiring.step_runner(load(step.SETTINGS), step.tracer)"
)
STEP_ENVIRONMENT = {  # what StepSettings reads, as a deployment gives it (the key as a value: no secret is read)
    "STEPWISE_TABLE": "stepwise-bench",
    "STEPWISE_MODEL_PROVIDER": "anthropic",
    "ANTHROPIC_API_KEY": "sk-ant-bench",
    "STEPWISE_MODEL_TIMEOUT_SECONDS": "150",
    "STEPWISE_RESULTS_BUCKET": "stepwise-bench-results",
}
GOALS = {"api": 200, "intake": 200, "step: ready to call the model": 600, "step: ready, init ahead (SnapStart)": 600}
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


def host_platform() -> str:
    return "manylinux2014_aarch64" if platform.machine() in ("aarch64", "arm64") else "manylinux2014_x86_64"


def runtime_boto3(target: Path) -> Path:
    """boto3 at the version the project pins (requirements-dev.txt), for this machine, compiled as pip does."""
    if (target / ".complete").exists():
        return target
    pin = re.search(r"^boto3==\S+", (ROOT / "requirements-dev.txt").read_text(), re.MULTILINE)
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", pin.group(0) if pin else
         "boto3", "--target", str(staging), "--platform", host_platform(), "--implementation", "cp",
         "--python-version", LAMBDA_PYTHON_VERSION, "--only-binary=:all:", "--no-compile"],
        check=True,
    )  # fmt: skip
    subprocess.run([lambda_python(), "-m", "compileall", "-q", "-j", "0", str(staging)], check=True)
    (staging / ".complete").write_text("")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def layouts(where: Path, code_from: Path | None = None) -> dict[str, tuple[Path, Path]]:
    """(layer, code) as shipped and without .pyc; the layer is cached in .build/ by its requirements.
    ``code_from``: another checkout's functions/ and tools/ (to time an earlier commit's code on the same layer)."""
    cached = BUILD_DIR / f"bench-{requirements_hash()}-{platform.machine()}"
    layer = build_layer(cached / "layer", platform=host_platform()) / "python"
    bare_layer = cached / "layer-no-pyc"
    if not bare_layer.exists():
        shutil.copytree(layer, bare_layer.with_suffix(".tmp"), ignore=shutil.ignore_patterns("__pycache__"))
        bare_layer.with_suffix(".tmp").rename(bare_layer)
    code, bare_code = where / "task", where / "task-no-pyc"
    packages = [code_from / p.name for p in code_packages() if (code_from / p.name).is_dir()] if code_from else None
    for package in packages or code_packages():
        for target in (code, bare_code):
            shutil.copytree(package, target / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    compile_bytecode(code, CODE_ROOT)
    return {"no .pyc": (bare_layer, bare_code), ".pyc (shipped)": (layer, code)}


def environment(layer: Path, code: Path, runtime: Path, *, outside_lambda: bool) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env |= {
        "PYTHONPATH": os.pathsep.join(map(str, (code, layer, runtime))),  # Lambda's order: task, layer, runtime
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        **STEP_ENVIRONMENT,
    }
    if not outside_lambda:
        env |= {"LAMBDA_TASK_ROOT": str(code), "AWS_LAMBDA_FUNCTION_NAME": "bench"}
    return env


def sample(python: str, measured: str, env: dict[str, str], setup: str = "pass") -> tuple[float, float]:
    probe = PROBE.format(setup=setup, measured=measured)  # the setup runs before the clock starts
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise SystemExit(f"the probe failed: {measured}\n{out.stderr}")
    wall, cpu = out.stdout.split()[-2:]
    return float(wall) * 1000, float(cpu) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--rows", help="comma-separated: handler names (api, step, ...), ready, tracer; default all")
    parser.add_argument("--outside-lambda", action="store_true", help="without LAMBDA_TASK_ROOT (the local stack)")
    parser.add_argument("--code-from", type=Path, help="time another checkout's functions/ and tools/ (e.g. main's)")
    args = parser.parse_args()
    python = lambda_python()
    rows = {f"import {name}": f"import {module}" for name, module in HANDLERS.items()}
    rows["step: ready to call the model"] = READY
    rows["step: ready, init ahead (SnapStart)"] = READY_AFTER_INIT
    wanted = set(args.rows.split(",")) if args.rows else None
    if wanted is not None:
        rows = {label: code for label, code in rows.items() if label.split()[-1] in wanted or
                ("ready" in wanted and label == "step: ready to call the model") or
                ("ahead" in wanted and "init ahead" in label)}  # fmt: skip
    with tempfile.TemporaryDirectory() as where:
        runtime = runtime_boto3(BUILD_DIR / f"bench-runtime-{platform.machine()}")
        variants = {name: environment(*paths, runtime, outside_lambda=args.outside_lambda)
                    for name, paths in layouts(Path(where), args.code_from).items()}  # fmt: skip
        version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                                 text=True, check=True).stdout.strip()  # fmt: skip
        where_ = "outside Lambda" if args.outside_lambda else "as on Lambda (tracer on)"
        code = f"code of {args.code_from}" if args.code_from else "this checkout's code"
        print(f"cold start, fresh CPython {version} per sample, {args.samples} samples, Lambda's layout, {where_}, "
              f"{code} ({platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")  # fmt: skip
        names = list(variants)
        header = "".join(f"{name + ': wall':>22}{'cpu':>6}" for name in names)
        print(f"{'(ms, medians)':<34}{header}{'min':>7}{'max':>7}{'goal':>7}")
        for label, code in rows.items():
            shown, walls = "", []
            ahead = code == READY_AFTER_INIT
            for env in variants.values():
                env = {**env, "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"} if ahead else env
                setup = INIT_AHEAD if ahead else "pass"
                samples = [sample(python, code, env, setup) for _ in range(args.samples)]
                walls = [wall for wall, _ in samples]
                shown += f"{statistics.median(walls):>22.0f}{statistics.median(cpu for _, cpu in samples):>6.0f}"
            goal = GOALS.get(label.removeprefix("import "))
            met = " ok" if statistics.median(walls) <= (goal or 0) else " MISSED"
            mark = "" if goal is None else f"{goal:>6}{met}"
            print(f"{label:<34}{shown}{min(walls):>7.0f}{max(walls):>7.0f} {mark}")
        if wanted is None or "tracer" in wanted:
            env = variants[names[-1]]
            tracer = [sample(python, TRACER, env, TRACER_SETUP) for _ in range(args.samples)]
            wall, cpu = statistics.median(w for w, _ in tracer), statistics.median(c for _, c in tracer)
            print(f"{'(of each, shipped: the X-Ray tracer)':<34}{'':>28}{wall:>22.0f}{cpu:>6.0f}")


if __name__ == "__main__":
    main()
