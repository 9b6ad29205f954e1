"""An upstream error that echoes the API key (as a provider's 401 may) is stored, returned and logged without it."""

from __future__ import annotations

import io
import json

import boto3
import pytest

from functions.adapters import wiring
from stepwise.local.stack import TABLE_NAME, LocalStack
from tests.e2e.conftest import http, wait
from tests.fakes.anthropic_server import FakeAnthropic, error

pytestmark = pytest.mark.e2e
ANTHROPIC_KEY = "sk-ant-api03-" + "Zq8" * 14  # what the functions are configured with


def test_an_error_echoing_the_api_key_leaves_no_trace_of_it(
    stack: LocalStack, fake_api: FakeAnthropic, monkeypatch: pytest.MonkeyPatch, function_logs: io.StringIO
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    wiring.reset()
    fake_api.script = [error(401, "authentication_error", f"invalid x-api-key: {ANTHROPIC_KEY} (account 123456789012)")]

    status, run = http(stack, "POST", "/runs", {"input": "hello"})
    assert status == 202
    done = wait(stack, run["run_id"])

    # the run failed and says why, without the key or the account
    assert done["status"] == "FAILED"
    message = done["error"]["message"]
    assert "authentication_error" in message and "[redacted key]" in message and "[account]" in message
    assert ANTHROPIC_KEY not in json.dumps(done)
    # the key reached the fake API (it was really sent) ...
    assert fake_api.headers[0]["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    # ... and is in no stored item and no log line
    items = boto3.client("dynamodb").scan(TableName=TABLE_NAME)["Items"]
    assert items and ANTHROPIC_KEY not in json.dumps(items) and ANTHROPIC_KEY[:20] not in json.dumps(items)
    logs = function_logs.getvalue()
    assert logs and ANTHROPIC_KEY not in logs and ANTHROPIC_KEY[:20] not in logs
