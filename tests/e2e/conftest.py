"""The local stack (synthesised template on moto, real handlers), started once per module on 127.0.0.1."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from stepwise.local.stack import LocalStack

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "BUDGET_EXCEEDED", "TIMED_OUT"}


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Iterator[LocalStack]:
    with LocalStack(port=0, template=template) as local:
        yield local


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
