"""Test-wide environment: fake AWS credentials, no real model key, nothing leaves 127.0.0.1."""

from __future__ import annotations

import os
from typing import Any

import pytest

for _key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "STEPWISE_ENDPOINT"):
    os.environ.pop(_key, None)
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_METRICS_NAMESPACE": "Stepwise",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray: tests/fakes/xray.py records traces where a test wants them
    }
)


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    """The synthesised CloudFormation template (bundling skipped), once per session."""
    from stepwise.local.template import synthesize

    return synthesize()
