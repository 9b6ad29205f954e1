"""The step function's init: on demand it leaves the model client to the first call that needs it; with SnapStart or
provisioned concurrency (nothing waits on the init) it imports the client there, and a restored environment reseeds
the random state its snapshot shares with every other environment restored from it."""

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
    "print('anthropic' in sys.modules, hooks.registered == [random.seed])"
)


@pytest.mark.parametrize(
    ("init", "ahead"), [("on-demand", False), ("snap-start", True), ("provisioned-concurrency", True), (None, False)]
)
def test_the_model_client_is_imported_in_the_init_only_when_no_request_waits_on_it(
    tmp_path: Path, init: str | None, ahead: bool
) -> None:
    (tmp_path / "snapshot_restore_py.py").write_text(HOOKS)
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_INITIALIZATION_TYPE"}
    env["PYTHONPATH"] = os.pathsep.join((str(ROOT), str(tmp_path)))
    if init is not None:
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = init
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    assert out.stdout.split()[-2:] == [str(ahead), str(ahead)]
