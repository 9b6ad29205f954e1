"""Cold start as shipped: a fresh CPython 3.13 per sample importing each handler, with files laid out as on Lambda.

The layout is the Lambda asset's, built by the same code as ``make synth`` (infra/packaging.py) for this machine's
platform: the dependency layer on the path as ``/opt/python``, the functions' code as ``/var/task``, and boto3 (which
the runtime provides: the layer leaves it out) as the runtime's. Each row is timed twice: as shipped (the ``.pyc``
``make synth`` compiles, hash-based and unchecked) and without them (``--no-compile``, as before), with
PYTHONDONTWRITEBYTECODE set, so nothing is cached between samples, as on Lambda's read-only ``/opt`` and
``/var/task``. boto3 keeps its ``.pyc`` in both (as pip installs it).

Each sample runs as on Lambda: LAMBDA_TASK_ROOT is set, so the X-Ray SDK takes its Lambda path and each function's
tracer is on (it patches botocore at import). "import <function>" is its handler's import alone (no
AWS_LAMBDA_INITIALIZATION_TYPE: what issue 12 measured as the cold import). On Lambda a cold request waits on two
parts, timed apart: the init ("init on demand": the import with AWS_LAMBDA_INITIALIZATION_TYPE=on-demand, in which
the api, authorizer, intake, step and tool functions build what their first request would:
functions/handlers/warmup.py), and what the first invocation still builds after that init ("first request's build":
the settings, the AWS clients and use cases of its routes or records, the models it validates; for the step, "ready,
after that init": up to its model call, ``wiring.step_runner``, the Anthropic client built). "step: ready to call
the model" is that whole work in one invocation (the handler imported, then the step runner with the SDK imported
and its client built), as before the init built any of it; "ready, init ahead" is the first invocation after a
SnapStart init (a snapshot's restore, which Lambda does, is not in it). The time is measured inside the process (the
interpreter's own start, ~15 ms, is not in it); wall time and the process's CPU time (steadier on a busy machine),
medians of N; min and max are the shipped row's, and the goal is issue 12's, for the shipped CPU time (wall on an
idle machine).

"On Lambda, estimated" (last table): an on-demand init runs on a full vCPU (up to 10 s) and an invocation on the
share of one its memory buys (memory / 1,769 MB; infra/functions.py gives each function's), so a cold request's
wall time is about init CPU + first invocation CPU x 1,769 / memory. That is a model from this machine's CPU times,
not a measurement on Lambda (its ARM64 CPUs differ).

Usage: python bench/cold_start.py [--samples 5] [--rows api,intake,step,init,ready,ahead,tracer] [--outside-lambda]
       [--code-from ../other-checkout] [--no-pyc]
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
from dataclasses import dataclass, field
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
# After an init (the handler's import, and with it what warmup.py builds): what the first request still does up to
# the model call (a snapshot's restore is not measured here)
READY_AFTER_INIT = (
    "from functions.adapters import wiring; from functions.adapters.settings import load; "
    "wiring.step_runner(load(step.SETTINGS), step.tracer)"
)
# What a function's first request builds (its routes' and records' clients, use cases and models), written
# here rather than taken from the handlers, so a checkout whose init builds none of it is timed the same way
FIRST_REQUEST = {
    "api": (
        "from functions.adapters import wiring; from functions.adapters.settings import load; "
        "from functions.agent.models import Run, RunRequest; from functions.handlers.tenancy import deployment_auth; "
        "s = load(handler.SETTINGS); deployment_auth(s); wiring.rate_limiter(s); wiring.submitter(s); wiring.store(s); "
        "wiring.notifier(s); wiring.sessions(s); RunRequest.model_rebuild(); Run.model_rebuild()"
    ),
    "intake": (
        "from functions.adapters import wiring; from functions.adapters.settings import load; "
        "from functions.handlers.events import IntakeMessage; s = load(handler.SETTINGS); wiring.intake(s); "
        "wiring.notifier(s); IntakeMessage.model_rebuild()"
    ),
    "authorizer": (
        "from functions.adapters import wiring; from functions.adapters.settings import load; "
        "wiring.api_keys(load(handler.SETTINGS))"
    ),
    "step": READY_AFTER_INIT.replace("step.", "handler."),
    "tool": (
        "from functions.adapters import wiring; from functions.adapters.settings import load; "
        "wiring.tool_runner(load(handler.SETTINGS), handler.tracer)"
    ),
}
ON_DEMAND = {"AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand"}
SNAP_START = {"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"}
VCPU_MB = 1769  # Lambda's memory for one vCPU


@dataclass(frozen=True)
class Row:
    label: str
    measured: str
    setup: str = "pass"
    env: dict[str, str] = field(default_factory=dict)
    goal: int | None = None  # ms of CPU (issue 12's goal, for an idle machine's wall time)
    selector: str = ""  # the --rows name that selects it


def first_label(name: str) -> str:
    """The row of what function ``name``'s first invocation builds after an on-demand init."""
    return f"{name}: " + ("ready, after that init" if name == "step" else "first request's build")


def rows() -> list[Row]:
    table = [Row(f"import {name}", f"import {module}", goal=200 if name in ("api", "intake") else None, selector=name)
             for name, module in HANDLERS.items()]  # fmt: skip
    for name in FIRST_REQUEST:
        module = HANDLERS[name]
        table.append(Row(f"{name}: init on demand", f"import {module}", env=ON_DEMAND, selector="init"))
        table.append(Row(first_label(name), FIRST_REQUEST[name], f"import {module} as handler", ON_DEMAND,
                         selector="init"))  # fmt: skip
    table.append(Row("step: ready to call the model", READY, goal=600, selector="ready"))
    table.append(Row("step: ready, init ahead (SnapStart)", READY_AFTER_INIT, "import functions.handlers.step as step",
                     SNAP_START, goal=600, selector="ahead"))  # fmt: skip
    return table


SETTINGS_ENVIRONMENT = {  # what the settings read, as a deployment gives them (the key as a value: no secret read)
    "STEPWISE_TABLE": "stepwise-bench",
    "STEPWISE_MODEL_PROVIDER": "anthropic",
    "ANTHROPIC_API_KEY": "sk-ant-bench",
    "STEPWISE_MODEL_TIMEOUT_SECONDS": "150",
    "STEPWISE_RESULTS_BUCKET": "stepwise-bench-results",
    "STEPWISE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/stepwise-bench",
    "STEPWISE_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:stepwise-bench",
}
# wall time, and the process's CPU time (steadier than wall time on a busy machine)
PROBE = (
    "{setup}\nimport sys, time; t, c = time.perf_counter(), time.process_time(); {measured}; "
    "print(time.perf_counter() - t, time.process_time() - c, len(sys.modules))"
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
        **SETTINGS_ENVIRONMENT,
    }
    if not outside_lambda:
        env |= {"LAMBDA_TASK_ROOT": str(code), "AWS_LAMBDA_FUNCTION_NAME": "bench"}
    return env


def sample(python: str, measured: str, env: dict[str, str], setup: str = "pass") -> tuple[float, float, int]:
    """(wall ms, CPU ms, modules loaded at the end) of one fresh interpreter running ``measured`` after ``setup``."""
    probe = PROBE.format(setup=setup, measured=measured)  # the setup runs before the clock starts
    code = env["PYTHONPATH"].split(os.pathsep)[0]  # the working directory is the code's, as on Lambda (/var/task)
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False, env=env, cwd=code)
    if out.returncode != 0:
        raise SystemExit(f"the probe failed: {measured}\n{out.stderr}")
    wall, cpu, modules = out.stdout.split()[-3:]
    return float(wall) * 1000, float(cpu) * 1000, int(modules)


def wanted(row: Row, names: set[str] | None) -> bool:
    return names is None or row.selector in names or row.label.split(":")[0] in names


def lambda_estimate(cpu: dict[str, float]) -> None:
    """A cold request's wall time on Lambda, modelled from the CPU times: the init on a full vCPU, the first
    invocation on its memory's share (memory / 1,769 MB), for the functions whose init and first request were timed."""
    from infra.functions import FUNCTIONS

    print(f"\non Lambda, estimated (ms): init CPU + first invocation CPU x {VCPU_MB:,} / memory (on demand)")
    print(f"{'':<10}{'memory':>8}{'init':>8}{'first':>8}{'cold request':>14}")
    for name in FIRST_REQUEST:
        init, first = cpu.get(f"{name}: init on demand"), cpu.get(first_label(name))
        if init is None or first is None:
            continue
        share = FUNCTIONS[name].memory_mb / VCPU_MB
        cold = init + first / share
        print(f"{name:<10}{FUNCTIONS[name].memory_mb:>6}MB{init:>8.0f}{first:>8.0f}{cold:>14.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--rows", help="comma-separated: handler names (api, step, ...), init, ready, ahead, tracer")
    parser.add_argument("--outside-lambda", action="store_true", help="without LAMBDA_TASK_ROOT (the local stack)")
    parser.add_argument("--code-from", type=Path, help="time another checkout's functions/ and tools/ (e.g. main's)")
    parser.add_argument("--no-pyc", action="store_true", help="also time the layout without .pyc (as before them)")
    args = parser.parse_args()
    python = lambda_python()
    names = set(args.rows.split(",")) if args.rows else None
    with tempfile.TemporaryDirectory() as where:
        runtime = runtime_boto3(BUILD_DIR / f"bench-runtime-{platform.machine()}")
        variants = {name: environment(*paths, runtime, outside_lambda=args.outside_lambda)
                    for name, paths in layouts(Path(where), args.code_from).items()
                    if args.no_pyc or name != "no .pyc"}  # fmt: skip
        version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                                 text=True, check=True).stdout.strip()  # fmt: skip
        where_ = "outside Lambda" if args.outside_lambda else "as on Lambda (tracer on)"
        code = f"code of {args.code_from}" if args.code_from else "this checkout's code"
        print(f"cold start, fresh CPython {version} per sample, {args.samples} samples, Lambda's layout, {where_}, "
              f"{code} ({platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")  # fmt: skip
        header = "".join(f"{name + ': wall':>22}{'cpu':>6}{'modules':>8}" for name in variants)
        print(f"{'(ms, medians)':<40}{header}{'min':>7}{'max':>7}{'goal':>7}")
        shipped_cpu: dict[str, float] = {}
        for row in (row for row in rows() if wanted(row, names)):
            shown, cpu = "", 0.0
            for env in variants.values():
                samples = [sample(python, row.measured, env | row.env, row.setup) for _ in range(args.samples)]
                walls = [wall for wall, _, _ in samples]
                cpu = statistics.median(c for _, c, _ in samples)
                shown += f"{statistics.median(walls):>22.0f}{cpu:>6.0f}{samples[-1][2]:>8}"
            shipped_cpu[row.label] = cpu
            mark = "" if row.goal is None else f"{row.goal:>6}{' ok' if cpu <= row.goal else ' MISSED'}"
            print(f"{row.label:<40}{shown}{min(walls):>7.0f}{max(walls):>7.0f} {mark}")
        if names is None or "tracer" in names:
            env = variants[".pyc (shipped)"]
            tracer = [sample(python, TRACER, env, TRACER_SETUP) for _ in range(args.samples)]
            wall, cpu = statistics.median(w for w, _, _ in tracer), statistics.median(c for _, c, _ in tracer)
            print(f"{'(of each, shipped: the X-Ray tracer)':<40}{wall:>22.0f}{cpu:>6.0f}")
        lambda_estimate(shipped_cpu)


if __name__ == "__main__":
    main()
