"""The pure core (functions.agent, functions.tools) imports neither boto3, anthropic nor the adapters."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("boto3", "botocore", "anthropic", "functions.adapters", "aws_lambda_powertools")


def test_core_imports_no_aws_no_provider_no_adapters() -> None:
    # Given a fresh interpreter (nothing imported by other tests)
    code = (
        "import sys\n"
        "import functions.agent.service, functions.agent.pricing, functions.agent.models, functions.tools\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} or m.startswith({FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    # When the whole core is imported
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Then none of the forbidden modules were loaded
    assert result.stdout.strip() == "", f"the core pulled in: {result.stdout.strip()}"


def test_api_handler_does_not_import_the_anthropic_sdk() -> None:
    # The SDK costs ~650 ms of cold start; only the step function needs it.
    code = "import sys, functions.handlers.api; print('anthropic' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
