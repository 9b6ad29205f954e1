"""What leaves Stepwise in errors and logs (functions/agent/redact.py): no keys, tokens, ARNs or account ids."""

from __future__ import annotations

import logging

import pytest

from functions.agent.models import RunError
from functions.agent.redact import redact
from functions.handlers.observability import RedactingFormatter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("invalid x-api-key: sk-ant-api03-AbC123_def-456", "invalid x-api-key: [redacted key]"),
        ("key swk_0123456789ab_" + "A" * 43 + " revoked", "key [redacted key] revoked"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "Authorization: [redacted] [redacted]"),
        ("User: arn:aws:sts::123456789012:assumed-role/stepwise-api/s is not authorized",
         "User: [redacted arn] is not authorized"),
        ("account 123456789012 is suspended", "account [account] is suspended"),
        ("AKIAIOSFODNN7EXAMPLE was used", "[redacted access key] was used"),
        ('{"api_key": "abcdef123456"}', '{"api_key": "[redacted]"}'),
    ],
)  # fmt: skip
def test_secrets_and_account_details_are_taken_out(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "the model's output was cut off at max_tokens_per_call=8192",
        "run run_5a3b0000000000000000c0ffee reached max_steps=10",
        "run spent $0.012345, budget max_usd=$0.01",
        "ModelLatency 1796179682405 ms",  # 13 digits: a timestamp, not an account
        "input_tokens: 50, output_tokens: 10",
    ],
)
def test_ordinary_messages_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_every_run_error_is_redacted_and_bounded() -> None:
    error = RunError(code="MODEL_AUTH", message="bad key sk-ant-api03-secretsecret " + "x" * 5000)
    assert "secretsecret" not in error.message and len(error.message) == 2000


def test_log_lines_are_redacted_exceptions_included() -> None:
    leak = ("sk-ant-api03-leak1",)
    record = logging.LogRecord("stepwise-step", logging.ERROR, __file__, 1, "call failed with %s", leak, None)
    try:
        raise RuntimeError("upstream said Bearer sk-ant-api03-leak2")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    line = RedactingFormatter().format(record)
    assert "leak1" not in line and "leak2" not in line and "[redacted key]" in line
