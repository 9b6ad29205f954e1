"""Safe deploys, as synthesised: every function published as a version behind its ``live`` alias and every
invoker calling the alias; with a canary or linear ``deploy_strategy``, CodeDeploy shifting each alias and rolling
it back on its alarm (cdk-nag clean); without one, no CodeDeploy at all; a strategy it does not know fails synth."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template

from app import build_app
from infra.constants import ROLLBACK_ERROR_PERCENT, ROLLBACK_MIN_ERRORS, ROLLBACK_MINUTES
from infra.constructs.agent_functions import ALIAS
from infra.constructs.deploys import DEPLOY_STRATEGIES, deploy_strategy
from infra.functions import FUNCTIONS
from infra.stacks.stepwise_stack import StepwiseStack
from tests.infrastructure.test_stack import SKIP_BUNDLING, as_list, live_aliases, walk_states

Resources = dict[str, dict[str, Any]]
# where a function may be named: its versions, its aliases, and the metrics of alarms and dashboards
MAY_NAME_A_FUNCTION = {"AWS::Lambda::Version", "AWS::Lambda::Alias", "AWS::CloudWatch::Alarm",
                       "AWS::CloudWatch::Dashboard"}  # fmt: skip
ROLLBACK_EVENTS = {"DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM", "DEPLOYMENT_STOP_ON_REQUEST"}


def synth(**context: Any) -> tuple[StepwiseStack, Resources]:
    """The app as `cdk synth` builds it, cdk-nag included (an unacknowledged finding raises here)."""
    with pytest.MonkeyPatch.context() as patch:
        for key in ("CDK_DEFAULT_REGION", "CDK_DEFAULT_ACCOUNT"):
            patch.delenv(key, raising=False)
        app = build_app(cdk.App(context={**SKIP_BUNDLING, **context}))
        resources = dict(app.synth().get_stack_by_name("Stepwise").template["Resources"])
    stack = app.node.find_child("Stepwise")
    assert isinstance(stack, StepwiseStack)
    return stack, resources


@pytest.fixture(scope="module")
def default() -> tuple[StepwiseStack, Resources]:
    return synth()


@pytest.fixture(scope="module")
def canary() -> tuple[StepwiseStack, Resources]:
    """With a Lambda tool too: the workflow's tasks that record its results are the tool function's."""
    return synth(deploy_strategy="canary_10pct_5m", lambda_tools=json.dumps([{"function": "refund-order"}]))


def of_type(resources: Resources, kind: str) -> Resources:
    return {lid: r for lid, r in resources.items() if r["Type"] == kind}


def functions(resources: Resources) -> dict[str, tuple[str, dict[str, Any]]]:
    """Function name (infra/functions.py) -> (logical id, properties), found by its declared handler."""
    found = of_type(resources, "AWS::Lambda::Function")
    names = {spec.handler: name for name, spec in FUNCTIONS.items()}
    return {names[r["Properties"]["Handler"]]: (lid, r["Properties"]) for lid, r in found.items()}


def aliases(resources: Resources) -> dict[str, str]:
    return live_aliases(resources, functions(resources))


def lambda_tasks(resources: Resources) -> dict[str, Any]:
    """State name -> the FunctionName of each Lambda invoke task of the state machine, each token as it is in the
    template (a Ref to a resource, not rendered)."""
    (machine,) = of_type(resources, "AWS::StepFunctions::StateMachine").values()
    _, parts = machine["Properties"]["DefinitionString"]["Fn::Join"]
    tokens = [part for part in parts if not isinstance(part, str)]
    text = "".join(part if isinstance(part, str) else f"@@{tokens.index(part)}@@" for part in parts)
    definition = json.loads(text)
    tasks = {}
    for name, state in walk_states(definition["States"]):
        if state.get("Type") == "Task" and state.get("Resource", "").endswith(":states:::lambda:invoke"):
            target = state["Parameters"].get("FunctionName", state["Parameters"].get("FunctionName.$"))
            token = re.fullmatch(r"@@(\d+)@@", target)
            tasks[name] = tokens[int(token.group(1))] if token else target
    return tasks


def on_an_alias(config: dict[str, Any], resources: Resources) -> bool:
    """Whether an EventInvokeConfig's qualifier is an alias's name (taken from the alias's ARN), not ``$LATEST``."""
    qualifier = json.dumps(config["Properties"]["Qualifier"])
    return any(json.dumps({"Ref": lid}) in qualifier for lid in of_type(resources, "AWS::Lambda::Alias"))


def bypassing_references(resources: Resources) -> list[tuple[str, str]]:
    """(resource, function) for every resource naming a function where an invoker would: anything but the
    function's versions and aliases, and metrics (whatever invokes a function must invoke its alias)."""
    found = []
    for function in of_type(resources, "AWS::Lambda::Function"):
        arn, name = json.dumps({"Fn::GetAtt": [function, "Arn"]}), json.dumps({"Ref": function})
        for logical_id, resource in resources.items():
            if resource["Type"] == "AWS::Lambda::Url" and resource["Properties"].get("Qualifier") == ALIAS:
                continue  # a URL on the alias: CloudFormation names it by the function's ARN and the alias's name
            if resource["Type"] == "AWS::Lambda::EventInvokeConfig" and on_an_alias(resource, resources):
                continue  # the alias's asynchronous invocations: named by the function's name and the alias's
            text = json.dumps(resource)
            if arn in text or (name in text and resource["Type"] not in MAY_NAME_A_FUNCTION):
                found.append((logical_id, function))
    return found


# ---------------------------------------------------------------------------------------------------------------
# Versions and aliases (every deployment)
# ---------------------------------------------------------------------------------------------------------------


def test_every_function_is_published_as_a_retained_version_behind_its_live_alias(
    default: tuple[StepwiseStack, Resources],
) -> None:
    _, resources = default
    versions = of_type(resources, "AWS::Lambda::Version")
    for name, (function, _) in functions(resources).items():
        # one version of the function, kept when the next one is published (the alias can be pointed back at it)
        (version,) = [lid for lid, v in versions.items() if v["Properties"]["FunctionName"] == {"Ref": function}]
        assert versions[version]["DeletionPolicy"] == "Retain", name
        # and its live alias points at it
        alias = resources[aliases(resources)[name]]["Properties"]
        assert alias["FunctionVersion"] == {"Fn::GetAtt": [version, "Version"]}, name
    assert len(versions) == len(FUNCTIONS) == len(of_type(resources, "AWS::Lambda::Alias"))


def test_every_invoker_calls_a_live_alias_never_a_function(default: tuple[StepwiseStack, Resources]) -> None:
    _, resources = default
    live = {json.dumps({"Ref": alias}) for alias in aliases(resources).values()}

    def alias(value: Any) -> bool:
        return json.dumps(value) in live

    # the workflow's tasks
    tasks = lambda_tasks(resources)
    assert set(tasks) == {"Step", "RunTool", "RecordToolFailure", "Finalize", "MarkFailed"}
    assert all(alias(target) for target in tasks.values()), tasks
    # API Gateway: the api function's integration, the authorizer, and their permissions
    integrations = [r["Properties"] for r in of_type(resources, "AWS::ApiGatewayV2::Integration").values()]
    assert integrations and all(alias(i["IntegrationUri"]) for i in integrations)
    (authorizer,) = of_type(resources, "AWS::ApiGatewayV2::Authorizer").values()
    assert any(alias(part) for part in authorizer["Properties"]["AuthorizerUri"]["Fn::Join"][1])
    permissions = [r["Properties"] for r in of_type(resources, "AWS::Lambda::Permission").values()]
    assert len(permissions) > len(integrations) and all(alias(p["FunctionName"]) for p in permissions)
    # the intake and webhooks queues' event source mappings (name:live, the name taken from the alias's ARN)
    mappings = of_type(resources, "AWS::Lambda::EventSourceMapping").values()
    assert len(mappings) == 2
    for mapping in mappings:
        (name_part, qualifier) = mapping["Properties"]["FunctionName"]["Fn::Join"][1]
        assert alias(name_part["Fn::Select"][1]["Fn::Split"][1]) and qualifier == ":live"
    # the execution-ended rule and the gauges' schedule
    rules = of_type(resources, "AWS::Events::Rule").values()
    assert len(rules) == 2
    assert all(alias(target["Arn"]) for rule in rules for target in rule["Properties"]["Targets"])
    # the gauges' asynchronous invocations are configured on the alias (qualified by its name), not the function
    (config,) = of_type(resources, "AWS::Lambda::EventInvokeConfig").values()
    assert alias(config["Properties"]["Qualifier"]["Fn::Select"][1]["Fn::Split"][1])
    # the stream function's URL (on the alias: the function's ARN qualified by the alias's name)
    (url,) = of_type(resources, "AWS::Lambda::Url").values()
    stream_function, _ = functions(resources)["stream"]
    assert url["Properties"]["TargetFunctionArn"] == {"Fn::GetAtt": [stream_function, "Arn"]}
    assert url["Properties"]["Qualifier"] == ALIAS


@pytest.mark.parametrize("strategy", ["default", "canary"])
def test_nothing_names_a_function_but_its_version_its_alias_and_metrics(
    strategy: str, request: pytest.FixtureRequest
) -> None:
    _, resources = request.getfixturevalue(strategy)
    assert bypassing_references(resources) == []


def test_the_check_catches_an_invoker_that_bypasses_the_alias() -> None:
    # Given a stack where something invokes a function itself (a function URL on it, not on its alias)
    app = cdk.App(context=SKIP_BUNDLING)
    stack = StepwiseStack(app, "Stepwise", default_model="claude-sonnet-4-5")
    stack.functions["api"].add_function_url(auth_type=lambda_.FunctionUrlAuthType.AWS_IAM)
    resources = Template.from_stack(stack).to_json()["Resources"]

    # Then the check names it (and not the stream function's URL, which is on its alias)
    (url,) = [lid for lid, r in of_type(resources, "AWS::Lambda::Url").items() if "Qualifier" not in r["Properties"]]
    assert bypassing_references(resources) == [(url, functions(resources)["api"][0])]


def test_a_change_to_a_function_publishes_a_new_version_of_it_alone_and_moves_its_alias() -> None:
    def published(default_model: str) -> dict[str, tuple[str, Any]]:
        """Function name -> (its version's logical id, what its alias points at)."""
        stack = StepwiseStack(cdk.App(context=SKIP_BUNDLING), "Stepwise", default_model=default_model)
        resources = Template.from_stack(stack).to_json()["Resources"]
        versions = {r["Properties"]["FunctionName"]["Ref"]: lid
                    for lid, r in of_type(resources, "AWS::Lambda::Version").items()}  # fmt: skip
        return {name: (versions[function], resources[aliases(resources)[name]]["Properties"]["FunctionVersion"])
                for name, (function, _) in functions(resources).items()}  # fmt: skip

    # the same configuration is the same version (a deploy that changes nothing publishes nothing) ...
    before = published("claude-sonnet-4-5")
    assert published("claude-sonnet-4-5") == before
    # ... and a setting given at synth, after the version was made (``configure``), is a new version of the
    # function that reads it (the api function: STEPWISE_DEFAULT_MODEL), its alias on it; the others stay
    after = published("claude-haiku-4-5")
    assert after["api"][0] != before["api"][0] and after["api"][1] == {"Fn::GetAtt": [after["api"][0], "Version"]}
    assert {name: v for name, v in after.items() if name != "api"} == {n: v for n, v in before.items() if n != "api"}


# ---------------------------------------------------------------------------------------------------------------
# deploy_strategy
# ---------------------------------------------------------------------------------------------------------------


def test_all_at_once_has_no_codedeploy_and_no_rollback_alarm(default: tuple[StepwiseStack, Resources]) -> None:
    stack, resources = default
    assert not [r for r in resources.values() if r["Type"].startswith("AWS::CodeDeploy::")]
    assert not [a for a in of_type(resources, "AWS::Lambda::Alias").values() if "UpdatePolicy" in a]
    assert "AWS/Lambda" not in json.dumps(of_type(resources, "AWS::CloudWatch::Alarm"))
    assert stack.deploys.rollback_alarms == [] and stack.deploys.deployment_groups == {}


def test_a_canary_shifts_every_alias_with_codedeploy_and_rolls_back_on_its_own_alarm(
    canary: tuple[StepwiseStack, Resources],
) -> None:
    # Given the app synthesised with a canary (cdk-nag clean: synth raised on nothing)
    stack, resources = canary
    live = [{"Ref": alias} for alias in aliases(resources).values()]
    tasks = lambda_tasks(resources)  # every task invokes an alias, but those the deployer's Lambda tool runs in
    assert {name for name, target in tasks.items() if target not in live} == {
        "InvokeLambdaTool",
        "InvokeLambdaToolOnce",
    }
    assert {"RecordLambdaTool", "RecordLambdaToolFailure"} <= set(tasks)
    (application_id, application) = next(iter(of_type(resources, "AWS::CodeDeploy::Application").items()))
    assert application["Properties"] == {"ComputePlatform": "Lambda"}
    groups = of_type(resources, "AWS::CodeDeploy::DeploymentGroup")
    assert len(groups) == len(FUNCTIONS) == len(stack.deploys.rollback_alarms)
    assert set(stack.deploys.deployment_groups) == set(FUNCTIONS)

    for name, alias_id in aliases(resources).items():
        alias = resources[alias_id]
        function_id = alias["Properties"]["FunctionName"]["Ref"]
        # When the alias moves, CodeDeploy moves it, through the function's own deployment group
        update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
        assert update["ApplicationName"] == {"Ref": application_id}
        group = groups[update["DeploymentGroupName"]["Ref"]]["Properties"]
        assert group["DeploymentConfigName"] == "CodeDeployDefault.LambdaCanary10Percent5Minutes"
        assert group["DeploymentStyle"] == {"DeploymentOption": "WITH_TRAFFIC_CONTROL", "DeploymentType": "BLUE_GREEN"}
        # Then a failed, alarmed or stopped deployment is rolled back
        assert group["AutoRollbackConfiguration"]["Enabled"] is True
        assert set(group["AutoRollbackConfiguration"]["Events"]) == ROLLBACK_EVENTS
        # on the alarm that watches the version being deployed, through this alias
        assert group["AlarmConfiguration"]["Enabled"] is True
        ((alarm_ref),) = group["AlarmConfiguration"]["Alarms"]
        alarm_id = alarm_ref["Name"]["Ref"]
        assert alarm_id in as_list(alias["DependsOn"])  # (its dimensions follow the new version first)
        alarm = resources[alarm_id]["Properties"]
        watched = {m["Id"]: m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m}
        assert {stat["Metric"]["MetricName"] for stat in watched.values()} == {"Errors", "Invocations"}
        for stat in watched.values():
            assert stat["Metric"]["Namespace"] == "AWS/Lambda" and (stat["Stat"], stat["Period"]) == ("Sum", 60)
            assert {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]} == {
                "FunctionName": {"Ref": function_id},
                "Resource": {"Fn::Join": ["", [{"Ref": function_id}, ":live"]]},
                "ExecutedVersion": alias["Properties"]["FunctionVersion"],
            }, name
        (expression,) = [m["Expression"] for m in alarm["Metrics"] if "Expression" in m]
        assert expression == f"IF(errors >= {ROLLBACK_MIN_ERRORS}, 100 * errors / invocations, 0)"
        assert alarm["Threshold"] == ROLLBACK_ERROR_PERCENT
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == ROLLBACK_MINUTES
        assert alarm["TreatMissingData"] == "notBreaching"
        # and the operators hear of it: the alarm topic, on ALARM and back to OK, and the runbook's section
        (topic,) = of_type(resources, "AWS::SNS::Topic")
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic}]
        assert alarm["AlarmName"] == f"Stepwise-rollback-{name.replace('_', '-')}"
        assert alarm["AlarmDescription"].endswith("What to do: docs/runbook.md#rollback")


def test_a_linear_strategy_synthesises_cdk_nag_clean_with_its_preset() -> None:
    _, resources = synth(deploy_strategy="linear_10pct_1m")
    groups = of_type(resources, "AWS::CodeDeploy::DeploymentGroup").values()
    assert len(groups) == len(FUNCTIONS)
    assert {g["Properties"]["DeploymentConfigName"] for g in groups} == {
        "CodeDeployDefault.LambdaLinear10PercentEvery1Minute"
    }


def test_each_strategy_is_the_codedeploy_preset_its_name_says() -> None:
    # CodeDeploy's predefined Lambda configurations (its documentation's names)
    presets = {
        "canary_10pct_5m": "LambdaCanary10Percent5Minutes",
        "canary_10pct_10m": "LambdaCanary10Percent10Minutes",
        "canary_10pct_15m": "LambdaCanary10Percent15Minutes",
        "canary_10pct_30m": "LambdaCanary10Percent30Minutes",
        "linear_10pct_1m": "LambdaLinear10PercentEvery1Minute",
        "linear_10pct_2m": "LambdaLinear10PercentEvery2Minutes",
        "linear_10pct_3m": "LambdaLinear10PercentEvery3Minutes",
        "linear_10pct_10m": "LambdaLinear10PercentEvery10Minutes",
    }
    stack = cdk.Stack()
    chosen = {name: stack.resolve(config.deployment_config_name)
              for name, config in DEPLOY_STRATEGIES.items() if config is not None}  # fmt: skip
    assert chosen == {name: f"CodeDeployDefault.{preset}" for name, preset in presets.items()}
    assert DEPLOY_STRATEGIES["all_at_once"] is None and deploy_strategy(None) == deploy_strategy("") == "all_at_once"


@pytest.mark.parametrize("value", ["canary", "CANARY_10PCT_5M", "linear_10pct_5m", "blue_green"])
def test_a_strategy_it_does_not_know_fails_synth_naming_it(value: str) -> None:
    with pytest.raises(SystemExit, match=rf"deploy_strategy '{value}': one of all_at_once, canary_10pct_5m, .*"):
        build_app(cdk.App(context={**SKIP_BUNDLING, "deploy_strategy": value}))
    with pytest.raises(ValueError, match=f"deploy_strategy '{value}'"):
        deploy_strategy(value)


def test_the_readmes_cost_of_the_rollback_alarms_counts_every_function() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(r"\$0\.20 a month per function \((\d+) functions:\s+\$(\d+\.\d\d) a month\)", readme)
    assert found, "the README's cost of the rollback alarms"
    assert (int(found[1]), found[2]) == (len(FUNCTIONS), f"{0.20 * len(FUNCTIONS):.2f}")
