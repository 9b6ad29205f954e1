"""The synthesised CloudFormation template of the Stepwise stack.

The stack is built once per module, with asset bundling skipped (no pip layer build: fast and offline).
Assertions are on resource properties and on references between resources, never on hashed logical IDs.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import aws_cdk as cdk
import cdk_nag
import pytest
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template

from app import build_app
from functions.adapters.dynamodb_store import ACTIVE_INDEX, ACTIVE_PK, ACTIVE_PROJECTION, ACTIVE_SK
from functions.adapters.settings import StopSettings
from functions.agent.step_loop import worst_step_seconds
from infra.constants import (
    INTAKE_MAX_RECEIVE_COUNT,
    MODEL_RETRY_INTERVAL_SECONDS,
    MODEL_RETRY_MAX_ATTEMPTS,
    MODEL_RETRY_MAX_DELAY_SECONDS,
    ROOT,
    TOOLS_MAX_CONCURRENCY,
)
from infra.constructs.agent_functions import WEB_ADAPTER_ENVIRONMENT
from infra.functions import FUNCTIONS
from infra.stacks.stepwise_stack import StepwiseStack

SKIP_BUNDLING = {"aws:cdk:bundling-stacks": []}
LAMBDA_SERVICE_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}
WORKFLOW_FUNCTIONS = {"step", "tool", "finalize", "mark_failed"}
EXPECTED_ROUTES = {
    "POST /runs",
    "GET /runs/{run_id}",
    "GET /runs/{run_id}/steps",
    "POST /runs/{run_id}/cancel",
    "GET /runs/{run_id}/tool_results/{tool_use_id}",
    "GET /costs",
    "GET /active",  # the kill switch
    "POST /active/cancel",
    "GET /health",
    "GET /openapi.json",
    # the Managed Agents API
    "POST /v1/agents",
    "GET /v1/agents",
    "GET /v1/agents/{agent_id}",
    "POST /v1/agents/{agent_id}",
    "POST /v1/agents/{agent_id}/archive",
    "GET /v1/agents/{agent_id}/versions",
    "POST /v1/sessions",
    "GET /v1/sessions",
    "GET /v1/sessions/{session_id}",
    "DELETE /v1/sessions/{session_id}",
    "POST /v1/sessions/{session_id}",
    "POST /v1/sessions/{session_id}/archive",
    "POST /v1/sessions/{session_id}/events",
    "GET /v1/sessions/{session_id}/events",
    "GET /v1/sessions/{session_id}/events/stream",
    "GET /v1/sessions/{session_id}/tool_results/{tool_use_id}",
    "POST /v1/webhooks",
    "GET /v1/webhooks",
    "GET /v1/webhooks/{webhook_id}",
    "DELETE /v1/webhooks/{webhook_id}",
    "GET /runs/{run_id}/events/stream",
}


# ---------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> Template:
    app = cdk.App(context=SKIP_BUNDLING)
    stack = StepwiseStack(app, "Stepwise", default_model="claude-sonnet-4-5")
    return Template.from_stack(stack)


@pytest.fixture(scope="module")
def resources(template: Template) -> dict[str, dict[str, Any]]:
    return template.to_json()["Resources"]


@pytest.fixture(scope="module")
def definition(template: Template) -> dict[str, Any]:
    (machine,) = template.find_resources("AWS::StepFunctions::StateMachine").values()
    return parse_definition(machine["Properties"]["DefinitionString"])


@pytest.fixture(scope="module")
def functions(template: Template) -> dict[str, tuple[str, dict[str, Any]]]:
    """Function name (the key of infra.functions.FUNCTIONS) -> (logical id, properties), found by handler."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for logical_id, resource in template.find_resources("AWS::Lambda::Function").items():
        props = resource["Properties"]
        (name,) = [name for name, spec in FUNCTIONS.items() if spec.handler == props["Handler"]]
        found[name] = (logical_id, props)
    return found


@pytest.fixture(scope="module")
def aliases(resources: dict[str, dict[str, Any]], functions: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """Function name -> the logical id of its ``live`` alias (what every invoker calls)."""
    return live_aliases(resources, functions)


def live_aliases(
    resources: dict[str, dict[str, Any]], functions: dict[str, tuple[str, dict[str, Any]]]
) -> dict[str, str]:
    by_function = {
        resource["Properties"]["FunctionName"]["Ref"]: logical_id
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::Lambda::Alias" and resource["Properties"]["Name"] == "live"
    }
    return {name: by_function[logical_id] for name, (logical_id, _) in functions.items()}


@pytest.fixture(scope="module")
def statements_by_function(
    resources: dict[str, dict[str, Any]], functions: dict[str, tuple[str, dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Function name -> every statement of the IAM policies attached to the function's execution role."""
    return {name: role_statements(resources, role_of(props)) for name, (_, props) in functions.items()}


def parse_definition(definition_string: Any) -> dict[str, Any]:
    """Join the string parts of the definition's Fn::Join, tokens (ARNs, partition) replaced by "X"."""
    if isinstance(definition_string, str):
        return json.loads(definition_string)
    separator, parts = definition_string["Fn::Join"]
    return json.loads(separator.join(part if isinstance(part, str) else "X" for part in parts))


def walk_states(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state, including those nested in Map item processors and Parallel branches."""
    for name, state in states.items():
        yield name, state
        for nested in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            if nested:
                yield from walk_states(nested["States"])


def role_of(function_props: dict[str, Any]) -> str:
    role_arn = function_props["Role"]
    assert set(role_arn) == {"Fn::GetAtt"}, role_arn
    role_id, attribute = role_arn["Fn::GetAtt"]
    assert attribute == "Arn"
    return role_id


def role_statements(resources: dict[str, dict[str, Any]], role_id: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for resource in resources.values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in props.get("Roles", []):
            statements.extend(props["PolicyDocument"]["Statement"])
    for inline in resources[role_id]["Properties"].get("Policies", []):
        statements.extend(inline["PolicyDocument"]["Statement"])
    return statements


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allowed_actions(statements: list[dict[str, Any]], prefix: str = "") -> set[str]:
    return {
        action
        for statement in statements
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
        if action.startswith(prefix)
    }


def statements_granting(statements: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [s for s in statements if s["Effect"] == "Allow" and action in as_list(s["Action"])]


def all_policy_documents(resources: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in resources.items():
        props = resource.get("Properties", {})
        if "PolicyDocument" in props:  # AWS::IAM::Policy, AWS::SQS::QueuePolicy, ...
            yield logical_id, props["PolicyDocument"]
        if resource["Type"] == "AWS::IAM::Role":
            for inline in props.get("Policies", []):
                yield logical_id, inline["PolicyDocument"]


def single(resources: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    assert len(resources) == 1, sorted(resources)
    ((logical_id, resource),) = resources.items()
    return logical_id, resource


# ---------------------------------------------------------------------------------------------------------------
# Synthesis with cdk-nag (the real entry point, app.py)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environment",
    [
        {},
        {"CDK_DEFAULT_REGION": "eu-west-1"},
        {"CDK_DEFAULT_REGION": "eu-west-1", "CDK_DEFAULT_ACCOUNT": "111122223333"},
    ],
    ids=["agnostic", "region", "region+account"],
)
def test_app_synthesises_with_cdk_nag_and_no_unacknowledged_findings(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the app as `cdk synth` builds it (the CDK CLI sets the account/region it resolved),
    # with the AwsSolutions checks as a validation plugin
    for key in ("CDK_DEFAULT_REGION", "CDK_DEFAULT_ACCOUNT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    app = build_app(cdk.App(context=SKIP_BUNDLING))

    # When it is synthesised (an unacknowledged cdk-nag error raises here)
    assembly = app.synth()

    # Then the Stepwise stack is in the cloud assembly
    stack = assembly.get_stack_by_name("Stepwise")
    assert "AWS::StepFunctions::StateMachine" in {r["Type"] for r in stack.template["Resources"].values()}


def test_cdk_nag_plugin_does_fail_synthesis_on_a_finding() -> None:
    # Given a stack with a finding nobody acknowledged (a queue without DLQ nor SSL enforcement)
    app = cdk.App()
    sqs.Queue(cdk.Stack(app, "Bare"), "Queue")
    cdk.Validations.of(app).add_plugins(cdk_nag.AwsSolutionsChecks(app))

    # When / Then: synthesis fails, so the test above is not vacuous
    with pytest.raises(RuntimeError, match="AwsSolutions-SQS4"):
        app.synth()


# ---------------------------------------------------------------------------------------------------------------
# Step Functions
# ---------------------------------------------------------------------------------------------------------------


def test_state_machine_is_standard_traced_and_logged(template: Template) -> None:
    template.resource_count_is("AWS::StepFunctions::StateMachine", 1)
    template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "StateMachineType": "STANDARD",
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": Match.object_like(
                {
                    "Level": "ALL",
                    "Destinations": Match.array_with([{"CloudWatchLogsLogGroup": {"LogGroupArn": Match.any_value()}}]),
                }
            ),
        },
    )


def test_state_machine_log_group_has_a_retention(template: Template, resources: dict[str, dict[str, Any]]) -> None:
    # Given the log group the state machine writes to
    (machine,) = template.find_resources("AWS::StepFunctions::StateMachine").values()
    (destination,) = machine["Properties"]["LoggingConfiguration"]["Destinations"]
    log_group_id, attribute = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"]

    # Then it is a log group of this stack with a finite retention
    assert attribute == "Arn"
    assert resources[log_group_id]["Type"] == "AWS::Logs::LogGroup"
    assert resources[log_group_id]["Properties"]["RetentionInDays"] > 0


def test_definition_begins_with_step_or_approved_tools_and_bounds_the_run(definition: dict[str, Any]) -> None:
    # A run (and a session turn without approved calls) takes its first step; a turn that begins with calls a
    # person approved runs them first. Rules are tried in order: an execution without "next" never reads it.
    begin = definition["States"]["Begin"]
    assert definition["StartAt"] == "Begin" and begin["Type"] == "Choice"
    assert begin["Choices"] == [
        {"Variable": "$.next", "IsPresent": False, "Next": "Step"},
        {"Variable": "$.next", "StringEquals": "tools", "Next": "Tools"},
    ]
    assert begin["Default"] == "Step"
    assert definition["States"]["Step"]["Type"] == "Task"
    # The default run_timeout is two hours.
    assert definition["TimeoutSeconds"] == 2 * 60 * 60


def test_step_retries_retryable_model_errors_with_capped_full_jitter_backoff(definition: dict[str, Any]) -> None:
    # Given the Step task's retriers
    retriers = definition["States"]["Step"]["Retry"]

    # When picking the one for model throttling/overload
    (model_retry,) = [r for r in retriers if "RetryableModelError" in r["ErrorEquals"]]

    # Then it backs off exponentially with full jitter, capped; a settlement that lost to concurrent writes is
    # retried the same way (its answer is stored, so the retry makes no model call)
    assert model_retry["ErrorEquals"] == ["RetryableModelError", "StoreConflictError"]
    assert model_retry["JitterStrategy"] == "FULL"
    assert model_retry["BackoffRate"] == 2
    assert model_retry["IntervalSeconds"] == MODEL_RETRY_INTERVAL_SECONDS
    assert model_retry["MaxAttempts"] == MODEL_RETRY_MAX_ATTEMPTS
    assert model_retry["MaxDelaySeconds"] == MODEL_RETRY_MAX_DELAY_SECONDS
    assert model_retry["MaxDelaySeconds"] > model_retry["IntervalSeconds"]


def test_every_task_retries_lambda_service_exceptions_with_jitter(definition: dict[str, Any]) -> None:
    # Given every Task state, nested ones included
    tasks = {name: state for name, state in walk_states(definition["States"]) if state["Type"] == "Task"}
    assert set(tasks) == {"Step", "RunTool", "RecordToolFailure", "Finalize", "MarkFailed"}

    for name, task in tasks.items():
        # Then each has a jittered, backing-off retrier covering the transient Lambda errors
        covering = [r for r in task.get("Retry", []) if LAMBDA_SERVICE_ERRORS <= set(r["ErrorEquals"])]
        assert covering, f"{name} does not retry {sorted(LAMBDA_SERVICE_ERRORS)}"
        (retrier,) = covering
        assert retrier["JitterStrategy"] == "FULL", name
        assert retrier["BackoffRate"] > 1, name
        assert retrier["MaxAttempts"] >= 2, name
        # and never retries everything blindly
        assert not any("States.ALL" in r["ErrorEquals"] for r in task["Retry"]), name


def test_every_task_invokes_lambda_and_returns_only_the_payload(definition: dict[str, Any]) -> None:
    tasks = [(name, state) for name, state in walk_states(definition["States"]) if state["Type"] == "Task"]
    assert tasks
    for name, task in tasks:
        assert task["Resource"].endswith(":states:::lambda:invoke"), name
        assert task["OutputPath"] == "$.Payload", name
        assert task["Parameters"]["Payload"]["tenant.$"] == "$.tenant", name
        assert task["Parameters"]["Payload"]["run_id.$"] == "$.run_id", name


@pytest.mark.parametrize("state_name", ["Step", "Tools", "Finalize"])
def test_failures_are_caught_and_sent_to_mark_failed(definition: dict[str, Any], state_name: str) -> None:
    # Given a state that can fail for good
    catchers = definition["States"][state_name]["Catch"]

    # Then any error goes to MarkFailed, keeping the run reference and adding the failure
    assert {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "MarkFailed"} in catchers


def test_mark_failed_records_the_failure_then_fails_the_execution(definition: dict[str, Any]) -> None:
    states = definition["States"]
    mark_failed = states["MarkFailed"]
    assert mark_failed["Parameters"]["Payload"]["failure.$"] == "$.failure"
    assert states[mark_failed["Next"]]["Type"] == "Fail"
    # MarkFailed must not catch into itself (no failure loop).
    assert "Catch" not in mark_failed


def test_tools_is_a_bounded_map_over_tool_calls_that_loops_back_to_step(definition: dict[str, Any]) -> None:
    tools = definition["States"]["Tools"]

    assert tools["Type"] == "Map"
    assert tools["ItemsPath"] == "$.tool_calls"
    assert tools["MaxConcurrency"] == TOOLS_MAX_CONCURRENCY > 0
    assert tools["ItemSelector"] == {
        "tenant.$": "$.tenant",
        "run_id.$": "$.run_id",
        "execution.$": "$$.Execution.Name",
        "step.$": "$.completed_step",
        "tool_use_id.$": "$$.Map.Item.Value.id",
        "call.$": "$$.Map.Item.Value",  # how to run it (a Lambda tool's function and input)
    }
    # The tool results live in the table: the Map's output is discarded and Step gets the previous state back.
    assert tools["ResultPath"] is None
    # then the next step, or (a session's calls that wait for its client) the turn idles
    after = definition["States"][tools["Next"]]
    assert after["Type"] == "Choice" and after["Default"] == "Step"
    assert after["Choices"] == [{"Variable": "$.next", "StringEquals": "action", "Next": "Finalize"}]
    processor = tools["ItemProcessor"]
    assert processor["StartAt"] == "RunTool"
    assert processor["States"]["RunTool"]["Type"] == "Task"


def test_route_chooses_tools_redo_or_wait_on_next_else_finalizes(definition: dict[str, Any]) -> None:
    states = definition["States"]
    route = states["Route"]

    assert states["Step"]["Next"] == "Route"
    assert route["Type"] == "Choice"
    assert route["Choices"] == [
        {"Variable": "$.next", "StringEquals": "step", "Next": "Step"},  # its calls all ran in the step
        {"Variable": "$.next", "StringEquals": "tools", "Next": "Tools"},
        {"Variable": "$.next", "StringEquals": "action", "Next": "Tools"},  # then the session's turn idles
        {"Variable": "$.next", "StringEquals": "redo", "Next": "Step"},  # a routing policy's superseded answer
        {"Variable": "$.next", "StringEquals": "wait", "Next": "RetryAfter"},  # the provider's retry-after
    ]
    # a Wait state, not a sleeping Lambda, honours retry-after, then the same step is taken again
    assert states["RetryAfter"] == {"Type": "Wait", "SecondsPath": "$.wait_seconds", "Next": "Step"}
    assert states["Step"]["Parameters"]["Payload"]["waits.$"] == "$.waits"
    assert states["Step"]["Parameters"]["Payload"]["attempt.$"] == "$$.State.RetryCount"
    assert states["Step"]["Parameters"]["Payload"]["in_step"] is True  # the step may run fast calls itself
    assert route["Default"] == "Finalize"  # finish, and idle (a session's calls all wait for its client)
    assert states[states["Finalize"]["Next"]]["Type"] == "Succeed"


def test_every_task_names_its_execution_so_an_earlier_turn_never_writes_into_the_next(
    definition: dict[str, Any],
) -> None:
    tasks = {
        "Step": definition["States"]["Step"],
        "Finalize": definition["States"]["Finalize"],
        "MarkFailed": definition["States"]["MarkFailed"],
        "RunTool": definition["States"]["Tools"]["ItemProcessor"]["States"]["RunTool"],
    }
    for name, task in tasks.items():
        assert task["Parameters"]["Payload"]["execution.$"] == "$$.Execution.Name", name


def test_every_transition_targets_an_existing_state(definition: dict[str, Any]) -> None:
    def check(scope: dict[str, Any]) -> int:
        states = scope["States"]
        assert scope["StartAt"] in states
        checked = 0
        for name, state in states.items():
            targets = [state.get("Next"), state.get("Default")]
            targets += [c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])]
            for target in filter(None, targets):
                assert target in states, f"{name} -> {target}"
                checked += 1
            if "ItemProcessor" in state:
                checked += check(state["ItemProcessor"])
            assert state["Type"] in ("Succeed", "Fail", "Choice") or "Next" in state or state.get("End"), name
        return checked

    assert check(definition) >= 8


def test_state_machine_role_invokes_only_the_workflow_functions_live_aliases(
    template: Template, resources: dict[str, dict[str, Any]], aliases: dict[str, str]
) -> None:
    # Given the state machine's role
    (machine,) = template.find_resources("AWS::StepFunctions::StateMachine").values()
    role_id, _ = machine["Properties"]["RoleArn"]["Fn::GetAtt"]
    statements = role_statements(resources, role_id)

    # When collecting what it may invoke
    invoked = [resource for statement in statements_granting(statements, "lambda:InvokeFunction")
               for resource in as_list(statement["Resource"])]  # fmt: skip

    # Then it is exactly the aliases of the four workflow functions (an alias's Ref is its ARN): not the api nor
    # the intake function, and neither the functions themselves nor their versions (no wildcard)
    assert sorted(invoked, key=json.dumps) == sorted(
        ({"Ref": aliases[name]} for name in WORKFLOW_FUNCTIONS), key=json.dumps
    )


# ---------------------------------------------------------------------------------------------------------------
# Lambda
# ---------------------------------------------------------------------------------------------------------------


def test_one_function_per_handler(template: Template, functions: dict[str, tuple[str, dict[str, Any]]]) -> None:
    template.resource_count_is("AWS::Lambda::Function", len(FUNCTIONS))
    assert len(FUNCTIONS) == 11  # api, authorizer, intake, step, tool, finalize, mark_failed, workflow_ended, webhooks,
    # stream, gauges
    assert set(functions) == set(FUNCTIONS)
    for name, (_, props) in functions.items():
        # a Python handler, or (a web app the Lambda Web Adapter runs) the script that starts it
        wanted = (
            f"functions/handlers/{name}.sh" if FUNCTIONS[name].web_adapter else f"functions.handlers.{name}.handler"
        )
        assert props["Handler"] == wanted == FUNCTIONS[name].handler


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_handler_path_points_at_a_callable(name: str) -> None:
    spec = FUNCTIONS[name]
    if spec.web_adapter:  # the script the adapter's wrapper executes: executable, starting the handler module
        script = ROOT / spec.handler
        assert script.stat().st_mode & 0o111, f"{spec.handler} is not executable"
        assert f"exec python3 -m functions.handlers.{name}" in script.read_text()
        module = importlib.import_module(f"functions.handlers.{name}")
        assert callable(module.main)
    else:
        module_name, _, attribute = spec.handler.rpartition(".")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, attribute))
    # and the handler validates the settings model the declaration names (what the stack gives it follows it)
    assert module.SETTINGS is spec.settings


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_runtime_architecture_tracing_layer_and_logs(
    name: str, resources: dict[str, dict[str, Any]], functions: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    # Given the function built for this handler
    _, props = functions[name]

    # Then it runs Python 3.13 on Graviton, traced, with the dependency layer and JSON logs
    assert props["Runtime"] == "python3.13"
    assert props["Architectures"] == ["arm64"]
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["LoggingConfig"]["LogFormat"] == "JSON"
    assert props["MemorySize"] == FUNCTIONS[name].memory_mb
    assert props["Timeout"] == FUNCTIONS[name].timeout_seconds
    layer, *web_adapter = props["Layers"]  # and a web app, the Web Adapter's layer (test_event_stream.py)
    assert resources[layer["Ref"]]["Type"] == "AWS::Lambda::LayerVersion"
    assert len(web_adapter) == (1 if FUNCTIONS[name].web_adapter else 0)
    log_group = resources[props["LoggingConfig"]["LogGroup"]["Ref"]]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"]["RetentionInDays"] > 0
    env = props["Environment"]["Variables"]
    assert env["STEPWISE_TABLE"] == {"Ref": single_table_id(resources)}
    assert env["POWERTOOLS_SERVICE_NAME"] == FUNCTIONS[name].service == "stepwise-" + name.replace("_", "-")


def single_table_id(resources: dict[str, dict[str, Any]]) -> str:
    (table_id,) = [k for k, r in resources.items() if r["Type"] == "AWS::DynamoDB::GlobalTable"]
    return table_id


def test_dependency_layer_matches_the_functions(template: Template) -> None:
    template.resource_count_is("AWS::Lambda::LayerVersion", 1)
    template.has_resource_properties(
        "AWS::Lambda::LayerVersion",
        {"CompatibleRuntimes": ["python3.13"], "CompatibleArchitectures": ["arm64"]},
    )


def missing_settings(name: str, function_props: dict[str, Any]) -> list[str]:
    """The settings the function's code reads (its settings model) that its synthesised environment lacks."""
    given = function_props.get("Environment", {}).get("Variables", {})
    return [variable for variable in FUNCTIONS[name].settings.variables() if variable not in given]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_setting_a_function_reads_is_given_to_it_by_the_stack(
    name: str, functions: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    # Given the settings model the function's handler validates at cold start (its code reads nothing else:
    # the wiring takes settings groups, and mypy checks the model holds each group the handler builds from)
    _, props = functions[name]
    # Then the synthesised function is given every one of them, explicitly (no code default stands in silently)
    assert missing_settings(name, props) == []
    # and nothing it does not read (least knowledge: the api never sees the secret's ARN, for one)
    extra = set(props["Environment"]["Variables"]) - set(FUNCTIONS[name].settings.variables())
    adapter = set(WEB_ADAPTER_ENVIRONMENT) if FUNCTIONS[name].web_adapter else set()  # the adapter's own settings
    assert extra == {"POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_SERVICE_NAME", *adapter}


def test_the_check_catches_a_setting_the_stack_forgets(functions: dict[str, tuple[str, dict[str, Any]]]) -> None:
    # Given the intake function as the stack built it before functions were declared once: it scheduled
    # reservation releases, but was not given STEPWISE_RELEASE_DELAY_SECONDS (nor the watchdog's delay)
    _, props = functions["intake"]
    variables = dict(props["Environment"]["Variables"])
    before = {
        k: v
        for k, v in variables.items()
        if k not in ("STEPWISE_RELEASE_DELAY_SECONDS", "STEPWISE_WATCH_DELAY_SECONDS")
    }
    # Then the check names what is missing
    assert missing_settings("intake", {"Environment": {"Variables": before}}) == [
        "STEPWISE_RELEASE_DELAY_SECONDS",
        "STEPWISE_WATCH_DELAY_SECONDS",
    ]
    # And the stack cannot even be synthesised that way: deriving the environment refuses, naming the setting
    with pytest.raises(ValueError, match="function intake reads STEPWISE_RELEASE_DELAY_SECONDS"):
        FUNCTIONS["intake"].environment({k: v for k, v in before.items() if k.startswith("STEPWISE_")})


def test_step_function_outlives_the_model_timeout(functions: dict[str, tuple[str, dict[str, Any]]]) -> None:
    # Given the step function and the model timeout it is configured with
    _, step = functions["step"]
    model_timeout = int(step["Environment"]["Variables"]["STEPWISE_MODEL_TIMEOUT_SECONDS"])

    # Then a model call that times out still leaves the function time to report it
    assert model_timeout > 0
    assert step["Timeout"] > model_timeout


def test_the_step_function_outlives_its_loop_and_one_more_step_at_its_worst(
    functions: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    # Given the step function, which takes a run's next steps while their calls run in it (step_loop.py)
    _, step = functions["step"]
    variables = step["Environment"]["Variables"]
    loop_seconds = float(variables["STEPWISE_STEP_LOOP_SECONDS"])
    model_timeout = float(variables["STEPWISE_MODEL_TIMEOUT_SECONDS"])

    # Then a step it starts at the last moment its loop allows still ends, model call timed out, tools run
    assert int(variables["STEPWISE_STEP_LOOP_STEPS"]) >= 1 and loop_seconds > 0
    assert step["Timeout"] >= loop_seconds + worst_step_seconds(model_timeout)
    # And a reservation a cancel leaves is released only after the function cannot be running (an SQS delay)
    _, intake = functions["intake"]
    assert step["Timeout"] < int(intake["Environment"]["Variables"]["STEPWISE_RELEASE_DELAY_SECONDS"]) <= 900


def test_only_the_step_function_knows_the_secret(functions: dict[str, tuple[str, dict[str, Any]]]) -> None:
    holders = {
        name
        for name, (_, props) in functions.items()
        if "STEPWISE_ANTHROPIC_SECRET_ARN" in props["Environment"]["Variables"]
    }
    assert holders == {"step"}


# ---------------------------------------------------------------------------------------------------------------
# SQS intake
# ---------------------------------------------------------------------------------------------------------------


def queue_of(variable: str, resources: dict[str, Any], functions: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The queue the functions' ``variable`` names (STEPWISE_QUEUE_URL: intake; STEPWISE_WEBHOOKS_QUEUE_URL)."""
    (logical_id,) = {props["Environment"]["Variables"][variable]["Ref"] for _, props in functions.values()
                     if variable in props["Environment"]["Variables"]}  # fmt: skip
    return logical_id, resources[logical_id]


@pytest.fixture(scope="module")
def intake_queue(
    resources: dict[str, dict[str, Any]], functions: dict[str, tuple[str, dict[str, Any]]]
) -> tuple[str, dict[str, Any]]:
    return queue_of("STEPWISE_QUEUE_URL", resources, functions)


def test_intake_queue_redrives_to_an_encrypted_dead_letter_queue(
    template: Template, resources: dict[str, dict[str, Any]], intake_queue: tuple[str, dict[str, Any]]
) -> None:
    # intake, its dead letters, the execution-ended rule's, webhooks and their dead letters
    template.resource_count_is("AWS::SQS::Queue", 5)
    queue_id, queue = intake_queue
    redrive = queue["Properties"]["RedrivePolicy"]

    # Then poison messages land, after 5 receives, in another queue of this stack
    assert redrive["maxReceiveCount"] == INTAKE_MAX_RECEIVE_COUNT == 5
    dlq_id, attribute = redrive["deadLetterTargetArn"]["Fn::GetAtt"]
    assert attribute == "Arn"
    assert dlq_id != queue_id
    assert resources[dlq_id]["Type"] == "AWS::SQS::Queue"
    # and both queues are encrypted at rest with SQS-managed keys
    for logical_id in (queue_id, dlq_id):
        assert resources[logical_id]["Properties"]["SqsManagedSseEnabled"] is True
    # and the DLQ keeps messages long enough to be looked at
    assert resources[dlq_id]["Properties"]["MessageRetentionPeriod"] >= 4 * 24 * 3600


def test_intake_queue_visibility_covers_six_consumer_timeouts(
    intake_queue: tuple[str, dict[str, Any]], functions: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    _, queue = intake_queue
    assert queue["Properties"]["VisibilityTimeout"] >= 6 * functions["intake"][1]["Timeout"]


def test_intake_function_drains_the_queue_with_bounded_concurrency_and_partial_failures(
    template: Template, intake_queue: tuple[str, dict[str, Any]], aliases: dict[str, str]
) -> None:
    template.resource_count_is("AWS::Lambda::EventSourceMapping", 2)  # intake's, webhooks'
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": {"Fn::GetAtt": [intake_queue[0], "Arn"]},
            # the alias, as name:live (the function's name taken from the alias's ARN)
            "FunctionName": {
                "Fn::Join": ["", [{"Fn::Select": [6, {"Fn::Split": [":", {"Ref": aliases["intake"]}]}]}, ":live"]]
            },
            "ScalingConfig": {"MaximumConcurrency": 10},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    )


def test_every_queue_policy_denies_insecure_transport(template: Template) -> None:
    # Given every queue and every queue policy
    queue_ids = set(template.find_resources("AWS::SQS::Queue"))
    policies = template.find_resources("AWS::SQS::QueuePolicy").values()

    # When collecting the queues covered by an SSL-only deny
    enforced: set[str] = set()
    for policy in policies:
        props = policy["Properties"]
        for statement in props["PolicyDocument"]["Statement"]:
            if (
                statement["Effect"] == "Deny"
                and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
                and "sqs:*" in as_list(statement["Action"])
                and statement["Principal"] == {"AWS": "*"}
            ):
                enforced.update(ref["Ref"] for ref in props["Queues"])

    # Then no queue is left out
    assert queue_ids
    assert enforced == queue_ids


# ---------------------------------------------------------------------------------------------------------------
# DynamoDB
# ---------------------------------------------------------------------------------------------------------------


def test_single_on_demand_table_with_pk_sk_pitr_and_ttl(template: Template) -> None:
    template.resource_count_is("AWS::DynamoDB::GlobalTable", 1)
    template.resource_count_is("AWS::DynamoDB::Table", 0)
    template.has_resource_properties(
        "AWS::DynamoDB::GlobalTable",
        {
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            "AttributeDefinitions": Match.array_with(
                [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}]
            ),
            "BillingMode": "PAY_PER_REQUEST",
            "Replicas": Match.array_with(
                [Match.object_like({"PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True}})]
            ),
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        },
    )


def test_table_is_retained_by_default(template: Template) -> None:
    (table,) = template.find_resources("AWS::DynamoDB::GlobalTable").values()
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"


# ---------------------------------------------------------------------------------------------------------------
# HTTP API
# ---------------------------------------------------------------------------------------------------------------


def test_http_api(template: Template) -> None:
    template.resource_count_is("AWS::ApiGatewayV2::Api", 1)
    template.has_resource_properties("AWS::ApiGatewayV2::Api", {"ProtocolType": "HTTP"})


def test_routes_are_exactly_the_contract(template: Template) -> None:
    routes = template.find_resources("AWS::ApiGatewayV2::Route").values()
    keys = [route["Properties"]["RouteKey"] for route in routes]
    assert sorted(keys) == sorted(EXPECTED_ROUTES)


def test_every_route_but_health_has_the_api_key_authorizer(
    template: Template, resources: dict[str, dict[str, Any]], aliases: dict[str, str]
) -> None:
    routes = template.find_resources("AWS::ApiGatewayV2::Route").values()
    auth = {route["Properties"]["RouteKey"]: route["Properties"] for route in routes}

    assert auth.pop("GET /health").get("AuthorizationType", "NONE") == "NONE"
    assert auth.pop("GET /openapi.json").get("AuthorizationType", "NONE") == "NONE"
    assert auth and {props["AuthorizationType"] for props in auth.values()} == {"CUSTOM"}
    (authorizer_id,) = {props["AuthorizerId"]["Ref"] for props in auth.values()}  # one authorizer for all
    authorizer = resources[authorizer_id]["Properties"]
    assert authorizer["AuthorizerType"] == "REQUEST" and authorizer["EnableSimpleResponses"] is True
    assert authorizer["AuthorizerPayloadFormatVersion"] == "2.0"
    assert authorizer.get("IdentitySource", []) == [] and authorizer["AuthorizerResultTtlInSeconds"] == 0
    # it is the authorizer function (functions/handlers/authorizer.py), through its alias
    assert {"Ref": aliases["authorizer"]} in authorizer["AuthorizerUri"]["Fn::Join"][1]


def test_the_authorizer_may_only_read_api_key_items(statements_by_function: dict[str, list[dict[str, Any]]]) -> None:
    statements = statements_by_function["authorizer"]
    table = [s for s in statements if any(str(a).startswith("dynamodb:") for a in as_list(s["Action"]))]
    (statement,) = table
    assert as_list(statement["Action"]) == ["dynamodb:GetItem"]
    assert statement["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["APIKEY#*"]}}
    others = {a for s in statements if s not in table for a in as_list(s["Action"])}
    assert others <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}  # nothing else but tracing


def test_every_route_proxies_to_the_api_function(
    template: Template, resources: dict[str, dict[str, Any]], aliases: dict[str, str]
) -> None:
    routes = template.find_resources("AWS::ApiGatewayV2::Route").values()
    for route in routes:
        # Route targets are "integrations/<Ref integration>"
        prefix, integration_ref = route["Properties"]["Target"]["Fn::Join"][1]
        assert prefix == "integrations/"
        integration = resources[integration_ref["Ref"]]["Properties"]
        assert integration["IntegrationType"] == "AWS_PROXY"
        assert integration["IntegrationUri"] == {"Ref": aliases["api"]}  # its live alias


def test_stage_has_access_logs_and_throttling(template: Template, resources: dict[str, dict[str, Any]]) -> None:
    template.has_resource_properties(
        "AWS::ApiGatewayV2::Stage",
        {
            "AccessLogSettings": {"DestinationArn": Match.any_value(), "Format": Match.any_value()},
            "DefaultRouteSettings": Match.object_like(
                {"ThrottlingRateLimit": Match.any_value(), "ThrottlingBurstLimit": Match.any_value()}
            ),
        },
    )
    (stage,) = template.find_resources("AWS::ApiGatewayV2::Stage").values()
    props = stage["Properties"]
    access_log_format = json.loads(props["AccessLogSettings"]["Format"])
    assert {"requestId", "routeKey", "status"} <= set(access_log_format)
    log_group_id, _ = props["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"]
    assert resources[log_group_id]["Type"] == "AWS::Logs::LogGroup"
    throttling = props["DefaultRouteSettings"]
    assert 0 < throttling["ThrottlingRateLimit"] <= throttling["ThrottlingBurstLimit"]


# ---------------------------------------------------------------------------------------------------------------
# IAM: least privilege
# ---------------------------------------------------------------------------------------------------------------


def test_api_function_permissions(statements_by_function: dict[str, list[dict[str, Any]]]) -> None:
    # Given everything the api function's role allows
    actions = allowed_actions(statements_by_function["api"])

    # Then it can create, read and update runs, agents and sessions, list and delete sessions, enqueue runs and
    # turns, and stop executions
    assert {"dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"} <= actions
    assert {"dynamodb:BatchGetItem", "dynamodb:DeleteItem"} <= actions
    assert "sqs:SendMessage" in actions
    assert "states:StopExecution" in actions
    # but it neither starts executions (the intake function does) nor scans or writes in bulk
    assert "states:StartExecution" not in actions
    assert not actions & {"dynamodb:Scan", "dynamodb:*", "dynamodb:BatchWriteItem", "*"}


def test_api_function_stops_only_executions_of_this_state_machine(
    template: Template, statements_by_function: dict[str, list[dict[str, Any]]]
) -> None:
    (machine_id,) = template.find_resources("AWS::StepFunctions::StateMachine")
    (statement,) = statements_granting(statements_by_function["api"], "states:StopExecution")

    separator, parts = statement["Resource"]["Fn::Join"]
    assert separator == ""
    assert ":execution:" in parts
    assert {"Fn::GetAtt": [machine_id, "Name"]} in parts
    assert parts[-1] == ":*"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_table_access_is_exactly_what_each_function_declares(
    name: str, resources: dict[str, dict[str, Any]], statements_by_function: dict[str, list[dict[str, Any]]]
) -> None:
    # (tests/e2e/test_iam_coverage.py checks the declaration covers every call the code makes)
    statements = statements_by_function[name]
    queries_an_index = {"dynamodb:Query"} if FUNCTIONS[name].index_queries else set()
    assert allowed_actions(statements, "dynamodb:") == set(FUNCTIONS[name].table_actions) | queries_an_index
    assert not set(FUNCTIONS[name].table_actions) & {"dynamodb:Scan", "dynamodb:*", "dynamodb:BatchWriteItem"}
    # and only on the table itself (no other table, no wildcard), but a Query of the indexes it declares
    table_arn = {"Fn::GetAtt": [single_table_id(resources), "Arn"]}
    indexes = [{"Fn::Join": ["", [table_arn, f"/index/{index}"]]} for index in FUNCTIONS[name].index_queries]
    for statement in statements:
        if any(action.startswith("dynamodb:") for action in as_list(statement["Action"])):
            if as_list(statement["Action"]) == ["dynamodb:Query"] and indexes:
                assert as_list(statement["Resource"]) == indexes, name
                continue
            assert as_list(statement["Resource"]) == [table_arn], name


def test_the_index_of_active_work_is_sparse_small_and_queried_by_the_api_and_the_gauges_alone(
    resources: dict[str, dict[str, Any]], statements_by_function: dict[str, list[dict[str, Any]]]
) -> None:
    # Given the table's one index
    (index,) = resources[single_table_id(resources)]["Properties"]["GlobalSecondaryIndexes"]
    # Then it is keyed by the attributes only active runs have, and carries the few a listing shows
    assert index["IndexName"] == ACTIVE_INDEX
    assert index["KeySchema"] == [{"AttributeName": ACTIVE_PK, "KeyType": "HASH"},
                                  {"AttributeName": ACTIVE_SK, "KeyType": "RANGE"}]  # fmt: skip
    assert index["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(ACTIVE_PROJECTION)}
    # And only the api function (the kill switch) and the gauges (the count) may Query it (no function has a grant
    # on every index)
    readers = {name for name, statements in statements_by_function.items()
               if any("/index/" in json.dumps(s["Resource"]) for s in statements)}  # fmt: skip
    assert readers == {"api", "gauges"}
    assert "/index/*" not in json.dumps(statements_by_function)


def test_an_operators_kill_switch_releases_after_the_deployments_delay(
    functions: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    # `stepwise kill --table` schedules releases with the settings' default delay: the one the stack gives
    deployed = functions["api"][1]["Environment"]["Variables"]["STEPWISE_RELEASE_DELAY_SECONDS"]
    assert int(deployed) == StopSettings.model_fields["release_delay_seconds"].default


def test_only_the_intake_function_starts_executions_of_the_state_machine(
    template: Template, statements_by_function: dict[str, list[dict[str, Any]]]
) -> None:
    starters = {
        name
        for name, statements in statements_by_function.items()
        if statements_granting(statements, "states:StartExecution")
    }
    assert starters == {"intake"}

    (machine_id,) = template.find_resources("AWS::StepFunctions::StateMachine")
    (statement,) = statements_granting(statements_by_function["intake"], "states:StartExecution")
    assert statement["Resource"] == {"Ref": machine_id}


def test_only_the_step_function_reads_the_anthropic_secret(
    template: Template, statements_by_function: dict[str, list[dict[str, Any]]]
) -> None:
    readers = {
        name
        for name, statements in statements_by_function.items()
        if statements_granting(statements, "secretsmanager:GetSecretValue")
    }
    assert readers == {"step"}

    (secret_id,) = template.find_resources("AWS::SecretsManager::Secret")
    (statement,) = statements_granting(statements_by_function["step"], "secretsmanager:GetSecretValue")
    assert statement["Resource"] == {"Ref": secret_id}


def test_only_the_api_intake_and_workflow_ended_functions_send_to_the_intake_queue(
    statements_by_function: dict[str, list[dict[str, Any]]],
    functions: dict[str, tuple[str, dict[str, Any]]],
    intake_queue: tuple[str, dict[str, Any]],
) -> None:
    # new runs (api), delayed reservation releases (api after a cancel, workflow_ended after a timeout) and
    # the run watchdog's checks (intake schedules them, and may release after ending a stuck run)
    senders = {
        name
        for name, statements in statements_by_function.items()
        if any(s["Resource"] == {"Fn::GetAtt": [intake_queue[0], "Arn"]}
               for s in statements_granting(statements, "sqs:SendMessage"))
    }  # fmt: skip
    assert senders == {"api", "intake", "workflow_ended"}
    assert statements_granting(statements_by_function["intake"], "states:DescribeExecution")
    assert statements_granting(statements_by_function["intake"], "states:StopExecution")  # a cancel's, retried
    step_timeout = functions["step"][1]["Timeout"]
    for name in ("api", "intake", "workflow_ended"):  # every function that may schedule a release
        env = functions[name][1]["Environment"]["Variables"]
        assert int(env["STEPWISE_RELEASE_DELAY_SECONDS"]) > step_timeout  # a release never beats its call


def test_no_policy_grants_wildcard_actions(resources: dict[str, dict[str, Any]]) -> None:
    documents = list(all_policy_documents(resources))
    assert len(documents) >= len(FUNCTIONS) + 2  # one per function role, the state machine role, the queues

    for logical_id, document in documents:
        for statement in document["Statement"]:
            actions = as_list(statement.get("Action", []))
            assert "*" not in actions, logical_id
            if statement["Effect"] == "Allow":
                assert "dynamodb:*" not in actions, logical_id
                # No "<service>:*" is ever allowed (the SQS SSL-only policies deny "sqs:*", which is fine).
                assert not [a for a in actions if a.endswith(":*")], (logical_id, actions)


def test_wildcard_resources_are_only_for_account_level_apis(resources: dict[str, dict[str, Any]]) -> None:
    account_level = ("xray:", "logs:")
    for logical_id, document in all_policy_documents(resources):
        for statement in document["Statement"]:
            if statement["Effect"] == "Allow" and "*" in as_list(statement.get("Resource")):
                actions = as_list(statement["Action"])
                assert all(a.startswith(account_level) for a in actions), (logical_id, actions)


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


def test_outputs(template: Template) -> None:
    (api_id,) = template.find_resources("AWS::ApiGatewayV2::Api")
    template.has_output(
        "ApiUrl",
        {"Value": {"Fn::Join": ["", Match.array_with([{"Fn::GetAtt": [api_id, "ApiEndpoint"]}])]}},
    )
    outputs = template.to_json()["Outputs"]
    assert {"ApiUrl", "StateMachineArn", "TableName", "AnthropicSecretName", "IntakeDeadLetterQueueUrl"} <= set(outputs)


def execution_ended_rule(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The stack's one rule on events (its other rule is the gauges' schedule)."""
    (rule,) = [r for r in resources.values() if r["Type"] == "AWS::Events::Rule" and "EventPattern" in r["Properties"]]
    return rule


def test_executions_that_end_outside_the_graph_still_end_their_run(
    template: Template, resources: dict[str, dict[str, Any]], aliases: dict[str, str]
) -> None:
    # Given the EventBridge rule on Step Functions execution status changes
    rule = execution_ended_rule(resources)
    pattern = rule["Properties"]["EventPattern"]
    # Then it matches this state machine's timed-out, failed and aborted executions
    assert pattern["source"] == ["aws.states"]
    assert pattern["detail-type"] == ["Step Functions Execution Status Change"]
    assert sorted(pattern["detail"]["status"]) == ["ABORTED", "FAILED", "TIMED_OUT"]
    (machine_id,) = [lid for lid, r in resources.items() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    assert pattern["detail"]["stateMachineArn"] == [{"Ref": machine_id}]
    # And it targets the workflow_ended function's alias with retries
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": aliases["workflow_ended"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 8


def test_the_dead_letter_queue_has_an_alarm_and_intake_knows_the_receive_limit(
    template: Template,
    resources: dict[str, dict[str, Any]],
    functions: dict[str, tuple[str, dict[str, Any]]],
    intake_queue: tuple[str, dict[str, Any]],
) -> None:
    alarms = template.find_resources("AWS::CloudWatch::Alarm").values()
    intake_queue_id = intake_queue[0]
    dlq_id = resources[intake_queue_id]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    (props,) = [a["Properties"] for a in alarms if dlq_id in json.dumps(a["Properties"].get("Dimensions", []))]
    assert props["MetricName"] == "ApproximateNumberOfMessagesVisible" and props["Threshold"] == 1
    (dimension,) = props["Dimensions"]
    assert dimension["Value"] == {"Fn::GetAtt": [dlq_id, "QueueName"]}
    env = functions["intake"][1]["Environment"]["Variables"]
    assert env["STEPWISE_INTAKE_MAX_RECEIVE_COUNT"] == "5"


def test_budget_alarms_watch_the_metric_the_step_function_emits() -> None:
    # Given a stack deployed with both daily budgets
    app = cdk.App(context=SKIP_BUNDLING)
    stack = StepwiseStack(
        app, "Budgeted", default_model="claude-sonnet-4-5", tenant_daily_budget_usd=20, global_daily_budget_usd=200
    )
    template = Template.from_stack(stack)
    resources = template.to_json()["Resources"]
    step_env = next(
        r["Properties"]["Environment"]["Variables"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == "functions.handlers.step.handler"
    )
    # Then the step function gets the limits
    assert step_env["STEPWISE_TENANT_DAILY_BUDGET_USD"] == "20"
    assert step_env["STEPWISE_GLOBAL_DAILY_BUDGET_USD"] == "200"
    # And there are alarms at 50/80/90/100 % for each budget, on exactly the dimensions powertools emits:
    # the Budget dimension and `service` = the function's POWERTOOLS_SERVICE_NAME
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    budget_alarms = [a for a in alarms if a.get("MetricName") == "BudgetUsedPercent"]
    seen = set()
    for alarm in budget_alarms:
        dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert dimensions["service"] == step_env["POWERTOOLS_SERVICE_NAME"]
        assert alarm["Namespace"] == "Stepwise" and alarm["Statistic"] == "Maximum"
        seen.add((dimensions["Budget"], alarm["Threshold"]))
    assert seen == {(b, t) for b in ("TenantDaily", "GlobalDaily") for t in (50, 80, 90, 100)}


def test_a_bedrock_enabled_stack_grants_invoke_model_to_the_step_function_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the app deployed with -c bedrock_fallback=true (cdk-nag checks run on synth)
    for key in ("CDK_DEFAULT_REGION", "CDK_DEFAULT_ACCOUNT"):
        monkeypatch.delenv(key, raising=False)
    app = build_app(cdk.App(context={**SKIP_BUNDLING, "bedrock_fallback": "true"}))
    template = app.synth().get_stack_by_name("Stepwise").template
    # Then only the step function may call Bedrock, only for Claude, and both step and api know it is on
    grants: dict[str, list[Any]] = {}
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            if "bedrock:InvokeModel" in as_list(statement["Action"]):
                role = resource["Properties"]["Roles"][0]["Ref"]
                grants[role] = as_list(statement["Resource"])
    (role, resources) = next(iter(grants.items()))
    assert len(grants) == 1 and "step" in role
    assert "arn:aws:bedrock:*::foundation-model/anthropic.claude-*" in resources
    functions = {
        r["Properties"]["Handler"]: r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
    }
    for handler in ("functions.handlers.step.handler", "functions.handlers.api.handler"):
        assert functions[handler]["Environment"]["Variables"]["STEPWISE_BEDROCK_FALLBACK"] == "true"
    assert "STEPWISE_BEDROCK_FALLBACK" not in functions["functions.handlers.tool.handler"]["Environment"]["Variables"]
    assert "STEPWISE_BEDROCK_FALLBACK" in FUNCTIONS["api"].settings.variables()  # the api refuses Bedrock models


def test_every_lambda_task_has_a_timeout_beyond_its_functions_own(
    definition: dict[str, Any], functions: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    states = dict(definition["States"])
    states.update(definition["States"]["Tools"]["ItemProcessor"]["States"])
    tasks = {name: state for name, state in states.items() if state["Type"] == "Task"}
    assert set(tasks) == {"Step", "RunTool", "RecordToolFailure", "Finalize", "MarkFailed"}
    own = {"Step": "step", "RunTool": "tool", "RecordToolFailure": "tool", "Finalize": "finalize",
           "MarkFailed": "mark_failed"}  # fmt: skip
    for name, state in tasks.items():
        assert state["TimeoutSeconds"] > functions[own[name]][1]["Timeout"], name


def test_the_gauges_are_counted_every_minute_through_their_alias_never_retried_and_read_only_the_index(
    resources: dict[str, dict[str, Any]],
    functions: dict[str, tuple[str, dict[str, Any]]],
    aliases: dict[str, str],
    statements_by_function: dict[str, list[dict[str, Any]]],
) -> None:
    # Given the schedule
    (rule,) = [r for r in resources.values() if r["Type"] == "AWS::Events::Rule" and "EventPattern" not in
               r["Properties"]]  # fmt: skip
    # Then it invokes the gauges function's alias every minute, and a minute it could not deliver is dropped
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": aliases["gauges"]}
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}
    assert "DeadLetterConfig" not in target
    # And Lambda does not retry a count that failed either (on the alias: its name taken from the alias's ARN)
    (config,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
    assert config["FunctionName"] == {"Ref": functions["gauges"][0]}
    assert config["Qualifier"]["Fn::Select"][1]["Fn::Split"][1] == {"Ref": aliases["gauges"]}
    assert (config["MaximumRetryAttempts"], config["MaximumEventAgeInSeconds"]) == (0, 60)
    # And the function may Query the index of active work, and nothing else of the table or of anything
    statements = statements_by_function["gauges"]
    assert allowed_actions(statements) == {"dynamodb:Query"}
    (query,) = statements_granting(statements, "dynamodb:Query")
    table_arn = {"Fn::GetAtt": [single_table_id(resources), "Arn"]}
    assert query["Resource"] == {"Fn::Join": ["", [table_arn, f"/index/{ACTIVE_INDEX}"]]}
    assert functions["gauges"][1]["MemorySize"] == 128


def test_the_execution_ended_rule_keeps_what_it_could_not_deliver(resources: dict[str, dict[str, Any]]) -> None:
    (target,) = execution_ended_rule(resources)["Properties"]["Targets"]
    queue_id = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    assert resources[queue_id]["Type"] == "AWS::SQS::Queue"
    alarms = [r for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert any(
        queue_id in json.dumps(alarm["Properties"]["Dimensions"])
        for alarm in alarms
        if "Dimensions" in alarm["Properties"]
    )


def test_the_public_health_route_is_throttled_on_its_own(resources: dict[str, dict[str, Any]]) -> None:
    (stage,) = [r for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
    health = stage["Properties"]["RouteSettings"]["GET /health"]
    default = stage["Properties"]["DefaultRouteSettings"]
    assert health["ThrottlingRateLimit"] < default["ThrottlingRateLimit"]
    assert health["ThrottlingBurstLimit"] < default["ThrottlingBurstLimit"]


def test_no_function_but_the_authorizer_may_touch_api_keys_and_none_may_write_tenant_limits(
    statements_by_function: dict[str, list[dict[str, Any]]],
) -> None:
    for name, statements in statements_by_function.items():
        denied = [s for s in statements if s["Effect"] == "Deny"]
        if name in ("authorizer", "webhooks"):  # allowed nothing but their own partitions (dynamodb:LeadingKeys)
            assert denied == []
            continue
        if name == "stream":  # limited to its partitions by its Allow (none of these); of them, it writes tickets only
            (allowed,) = [s for s in statements if s["Effect"] == "Allow" and "dynamodb:Query" in s["Action"]]
            # runs' and sessions' partitions only: not a tenant's agents, spend or cached model responses
            partitions = {"dynamodb:LeadingKeys": ["T#*#R#*", "TICKET#*"]}
            assert allowed["Condition"] == {"ForAllValues:StringLike": partitions}
            (secrets,) = [s for s in denied if s["Action"] == "dynamodb:*"]  # not the webhooks' signing secrets
            assert secrets["Condition"] == {"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": ["T#*#WEBHOOKS"]}}
            (writes,) = [s for s in denied if s is not secrets]
            assert "dynamodb:DeleteItem" in writes["Action"]
            assert writes["Condition"] == {"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": ["T#*#R#*"]}}
            continue
        (keys,) = [s for s in denied if s["Action"] == "dynamodb:*"]
        (limits,) = [s for s in denied if s is not keys]
        assert keys["Action"] == "dynamodb:*"
        # nor (but the api, which registers them) read or write the secrets that sign a tenant's webhooks
        denied_keys = ["APIKEY#*", "KEYS", *([] if name == "api" else ["T#*#WEBHOOKS"])]
        assert keys["Condition"] == {"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": denied_keys}}
        # nor raise its own tenant's limits (an operator writes them; the api and step functions only read them)
        assert sorted(limits["Action"]) == sorted(
            ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"]
        )
        partitions = ["TENANTS"] if name == "api" else ["TENANTS", "RATE#*"]  # only the api counts requests
        assert limits["Condition"] == {"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": partitions}}
