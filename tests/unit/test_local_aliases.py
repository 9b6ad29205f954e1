"""The local stack reads functions invoked through their aliases: a Ref to an AWS::Lambda::Alias in the state
machine's definition is the alias's local ARN, and an invoke through an alias the template declares runs the
function (there is one version of each here); anything else fails loudly."""

from __future__ import annotations

from typing import Any

import pytest

from stepwise.local.lambdas import LocalLambdas
from stepwise.local.template import function_aliases, function_and_qualifier, function_arn, resolve, topology

FUNCTION = "Functionsstep34AB4704"
TEMPLATE: dict[str, Any] = {
    "Resources": {
        FUNCTION: {"Type": "AWS::Lambda::Function", "Properties": {"Handler": "functions.handlers.step.handler"}},
        "StepVersion": {"Type": "AWS::Lambda::Version", "Properties": {"FunctionName": {"Ref": FUNCTION}}},
        "StepAlias": {
            "Type": "AWS::Lambda::Alias",
            "Properties": {
                "FunctionName": {"Ref": FUNCTION},
                "Name": "live",
                "FunctionVersion": {"Fn::GetAtt": ["StepVersion", "Version"]},
            },
        },
        "ForeignAlias": {
            "Type": "AWS::Lambda::Alias",
            "Properties": {"FunctionName": "arn:aws:lambda:us-east-1:111122223333:function:theirs", "Name": "live"},
        },
    }
}


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"event": event, "invoked": context.invoked_function_arn}


def test_a_ref_to_an_alias_is_its_local_arn() -> None:
    assert resolve({"FunctionName": {"Ref": "StepAlias"}}, TEMPLATE) == {
        "FunctionName": f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}:live"
    }


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({"Ref": "ForeignAlias"}, "an alias of a function this template does not declare"),
        ({"Ref": "StepVersion"}, "unsupported Ref in state machine definition: StepVersion"),
        ({"Fn::GetAtt": ["StepAlias", "AliasArn"]}, "unsupported Fn::GetAtt"),
    ],
)
def test_a_reference_it_does_not_know_is_an_error(reference: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve(reference, TEMPLATE)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("step", ("step", None)),
        ("step:live", ("step", "live")),
        ("arn:aws:lambda:us-east-1:123456789012:function:step", ("step", None)),
        ("arn:aws:lambda:us-east-1:123456789012:function:step:live", ("step", "live")),
        ("arn:aws:lambda:us-east-1:123456789012:function:step:7", ("step", "7")),
    ],
)
def test_an_invoke_names_a_function_and_maybe_a_qualifier(reference: str, expected: tuple[str, str | None]) -> None:
    assert function_and_qualifier(reference) == expected


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("arn:aws:lambda:us-east-1:123456789012:layer:deps:3", "is not a Lambda function's ARN"),
        ("arn:aws:states:us-east-1:123456789012:function:step", "is not a Lambda function's ARN"),
        ("step:", "a function's name and, after a colon, its alias or version"),
        ("arn:aws:lambda:us-east-1:123456789012:function:step:", "a function's name and, after a colon"),
        (":live", "a function's name and, after a colon"),
    ],
)
def test_what_is_not_a_functions_reference_is_an_error(reference: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        function_and_qualifier(reference)


def lambdas() -> LocalLambdas:
    ours = {"Resources": {k: v for k, v in TEMPLATE["Resources"].items() if k != "ForeignAlias"}}
    local = LocalLambdas({FUNCTION: f"{__name__}.echo"}, aliases=function_aliases(ours))
    local.register("refund-order", f"{__name__}.echo")  # a Lambda tool: the deployer's function
    return local


@pytest.mark.parametrize(
    "reference", [FUNCTION, f"{FUNCTION}:live", function_arn(FUNCTION, "live"), function_arn(FUNCTION)]
)
def test_an_invoke_through_a_declared_alias_or_none_runs_the_function(reference: str) -> None:
    local = lambdas()
    result = local.invoke(reference, {"n": 1})
    _, qualifier = function_and_qualifier(reference)
    assert result == {"event": {"n": 1}, "invoked": function_arn(FUNCTION, qualifier)}
    assert local.invocations[FUNCTION] == 1


def test_an_invoke_through_an_alias_the_template_does_not_declare_is_an_error() -> None:
    with pytest.raises(LookupError, match=f"function '{FUNCTION}' has no alias 'canary' in the template"):
        lambdas().invoke(function_arn(FUNCTION, "canary"), {})


@pytest.mark.parametrize("where", ["eu-west-1:123456789012", "us-east-1:111122223333"])
def test_the_same_name_in_another_region_or_account_is_another_function(where: str) -> None:
    with pytest.raises(LookupError, match="another account's or region's function, not the local stack's"):
        lambdas().invoke(f"arn:aws:lambda:{where}:function:{FUNCTION}:live", {})


def test_a_lambda_tool_runs_whatever_its_qualifier() -> None:
    assert lambdas().invoke("arn:aws:lambda:us-east-1:111122223333:function:refund-order:3", {})["event"] == {}


def test_the_synthesised_workflow_invokes_every_function_through_an_alias_it_declares(
    template: dict[str, Any],
) -> None:
    # Given the topology the local stack reads from the real template
    stack = topology(template)
    invoked = set()
    for arn in stack.definition.split('"FunctionName":"')[1:]:
        invoked.add(function_and_qualifier(arn.split('"', 1)[0]))
    # Then every task names a function of the template through its live alias
    assert invoked and all(qualifier == "live" and qualifier in stack.aliases[name] for name, qualifier in invoked)
    assert {name for name, _ in invoked} <= set(stack.handlers)
