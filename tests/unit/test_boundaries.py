"""The pure core imports neither boto3, anthropic, powertools, the X-Ray SDK nor the adapters; nor does it import the
tools package, which depends on the core (never the other way round)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import functions.agent

FORBIDDEN = ("boto3", "botocore", "anthropic", "functions.adapters", "aws_lambda_powertools", "aws_xray_sdk")
CORE_MODULES = sorted(f"functions.agent.{m.name}" for m in pkgutil.iter_modules(functions.agent.__path__))


def imported_by(*modules: str, forbidden: tuple[str, ...]) -> list[str]:
    """The forbidden modules a fresh interpreter has loaded after importing ``modules``."""
    code = (
        "import importlib, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({forbidden!r}))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [name for name in result.stdout.strip().split(",") if name]


def test_the_core_is_a_dozen_modules_or_more() -> None:
    # a guard on the check itself: an empty list would make the tests below pass vacuously
    assert (
        len(CORE_MODULES) >= 12 and "functions.agent.step" in CORE_MODULES and "functions.agent.ledger" in CORE_MODULES
    )


def test_core_imports_no_aws_no_provider_no_adapters() -> None:
    # Given a fresh interpreter (nothing imported by other tests), when every core module and the tools are imported
    bad = imported_by(*CORE_MODULES, "functions.tools", forbidden=FORBIDDEN)
    # Then none of the forbidden modules were loaded
    assert bad == [], f"the core pulled in: {bad}"


def test_the_core_does_not_import_the_tools_package() -> None:
    assert imported_by(*CORE_MODULES, forbidden=("functions.tools",)) == []


def test_api_handler_does_not_import_the_anthropic_sdk() -> None:
    # The SDK costs ~650 ms of cold start; only the step function needs it.
    code = "import sys, functions.handlers.api; print('anthropic' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
