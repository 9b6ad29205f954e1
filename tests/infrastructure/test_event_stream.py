"""Live events on AWS: the stream function behind a function URL in response-streaming mode, run by the Lambda Web
Adapter; the api function redirects to its URL. Synthesised with the cdk-nag checks, bundling skipped."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest

from app import build_app
from functions.adapters.settings import StreamSettings
from infra.constructs.agent_functions import ALIAS, WEB_ADAPTER_LAYER_VERSION
from infra.functions import FUNCTIONS
from infra.packaging import function_code
from tests.infrastructure.test_stack import SKIP_BUNDLING

STREAM = FUNCTIONS["stream"]


def synth(monkeypatch: pytest.MonkeyPatch, **context: Any) -> dict[str, Any]:
    for key in ("CDK_DEFAULT_REGION", "CDK_DEFAULT_ACCOUNT"):
        monkeypatch.delenv(key, raising=False)
    app = build_app(cdk.App(context={**SKIP_BUNDLING, **context}))
    return dict(app.synth().get_stack_by_name("Stepwise").template)  # cdk-nag errors raise here


def function(template: dict[str, Any], handler: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(lid, r["Properties"]) for lid, r in template["Resources"].items()
                if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == handler]  # fmt: skip
    return found


def of_type(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == kind]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return synth(monkeypatch)


def test_the_stream_function_has_a_public_url_that_streams(template: dict[str, Any]) -> None:
    stream_id, _ = function(template, STREAM.handler)
    (url,) = of_type(template, "AWS::Lambda::Url")
    # on the function's live alias (what a deploy shifts and rolls back)
    assert url["TargetFunctionArn"] == {"Fn::GetAtt": [stream_id, "Arn"]} and url["Qualifier"] == ALIAS
    assert url["InvokeMode"] == "RESPONSE_STREAM"
    # public: the API authenticated the caller and gave a single-use ticket for one session or run
    assert url["AuthType"] == "NONE"
    assert "Cors" not in url  # no browser origin may read it cross-site
    (alias_id,) = [lid for lid, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Alias"
                   and r["Properties"]["FunctionName"] == {"Ref": stream_id}]  # fmt: skip
    names = ({"Ref": alias_id}, {"Fn::GetAtt": [stream_id, "Arn"]}, {"Ref": stream_id})
    invokers = [p for p in of_type(template, "AWS::Lambda::Permission") if p["FunctionName"] in names]
    # only through its URL: no other service or principal is given the function
    assert {p["Action"] for p in invokers} == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert all(p.get("FunctionUrlAuthType") == "NONE" or p.get("InvokedViaFunctionUrl") for p in invokers)
    (url_id,) = [lid for lid, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Url"]
    assert template["Outputs"]["StreamUrl"]["Value"] == {"Fn::GetAtt": [url_id, "FunctionUrl"]}


def test_the_web_adapter_runs_the_app_in_response_streaming_mode(template: dict[str, Any]) -> None:
    _, props = function(template, STREAM.handler)
    env = props["Environment"]["Variables"]
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"  # the layer's wrapper runs the handler script
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"  # as the URL's invoke mode
    assert env["AWS_LWA_PORT"] == "8080" and env["AWS_LWA_READINESS_CHECK_PATH"] == "/health"
    # its tracer off: the app never has an invocation's trace, and X-Ray's SDK would log a warning per AWS call
    assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
    _, adapter = props["Layers"]
    separator, parts = adapter["Fn::Join"]
    arn = separator.join(part if isinstance(part, str) else "X" for part in parts)
    assert arn == f"arn:X:lambda:X:753240598075:layer:LambdaAdapterLayerArm64:{WEB_ADAPTER_LAYER_VERSION}"
    assert props["Handler"] == "functions/handlers/stream.sh" and props["Architectures"] == ["arm64"]
    # a stream ends before the function's timeout (the client reconnects)
    assert props["Timeout"] == 900 > float(env["STEPWISE_STREAM_MAX_SECONDS"]) + 30
    assert float(env["STEPWISE_STREAM_PING_SECONDS"]) == StreamSettings.model_fields["stream_ping_seconds"].default
    assert props["ReservedConcurrentExecutions"] == 20  # streams open at once: each holds an execution


def test_the_api_redirects_to_the_stream_functions_url(template: dict[str, Any]) -> None:
    _, api = function(template, "functions.handlers.api.handler")
    (url_id,) = [lid for lid, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Url"]
    assert api["Environment"]["Variables"]["STEPWISE_STREAM_URL"] == {"Fn::GetAtt": [url_id, "FunctionUrl"]}


def test_concurrency_and_the_adapters_version_are_context(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = synth(monkeypatch, stream_max_concurrency="5", web_adapter_layer_version="30")
    _, props = function(changed, STREAM.handler)
    assert props["ReservedConcurrentExecutions"] == 5
    assert props["Layers"][1]["Fn::Join"][1][-1].endswith(":LambdaAdapterLayerArm64:30")
    unreserved = synth(monkeypatch, stream_max_concurrency=0)
    assert "ReservedConcurrentExecutions" not in function(unreserved, STREAM.handler)[1]


def test_a_bad_concurrency_fails_synth_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match="stream_max_concurrency"):
        synth(monkeypatch, stream_max_concurrency="-1")


def test_the_code_asset_keeps_the_start_script_executable() -> None:
    # the adapter's wrapper executes it; CDK's zip keeps each file's mode
    staged = Path(function_code().path) / STREAM.handler  # type: ignore[attr-defined]  # an AssetCode
    assert staged.is_file() and staged.stat().st_mode & 0o111


def test_the_start_script_puts_the_layer_the_code_and_the_runtimes_libraries_on_the_path(tmp_path: Path) -> None:
    # Given the script as the adapter's wrapper runs it: a python3 that shows what it was started with, and no
    # PYTHONPATH (the runtime's boto3 lives in LAMBDA_RUNTIME_DIR, which the layer does not ship)
    (tmp_path / "python3").write_text('#!/bin/sh\necho "$PWD|$PYTHONPATH|$*"\n')
    (tmp_path / "python3").chmod(0o755)
    root = Path(__file__).resolve().parents[2]
    environment = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LAMBDA_TASK_ROOT": str(root),
                   "LAMBDA_RUNTIME_DIR": "/var/runtime"}  # fmt: skip
    shown = subprocess.run([str(root / STREAM.handler)], env=environment, capture_output=True, text=True, check=True)
    where, path, args = shown.stdout.strip().split("|")
    # Then the app starts from the code's root, with the layer, the code and the runtime's libraries importable
    assert where == str(root) and args == "-m functions.handlers.stream"
    assert path.split(":") == ["/opt/python", str(root), "/var/runtime"]
