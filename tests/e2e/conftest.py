"""The local stack (synthesised template on moto, real handlers), started once per module on 127.0.0.1."""

from __future__ import annotations

import importlib
import io
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.adapters import wiring
from stepwise.local.stack import LocalStack
from tests.fakes.anthropic_server import FakeAnthropic

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "BUDGET_EXCEEDED", "TIMED_OUT"}


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Iterator[LocalStack]:
    with LocalStack(port=0, template=template) as local:
        yield local


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch, stack: LocalStack) -> Iterator[FakeAnthropic]:
    """The functions call a scripted fake Messages API on 127.0.0.1 through the real anthropic SDK."""
    with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("STEPWISE_MODEL_PROVIDER", "auto")
        wiring.reset()
        yield fake
    wiring.reset()


@pytest.fixture
def function_logs() -> Iterator[io.StringIO]:
    """Every log line the functions (and the libraries they use) write during the test, as formatted."""
    for module in ("api", "step", "tool", "finalize", "intake"):  # their loggers exist once imported
        importlib.import_module(f"functions.handlers.{module}")
    buffer = io.StringIO()
    added: list[tuple[logging.Logger, logging.Handler]] = []
    loggers = [logging.getLogger(), *(
        logger for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and name.startswith("stepwise-")
    )]  # fmt: skip
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.INFO)  # what a deployment logs (Lambda's default application log level; the tests'
        # environment says WARNING), the root logger included: the SDKs' own INFO lines are checked too
        handler = logging.StreamHandler(buffer)
        formatter = next((h.formatter for h in logger.handlers if h.formatter is not None), None)
        handler.setFormatter(formatter or logging.Formatter("%(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        added.append((logger, handler))
    try:
        yield buffer
    finally:
        for logger, handler in added:
            logger.removeHandler(handler)
            logger.setLevel(levels[logger])


def http(stack: LocalStack, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(
        stack.url + path, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait(stack: LocalStack, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, run = http(stack, "GET", f"/runs/{run_id}")
        if run["status"] in TERMINAL:
            return dict(run)
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s: {run}")


def execution_history(stack: LocalStack, run_id: str, timeout: float = 30) -> list[dict[str, Any]]:
    """The run's execution history once the execution has ended (a run's status is final before its
    execution's last states, Finalize and Done, have run)."""
    arn = stack.state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + run_id
    deadline = time.monotonic() + timeout
    while stack.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
        if time.monotonic() > deadline:
            raise AssertionError(f"the execution of {run_id} did not end in {timeout} s")
        time.sleep(0.05)
    events: list[dict[str, Any]] = stack.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return events


SCHEDULED = json.loads((Path(__file__).resolve().parents[2] / "events" / "gauges" / "scheduled.json").read_text())


def count_gauges(stack: LocalStack) -> dict[str, Any]:
    """Invoke the gauges function's alias as its schedule does every minute (the local stack does not emulate
    EventBridge): what it counted."""
    (name,) = [name for name, handler in stack.topology.handlers.items() if handler.endswith(".gauges.handler")]
    return dict(stack.lambdas.invoke(f"{name}:live", SCHEDULED))
