"""Secrets and account details taken out of text that Stepwise stores, logs or returns. Pure.

A provider's or AWS SDK's error may quote what it was sent (an API key, a bearer token) or name resources (ARNs,
account ids). Every run error goes through ``redact`` (models.RunError), and so does every log line
(functions/handlers/observability.py)."""

from __future__ import annotations

import re

_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"sk-ant-[A-Za-z0-9_-]{6,}"), "[redacted key]"),  # Anthropic API keys (sk-ant-api03-..., admin)
    (re.compile(r"swk_[0-9a-f]{12}_[A-Za-z0-9_-]{10,}"), "[redacted key]"),  # Stepwise API keys
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "[redacted access key]"),  # AWS access key ids
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    (
        re.compile(
            r"(?i)((?:x-api-key|api[_-]?key|authorization|token|secret|password)[\"']?\s*[:=]\s*[\"']?)"
            r"(?!\[)[^\s\"',;}]{6,}"  # (not one already redacted)
        ),
        r"\1[redacted]",
    ),
    (re.compile(r"\barn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{12}:[^\s\"',)\]]+"), "[redacted arn]"),
    (re.compile(r"(?<![\w.])\d{12}(?![\w.])"), "[account]"),  # a bare 12-digit number: an AWS account id
]


def redact(text: str) -> str:
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text
