"""The step function's init: on Lambda it imports the model client there (on demand the init has a full vCPU; with
SnapStart or provisioned concurrency nothing waits on it), on demand it also builds the adapters the first step uses
(functions/handlers/warmup.py), and a restored environment reseeds the random state its snapshot shares with every
other environment restored from it. Outside Lambda (tests, the local stack) it does neither."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Lambda's SnapStart runtime hooks, as the runtime provides them (a module named snapshot_restore_py)
HOOKS = """registered = []
def register_after_restore(func, *args, **kwargs):
    registered.append(func)
    return func
"""
PROBE = (
    "import random, sys, functions.handlers.step, snapshot_restore_py as hooks; "
    "from functions.adapters import wiring; "
    "print('anthropic' in sys.modules, hooks.registered == [random.seed], wiring.step_store.cache_info().currsize)"
)
STEP_SETTINGS = {"STEPWISE_TABLE": "stepwise-test", "STEPWISE_RESULTS_BUCKET": "stepwise-results-test",
                 "STEPWISE_MODEL_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "sk-ant-test"}  # fmt: skip


@pytest.mark.parametrize(
    ("init", "sdk", "reseeds", "built"),
    [
        ("on-demand", True, False, 1),
        ("snap-start", True, True, 0),  # a snapshot keeps no AWS client built before it
        ("provisioned-concurrency", True, True, 1),
        (None, False, False, 0),
    ],
)
def test_the_init_imports_the_model_client_on_lambda_and_builds_the_adapters_unless_it_is_snapshotted(
    tmp_path: Path, init: str | None, sdk: bool, reseeds: bool, built: int
) -> None:
    (tmp_path / "snapshot_restore_py.py").write_text(HOOKS)
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_INITIALIZATION_TYPE"} | STEP_SETTINGS
    env["PYTHONPATH"] = os.pathsep.join((str(ROOT), str(tmp_path)))
    if init is not None:
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = init
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    assert out.stdout.split()[-3:] == [str(sdk), str(reseeds), str(built)]
    assert "could not prepare" not in out.stdout + out.stderr
