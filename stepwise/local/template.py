"""Read the synthesised CloudFormation template: the state machine definition, functions, table, routes.

The local stack runs exactly the definition `cdk synth` produces. Intrinsics in it are resolved to local
names; a reference this module does not know is an error, never silently dropped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STACK_NAME = "Stepwise"
WEB_ADAPTER_VARIABLES = ("AWS_LWA_", "AWS_LAMBDA_EXEC_WRAPPER")
REGION = "us-east-1"
ACCOUNT = "123456789012"


def synthesize(outdir: Path | None = None, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the CDK app (no CLI, no Docker, no credentials; bundling skipped) and return the template."""
    outdir = outdir or Path(tempfile.mkdtemp(prefix="stepwise-cdk-"))
    env = {
        **os.environ,
        "CDK_OUTDIR": str(outdir),
        "CDK_CONTEXT_JSON": json.dumps({"aws:cdk:bundling-stacks": [], **(context or {})}),
    }
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"cdk synth failed:\n{result.stderr[-4000:]}")
    template: dict[str, Any] = json.loads((outdir / f"{STACK_NAME}.template.json").read_text())
    return template


def function_arn(logical_id: str, qualifier: str | None = None) -> str:
    """A function's local ARN, or (``qualifier``: an alias's name) the alias's."""
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{logical_id}" + (f":{qualifier}" if qualifier else "")


def function_and_qualifier(reference: str) -> tuple[str, str | None]:
    """The function and the qualifier (alias or version) an invoke names, as Lambda reads FunctionName: a name,
    a name with its qualifier, or an ARN with or without one. Raises ValueError for anything else (another
    service's ARN, an empty name or qualifier)."""
    if reference.startswith("arn:"):
        parts = reference.split(":")  # arn:aws:lambda:region:account:function:name[:qualifier]
        if len(parts) not in (7, 8) or parts[2] != "lambda" or parts[5] != "function":
            raise ValueError(f"{reference!r} is not a Lambda function's ARN")
        name, colon, qualifier = parts[6], ":" * (len(parts) - 7), ":".join(parts[7:])
    else:
        name, colon, qualifier = reference.partition(":")
    if not name or (colon and not qualifier):
        raise ValueError(f"{reference!r}: a function's name and, after a colon, its alias or version")
    return name, qualifier or None


def is_local_arn(reference: str) -> bool:
    """Whether ``reference`` is a name, or an ARN in the local stack's region and account (a function ARN's
    region and account name the function as much as its name does)."""
    return not reference.startswith("arn:") or reference.split(":")[3:5] == [REGION, ACCOUNT]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    authorized: bool = False  # the route has the stack's Lambda authorizer (not /health, /openapi.json)

    def match(self, method: str, path: str) -> bool:
        if method != self.method:
            return False
        want, got = self.path.strip("/").split("/"), path.strip("/").split("/")
        return len(want) == len(got) and all(w.startswith("{") or w == g for w, g in zip(want, got, strict=True))


@dataclass(frozen=True)
class Topology:
    """What the local stack needs from the template."""

    definition: str
    handlers: dict[str, str]  # function name (logical id) -> handler path
    table_key_schema: list[dict[str, str]]
    table_attributes: list[dict[str, str]]
    table_indexes: list[dict[str, Any]]  # the global secondary indexes, as CreateTable takes them
    max_receive_count: int  # the intake queue's (STEPWISE_QUEUE_URL)
    routes: list[Route]
    environments: dict[str, dict[str, Any]]  # function name -> its environment variables, unresolved
    resource_types: dict[str, str]  # logical id -> CloudFormation type
    aliases: dict[str, frozenset[str]]  # function name -> the names of its aliases (what invokers call)
    # each queue a variable names (STEPWISE_QUEUE_URL, STEPWISE_WEBHOOKS_QUEUE_URL) -> its redrive's maxReceiveCount
    queue_receive_counts: dict[str, int] = field(default_factory=dict)

    def environment(self, local: dict[str, str | None]) -> dict[str, str]:
        """The functions' environment, as the template gives it, with each referenced resource replaced by
        its local counterpart (``local``: a variable's name or a CloudFormation type -> value, None to leave the
        variable unset; a variable's own entry wins, so each queue can be its own local queue).

        The functions run in one process here, so they share one environment: a variable two functions are
        given different values of is an error (POWERTOOLS_SERVICE_NAME aside: each handler names its own
        service, see functions/handlers/observability.py)."""
        merged: dict[str, str] = {}
        for function, variables in self.environments.items():
            for name, raw in variables.items():
                if name == "POWERTOOLS_SERVICE_NAME":
                    continue
                if isinstance(raw, str):
                    value: str | None = raw
                elif name in local:
                    value = local[name]
                else:
                    value = self._local(raw, local, f"{function}.{name}")
                if value is None:
                    continue
                if merged.setdefault(name, value) != value:
                    raise ValueError(f"{name} differs between functions: {merged[name]!r} and {value!r} ({function})")
        return merged

    @property
    def references(self) -> set[str]:
        """The variables whose value is a resource of the template (a table name, a queue URL, ...)."""
        return {name for variables in self.environments.values() for name, raw in variables.items()
                if not isinstance(raw, str)}  # fmt: skip

    def _local(self, reference: Any, local: dict[str, str | None], where: str) -> str | None:
        logical_id = reference.get("Ref") if isinstance(reference, dict) else None
        if isinstance(reference, dict) and "Fn::GetAtt" in reference:  # a function URL's FunctionUrl
            logical_id = reference["Fn::GetAtt"][0]
        kind = self.resource_types.get(str(logical_id))
        if kind not in local:
            raise ValueError(f"{where}: no local counterpart for {reference!r}")
        return local[kind]

    @property
    def api_function(self) -> str:
        return next(name for name, handler in self.handlers.items() if handler.endswith(".api.handler"))

    @property
    def authorizer_function(self) -> str:
        return next(name for name, handler in self.handlers.items() if handler.endswith(".authorizer.handler"))

    @property
    def intake_function(self) -> str:
        return next(name for name, handler in self.handlers.items() if handler.endswith(".intake.handler"))

    @property
    def webhooks_function(self) -> str:
        return next(name for name, handler in self.handlers.items() if handler.endswith(".webhooks.handler"))


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {lid: res for lid, res in template["Resources"].items() if res["Type"] == kind}


def resolve(value: Any, template: dict[str, Any]) -> Any:
    """Resolve Fn::Join / Ref / Fn::GetAtt to local values."""
    if isinstance(value, list):
        return [resolve(v, template) for v in value]
    if not isinstance(value, dict):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(str(resolve(p, template)) for p in parts)
    if "Ref" in value:
        pseudo = {
            "AWS::Partition": "aws",
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::URLSuffix": "amazonaws.com",
        }
        if value["Ref"] in pseudo:
            return pseudo[value["Ref"]]
        resource = template["Resources"].get(value["Ref"], {})
        if resource.get("Type") == "AWS::Lambda::Alias":  # (its Ref is the alias's ARN)
            return function_arn(_aliased_function(resource), resource["Properties"]["Name"])
        raise ValueError(f"unsupported Ref in state machine definition: {value['Ref']}")
    if "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        resource = template["Resources"].get(logical_id, {})
        if resource.get("Type") == "AWS::Lambda::Function" and attribute == "Arn":
            return function_arn(logical_id)
        raise ValueError(f"unsupported Fn::GetAtt in state machine definition: {logical_id}.{attribute}")
    return {k: resolve(v, template) for k, v in value.items()}


def _project_function(resource: dict[str, Any]) -> bool:
    """A function of the project: a Python handler, or a web app the Lambda Web Adapter runs (a script)."""
    return str(resource["Properties"].get("Handler", "")).startswith(("functions.handlers.", "functions/handlers/"))


def _own_variables(resource: dict[str, Any]) -> dict[str, Any]:
    """A function's environment but the Web Adapter's settings (the adapter does not run locally)."""
    variables: dict[str, Any] = resource["Properties"].get("Environment", {}).get("Variables", {})
    return {name: value for name, value in variables.items() if not name.startswith(WEB_ADAPTER_VARIABLES)}


def _aliased_function(alias: dict[str, Any]) -> str:
    """The logical id of the function an AWS::Lambda::Alias resource is an alias of."""
    target = alias["Properties"]["FunctionName"]
    if not (isinstance(target, dict) and set(target) == {"Ref"}):
        raise ValueError(f"an alias of a function this template does not declare: {target!r}")
    return str(target["Ref"])


def function_aliases(template: dict[str, Any]) -> dict[str, frozenset[str]]:
    """Function (logical id) -> the names of the aliases the template declares for it."""
    found: dict[str, set[str]] = {}
    for alias in _resources(template, "AWS::Lambda::Alias").values():
        found.setdefault(_aliased_function(alias), set()).add(alias["Properties"]["Name"])
    return {function: frozenset(names) for function, names in found.items()}


def topology(template: dict[str, Any]) -> Topology:
    (machine,) = _resources(template, "AWS::StepFunctions::StateMachine").values()
    definition = resolve(machine["Properties"]["DefinitionString"], template)
    (table,) = _resources(template, "AWS::DynamoDB::GlobalTable").values()
    queues = _resources(template, "AWS::SQS::Queue")
    functions = {lid: res for lid, res in _resources(template, "AWS::Lambda::Function").items()
                 if str(res["Properties"].get("Handler", "")).startswith("functions.handlers.")}  # fmt: skip
    named = {name: raw["Ref"] for res in functions.values()
             for name, raw in res["Properties"].get("Environment", {}).get("Variables", {}).items()
             if isinstance(raw, dict) and raw.get("Ref") in queues}  # fmt: skip
    receive_counts = {name: int(queues[queue]["Properties"]["RedrivePolicy"]["maxReceiveCount"])
                      for name, queue in named.items() if "RedrivePolicy" in queues[queue]["Properties"]}  # fmt: skip
    routes = []
    for route in _resources(template, "AWS::ApiGatewayV2::Route").values():
        method, path = route["Properties"]["RouteKey"].split(" ", 1)
        routes.append(Route(method, path, authorized=route["Properties"].get("AuthorizationType") == "CUSTOM"))
    return Topology(
        definition=definition,
        handlers={lid: res["Properties"]["Handler"] for lid, res in functions.items()},
        table_key_schema=table["Properties"]["KeySchema"],
        table_attributes=table["Properties"]["AttributeDefinitions"],
        table_indexes=[
            {name: index[name] for name in ("IndexName", "KeySchema", "Projection")}
            for index in table["Properties"].get("GlobalSecondaryIndexes", [])
        ],
        max_receive_count=receive_counts["STEPWISE_QUEUE_URL"],
        queue_receive_counts=receive_counts,
        routes=routes,
        environments={
            lid: _own_variables(res)
            for lid, res in _resources(template, "AWS::Lambda::Function").items()
            if _project_function(res)
        },
        resource_types={lid: res["Type"] for lid, res in template["Resources"].items()},
        aliases=function_aliases(template),
    )
