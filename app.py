#!/usr/bin/env python3
"""CDK app: `npx cdk synth` / `npx cdk deploy`. Works offline, without Docker and without AWS credentials."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any


def _in_the_project_venv() -> None:
    """cdk.json runs ``python3 app.py`` with the shell's python3, which from a fresh shell is not the project's
    venv: then run again in ``.venv`` (made by ``make setup``), or say what to do."""
    try:
        import aws_cdk  # noqa: F401
    except ModuleNotFoundError:
        venv = Path(__file__).resolve().parent / ".venv"
        if (venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != venv.resolve():
            os.execv(venv / "bin" / "python", [str(venv / "bin" / "python"), *sys.argv])  # noqa: S606
        raise SystemExit("aws-cdk-lib is not installed for this Python: run `make setup` first") from None


_in_the_project_venv()

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from functions.agent.tenants import MAX_REQUESTS_PER_MINUTE  # noqa: E402
from infra.constants import MODEL_RETRY_INTERVAL_SECONDS, MODEL_RETRY_MAX_DELAY_SECONDS  # noqa: E402
from infra.constructs.agent_functions import WEB_ADAPTER_LAYER_VERSION  # noqa: E402
from infra.constructs.api import ApiAuth  # noqa: E402
from infra.constructs.deploys import deploy_strategy  # noqa: E402
from infra.constructs.monitoring import ALARM_EMAIL, AlarmThresholds  # noqa: E402
from infra.functions import MAX_MEMORY_MB, MIN_MEMORY_MB, STEP_MEMORY_MB  # noqa: E402
from infra.stacks.stepwise_stack import StepwiseStack, retention  # noqa: E402


def _optional_float(value: object) -> float | None:
    return None if value in (None, "") else float(str(value))


def _requests_per_minute(value: object) -> int | None:
    """A tenant's requests per minute by default (omit for no limit): checked here, not by a failing function."""
    if value in (None, ""):
        return None
    try:
        limit = int(str(value))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_REQUESTS_PER_MINUTE:
        raise SystemExit(
            f"CDK context tenant_requests_per_minute {value!r}: 1 to {MAX_REQUESTS_PER_MINUTE} (omit it for no limit)"
        )
    return limit


def _json_text(value: object) -> str | None:
    """Context values arrive as JSON objects from cdk.json and as strings from -c."""
    if value in (None, ""):
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _json_list(value: object, name: str) -> list[Any]:
    """A list from cdk.json, or from -c as JSON text."""
    if value in (None, ""):
        return []
    parsed = json.loads(value) if isinstance(value, str) else value
    if not isinstance(parsed, list):
        raise SystemExit(f"CDK context {name} must be a JSON list")
    return parsed


def _log_retention_days(value: object) -> int:
    """How long the functions', workflow's and API's logs are kept (CloudWatch's periods; 0: forever)."""
    try:
        days = 30 if value in (None, "") else int(str(value))
    except ValueError:
        raise SystemExit(f"CDK context log_retention_days {value!r}: a whole number of days") from None
    try:
        retention(days)  # the stack's check, made here so synth says what is wrong without a traceback
    except ValueError as exc:
        raise SystemExit(f"CDK context {exc}") from None
    return days


def _removal_policy(value: object) -> cdk.RemovalPolicy:
    """What `cdk destroy` does to the table and the tool-results bucket: retain (the default) or destroy."""
    choices = {"retain": cdk.RemovalPolicy.RETAIN, "destroy": cdk.RemovalPolicy.DESTROY}
    chosen = str(value or "retain").lower()
    if chosen not in choices:
        raise SystemExit(f"CDK context removal_policy {value!r}: retain or destroy")
    return choices[chosen]


def _whole(context: Any, name: str, default: int) -> int:
    """A whole number of 0 or more (the default when unset)."""
    value = context(name)
    if value in (None, ""):
        return default
    try:
        number = int(str(value))
    except ValueError:
        number = -1
    if number < 0:
        raise SystemExit(f"CDK context {name} {value!r}: a whole number, 0 or more")
    return number


def _flag(context: Any, name: str) -> bool:
    """true or false (false when unset)."""
    value = str(context(name) or "false").lower()
    if value not in ("true", "false"):
        raise SystemExit(f"CDK context {name} {context(name)!r}: true or false")
    return value == "true"


def _step_start(context: Any) -> dict[str, Any]:
    """How the step function's environments start: SnapStart (step_snapstart=true) or provisioned concurrency
    (step_provisioned_concurrency=N), at most one of them; neither by default (README "Cold starts"); and its memory
    (step_memory_mb: its CPU share too, README "What a step costs")."""
    snap_start = _flag(context, "step_snapstart")
    provisioned = _whole(context, "step_provisioned_concurrency", 0)
    if snap_start and provisioned:
        raise SystemExit(
            "CDK context step_snapstart and step_provisioned_concurrency: SnapStart does not support provisioned "
            "concurrency; choose one"
        )
    memory = _whole(context, "step_memory_mb", STEP_MEMORY_MB)
    if not MIN_MEMORY_MB <= memory <= MAX_MEMORY_MB:
        raise SystemExit(
            f"CDK context step_memory_mb {context('step_memory_mb')!r}: Lambda takes {MIN_MEMORY_MB} to "
            f"{MAX_MEMORY_MB} MB"
        )
    return {"step_snap_start": snap_start, "step_provisioned_concurrency": provisioned, "step_memory_mb": memory}


def _deploy_strategy(value: object) -> str:
    """How a deploy shifts the functions' traffic: all_at_once, or a canary/linear CodeDeploy preset."""
    try:
        return deploy_strategy(value)
    except ValueError as exc:
        raise SystemExit(f"CDK context {exc}") from None


def _auth(app: cdk.App) -> ApiAuth:
    try:
        return ApiAuth.from_context(app.node.try_get_context)
    except (ValidationError, ValueError) as exc:
        raise SystemExit(f"CDK context auth: {exc}") from None


def _alarm_thresholds(value: object) -> AlarmThresholds:
    """The alarms' thresholds: defaults in AlarmThresholds, each key given checked; an unknown key is an error."""
    try:
        return AlarmThresholds.from_context(value)
    except ValidationError as exc:
        known = ", ".join(AlarmThresholds.model_fields)
        problems = "; ".join(
            f"unknown key {'.'.join(map(str, e['loc']))!r} (known: {known})"
            if e["type"] == "extra_forbidden"
            else f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
            for e in exc.errors()
        )
        raise SystemExit(f"CDK context alarm_thresholds: {problems}") from None
    except ValueError as exc:  # not JSON, or not an object
        raise SystemExit(f"CDK context alarm_thresholds: {exc}") from None


def _alarm_email(value: object) -> str | None:
    """The address the alarm topic e-mails (it confirms the subscription once); omit for no e-mail."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not re.fullmatch(ALARM_EMAIL, value):
        raise SystemExit(f"CDK context alarm_email {value!r}: one e-mail address, like ops@example.com")
    return value


def build_app(app: cdk.App | None = None) -> cdk.App:
    app = app or cdk.App()
    context = app.node.try_get_context
    StepwiseStack(
        app,
        context("stack_name") or "Stepwise",
        default_model=context("default_model") or "claude-sonnet-5-5",
        default_tenant=context("default_tenant") or "default",
        run_timeout_minutes=int(context("run_timeout_minutes") or 120),
        intake_max_concurrency=int(context("intake_max_concurrency") or 10),
        tenant_daily_budget_usd=_optional_float(context("tenant_daily_budget_usd")),
        global_daily_budget_usd=_optional_float(context("global_daily_budget_usd")),
        tenant_requests_per_minute=_requests_per_minute(context("tenant_requests_per_minute")),
        extra_prices=_json_text(context("extra_prices")),
        prompt_cache_ttl=str(context("prompt_cache_ttl") or "5m"),
        response_cache=str(context("response_cache") or "false").lower() == "true",
        bedrock_fallback=str(context("bedrock_fallback") or "false").lower() == "true",
        retry_interval_seconds=int(context("model_retry_interval_seconds") or MODEL_RETRY_INTERVAL_SECONDS),
        retry_max_delay_seconds=int(context("model_retry_max_delay_seconds") or MODEL_RETRY_MAX_DELAY_SECONDS),
        mcp_servers=_json_list(context("mcp_servers"), "mcp_servers"),
        lambda_tools=_json_list(context("lambda_tools"), "lambda_tools"),
        egress_allow_addresses=_json_list(context("egress_allow_addresses"), "egress_allow_addresses"),
        http_fetch_allowed_domains=_json_list(context("http_fetch_allowed_domains"), "http_fetch_allowed_domains"),
        tool_result_retention_days=int(context("tool_result_retention_days") or 30),
        webhook_allowed_hosts=_json_list(context("webhook_allowed_hosts"), "webhook_allowed_hosts"),
        log_retention_days=_log_retention_days(context("log_retention_days")),
        removal_policy=_removal_policy(context("removal_policy")),
        auth=_auth(app),
        stream_max_concurrency=_whole(context, "stream_max_concurrency", 20),
        web_adapter_layer_version=_whole(context, "web_adapter_layer_version", WEB_ADAPTER_LAYER_VERSION),
        deploy_strategy=_deploy_strategy(context("deploy_strategy")),
        alarm_thresholds=_alarm_thresholds(context("alarm_thresholds")),
        alarm_email=_alarm_email(context("alarm_email")),
        **_step_start(context),
        env=cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")),
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


if __name__ == "__main__":
    build_app().synth()
