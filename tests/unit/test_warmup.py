"""A function's init on Lambda builds what its first request would (functions/handlers/warmup.py): on demand and with
provisioned concurrency only, never outside Lambda; and when it cannot (a setting missing), the init goes on and the
first request fails as it would have."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {
    "STEPWISE_TABLE": "stepwise-test",
    "STEPWISE_RESULTS_BUCKET": "stepwise-results-test",
    "STEPWISE_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:stepwise-test",
    "STEPWISE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/stepwise-test",
}
# what each handler's first request builds, as wiring's caches show it after the import alone
BUILT = {
    "api": "(wiring.submitter, wiring.rate_limiter, wiring.sessions)",
    "intake": "(wiring.store, wiring.queue, wiring.workflow)",
    "authorizer": "(wiring.api_keys,)",
    "tool": "(wiring.registry, wiring.store, wiring.results)",
}
FAILS = ("api", "intake")  # the handlers that read STEPWISE_QUEUE_URL


def _import(handler: str, init: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_INITIALIZATION_TYPE"} | SETTINGS | env
    environment["PYTHONPATH"] = str(ROOT)
    if init is not None:
        environment["AWS_LAMBDA_INITIALIZATION_TYPE"] = init
    probe = (
        f"import functions.handlers.{handler}; from functions.adapters import wiring; "
        f"print(*(built.cache_info().currsize for built in {BUILT[handler]}))"
    )
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment, cwd=ROOT)


@pytest.mark.parametrize("handler", sorted(BUILT))
@pytest.mark.parametrize(
    ("init", "prepared"), [("on-demand", True), ("provisioned-concurrency", True), ("snap-start", False), (None, False)]
)
def test_the_init_builds_the_first_requests_clients_and_use_cases_on_lambda_only(
    handler: str, init: str | None, prepared: bool
) -> None:
    out = _import(handler, init)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1" if prepared else "0"] * BUILT[handler].count("wiring.")


@pytest.mark.parametrize("handler", FAILS)
def test_an_init_that_cannot_prepare_goes_on_and_says_so(handler: str) -> None:
    out = _import(handler, "on-demand", STEPWISE_QUEUE_URL="", POWERTOOLS_LOG_LEVEL="INFO")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-3:] == ["0", "0", "0"]
    assert "the init could not prepare the first request" in out.stdout + out.stderr
    assert "STEPWISE_QUEUE_URL" in out.stdout + out.stderr


@pytest.mark.parametrize(("init", "built"), [("on-demand", "True"), (None, "False")])
def test_the_step_functions_init_builds_the_models_a_step_validates(init: str | None, built: str) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_INITIALIZATION_TYPE"} | SETTINGS
    environment |= {"PYTHONPATH": str(ROOT), "STEPWISE_MODEL_PROVIDER": "stub", "AWS_DEFAULT_REGION": "us-east-1"}
    if init is not None:
        environment["AWS_LAMBDA_INITIALIZATION_TYPE"] = init
    probe = (
        "import functions.handlers.step; from functions.agent import models; "
        "print(models.Run.__pydantic_complete__, models.StepRecord.__pydantic_complete__)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == [built, built]
