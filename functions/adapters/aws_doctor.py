"""The doctor's reads (functions/agent/doctor.py) on AWS, and what to examine, found from a CloudFormation stack.

Used by `stepwise doctor` with the operator's credentials, and by the local stack's ``/_local/doctor`` on its
moto services: the same reads either way. Nothing here writes: SQS depths come from queue attributes and
CloudWatch, never by receiving a message.

Calls per examination: GetQueueAttributes per queue, one GetMetricData for every queue's oldest message, one
DescribeTable, ListExecutions (one page of up to 1,000), DescribeAlarms per 100 alarms, BatchGetItem per 100
circuits, one BatchGetItem (the global day's spend: its unsharded item and its 16 statistics shards), one Query
(the tenants with budgets of their own) and BatchGetItem per 100 of them, a Query of each of the 16 shards of the
index of active work (more for a shard holding over 1,000 entries), one HTTP GET of /health. Finding a stack: one
DescribeStacks, ListStackResources per 100 resources, one GetTemplate.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from functions.adapters.dynamodb_circuits import DynamoDBCircuitStore
from functions.adapters.dynamodb_store import DynamoDBRunStore, day_sk, spend_pk
from functions.adapters.dynamodb_tenants import DynamoDBTenantStore
from functions.adapters.serde import batch_get, to_item
from functions.adapters.settings import BudgetSettings, CircuitSettings, PricingSettings
from functions.agent.doctor import (
    AlarmState,
    DaySpend,
    Doctor,
    ExecutionSample,
    QueueRef,
    QueueState,
    Target,
    TenantBudget,
    circuit_keys,
)
from functions.agent.ports import Clock
from functions.agent.routing import default_routing

HEALTH_TIMEOUT_SECONDS = 10.0
AGE_LOOKBACK = timedelta(minutes=10)  # SQS publishes its metrics every minute, a few minutes late
METRIC_QUERIES = 500  # GetMetricData's limit per request
ALARM_NAMES = 100  # DescribeAlarms' limit per request
FAILED = ("FAILED", "TIMED_OUT")
# keys under which a template names where something's failed messages go (SQS redrive, EventBridge targets,
# Lambda's asynchronous invocations, event source mappings' on-failure destinations)
DEAD_LETTER_KEYS = frozenset({"deadLetterTargetArn", "DeadLetterConfig", "OnFailure"})


class DoctorSettings(BudgetSettings, CircuitSettings, PricingSettings):
    """What the doctor reads of a deployment's settings: budgets, circuits, prices (a step function's)."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is the answer, not something to follow


class UrllibProbe:
    def __init__(self, timeout: float = HEALTH_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirects)

    def get(self, url: str) -> tuple[int, float]:
        started = time.monotonic()
        try:
            with self._opener.open(urllib.request.Request(url, method="GET"), timeout=self.timeout) as response:  # noqa: S310
                response.read()
                return int(response.status), time.monotonic() - started
        except urllib.error.HTTPError as exc:
            return int(exc.code), time.monotonic() - started


class AwsDoctorReads:
    """TableReader, QueueReader, ExecutionReader, AlarmReader and SpendReader on boto3 clients (``table_name``:
    the table of the spend counters)."""

    def __init__(
        self, *, table_name: str, dynamodb: Any, sqs: Any, stepfunctions: Any, cloudwatch: Any, clock: Clock
    ) -> None:
        self.table_name = table_name
        self.dynamodb, self.sqs, self.stepfunctions, self.cloudwatch = dynamodb, sqs, stepfunctions, cloudwatch
        self.clock = clock

    def table_status(self, table_name: str) -> str:
        return str(self.dynamodb.describe_table(TableName=table_name)["Table"]["TableStatus"])

    def queue_state(self, url: str) -> QueueState:
        names = [
            "QueueArn",
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
            "RedrivePolicy",
        ]
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        redrive = json.loads(attributes["RedrivePolicy"]) if attributes.get("RedrivePolicy") else {}
        return QueueState(
            url=url,
            arn=attributes["QueueArn"],
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
            dead_letter_target_arn=redrive.get("deadLetterTargetArn"),
        )

    def oldest_ages(self, names: Sequence[str]) -> dict[str, float]:
        now = self.clock.now()
        ages: dict[str, float] = {}
        for start in range(0, len(names), METRIC_QUERIES):
            chunk = list(names[start : start + METRIC_QUERIES])
            queries = [
                {
                    "Id": f"q{n}",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/SQS",
                            "MetricName": "ApproximateAgeOfOldestMessage",
                            "Dimensions": [{"Name": "QueueName", "Value": name}],
                        },
                        "Period": 60,
                        "Stat": "Maximum",
                    },
                }
                for n, name in enumerate(chunk)
            ]
            answer = self.cloudwatch.get_metric_data(
                MetricDataQueries=queries, StartTime=now - AGE_LOOKBACK, EndTime=now, ScanBy="TimestampDescending"
            )
            for result in answer["MetricDataResults"]:
                if result.get("Values"):  # newest first: the latest minute's maximum
                    ages[chunk[int(result["Id"][1:])]] = float(result["Values"][0])
        return ages

    def started_since(self, state_machine_arn: str, since: datetime, limit: int) -> ExecutionSample:
        executions, truncated = [], False
        kwargs: dict[str, Any] = {"stateMachineArn": state_machine_arn, "maxResults": min(limit, 1000)}
        while True:
            page = self.stepfunctions.list_executions(**kwargs)
            recent = [e for e in page["executions"] if e["startDate"] >= since]
            executions += recent
            if len(recent) < len(page["executions"]) or not page.get("nextToken"):
                break
            if len(executions) >= limit:
                truncated = True
                break
            kwargs["nextToken"] = page["nextToken"]
        executions.sort(key=lambda e: e["startDate"], reverse=True)
        counts: dict[str, int] = {}
        for execution in executions:
            counts[execution["status"]] = counts.get(execution["status"], 0) + 1
        failed = [e["name"] for e in executions if e["status"] in FAILED]
        return ExecutionSample(counts=counts, failed_names=failed, truncated=truncated)

    def alarm_states(self, names: Sequence[str]) -> list[AlarmState]:
        found = []
        for start in range(0, len(names), ALARM_NAMES):
            kwargs: dict[str, Any] = {
                "AlarmNames": list(names[start : start + ALARM_NAMES]),
                "AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
            }
            while True:
                page = self.cloudwatch.describe_alarms(**kwargs)
                for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
                    found.append(
                        AlarmState(
                            name=alarm["AlarmName"],
                            state=alarm["StateValue"],
                            reason=alarm.get("StateReason", ""),
                            description=alarm.get("AlarmDescription", ""),
                            since=alarm.get("StateUpdatedTimestamp"),
                        )
                    )
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        return found

    def own_budgets(self, day: str) -> list[TenantBudget]:
        own = {t.tenant: t.daily_usd for t in DynamoDBTenantStore(self.table_name, self.dynamodb).list_limits()
               if t.daily_usd is not None}  # fmt: skip
        tenants = sorted(own)
        keys = [to_item({"pk": spend_pk(t), "sk": day_sk(day)}) for t in tenants]
        committed = {
            item["pk"].removeprefix("T#").removesuffix("#SPEND"): Decimal(str(item.get("committed_usd", 0)))
            for item in batch_get(self.dynamodb, self.table_name, keys)
        }
        return [TenantBudget(t, own[t], committed.get(t, Decimal(0))) for t in tenants]

    def global_day(self, day: str) -> DaySpend:
        values = DynamoDBRunStore(self.table_name, self.dynamodb).day_stats(None, day)  # every shard added up
        return DaySpend(
            spent_usd=Decimal(str(values.get("spent_usd", 0))),
            committed_usd=Decimal(str(values.get("committed_usd", 0))),
            steps=int(values.get("steps", 0)),
        )


def build_doctor(clients: Any, table_name: str, clock: Clock) -> Doctor:
    """The doctor on AWS (``clients``: a boto3 Session, or the boto3 module: anything with ``client(name)``)."""
    reads = AwsDoctorReads(
        table_name=table_name,
        dynamodb=clients.client("dynamodb"),
        sqs=clients.client("sqs"),
        stepfunctions=clients.client("stepfunctions"),
        cloudwatch=clients.client("cloudwatch"),
        clock=clock,
    )
    return Doctor(
        probe=UrllibProbe(),
        table=reads,
        queues=reads,
        executions=reads,
        alarms=reads,
        circuits=DynamoDBCircuitStore(table_name, reads.dynamodb),
        spend=reads,
        active=DynamoDBRunStore(table_name, reads.dynamodb),
        clock=clock,
        routing=default_routing(),
    )


def settings_target(settings: DoctorSettings, **found: Any) -> Target:
    """A target with what the deployment's settings say: the circuits of every priced model, the budget."""
    from functions.adapters.wiring import prices

    return Target(
        **found,
        table_name=settings.table_name,
        circuit_keys=circuit_keys(prices(settings)),
        circuit_cooldown_seconds=settings.circuit_cooldown_seconds,
        global_daily_usd=settings.global_daily_budget_usd,
        tenant_daily_usd=settings.tenant_daily_budget_usd,
    )


# ------------------------------------------------------------------------------------------------ a stack


def stack_target(cloudformation: Any, stack_name: str) -> Target:
    """What to examine in a deployed stack: its outputs, its resources (queues and alarms: whatever the stack
    has, by type) and its template (which queues are dead-letter targets, the step function's settings)."""
    (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    resources = []
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name):
        resources += page["StackResourceSummaries"]
    body = cloudformation.get_template(StackName=stack_name, TemplateStage="Original")["TemplateBody"]
    template = json.loads(body) if isinstance(body, str) else dict(body)  # boto3 decodes a JSON template
    return target_from_stack(
        stack_name, cloudformation.meta.region_name, outputs=outputs, resources=resources, template=template
    )


def target_from_stack(
    stack_name: str, region: str, *, outputs: dict[str, str], resources: list[dict[str, Any]], template: dict[str, Any]
) -> Target:
    """The target from a stack's outputs, resource summaries and template. Raises ValueError when the stack
    is not a Stepwise stack (no TableName output, no step function)."""
    if "TableName" not in outputs:
        raise ValueError(f"stack {stack_name} has no TableName output: is it a Stepwise stack?")
    physical = {r["LogicalResourceId"]: r.get("PhysicalResourceId", "") for r in resources}
    of_type = {r["LogicalResourceId"]: r["ResourceType"] for r in resources}
    dead_letters = dead_letter_queues(template)
    queues = [
        QueueRef(url=physical[lid], dead_letter=lid in dead_letters)
        for lid, kind in of_type.items()
        if kind == "AWS::SQS::Queue" and physical[lid]
    ]
    alarms = [physical[lid] for lid, kind in of_type.items() if kind.startswith("AWS::CloudWatch::") and
              kind.endswith("Alarm") and physical[lid]]  # fmt: skip
    api = _function(template, ".api.handler")
    settings = DoctorSettings.model_validate(
        {**_literal_environment(template, ".step.handler", stack_name), "STEPWISE_TABLE": outputs["TableName"]}
    )
    return settings_target(
        settings,
        description=f"stack {stack_name} ({region})",
        region=region,
        api_url=outputs.get("ApiUrl"),
        api_function=physical.get(api) if api else None,
        state_machine_arn=outputs.get("StateMachineArn"),
        queues=sorted(queues, key=lambda q: q.name),
        alarm_names=sorted(alarms),
    )


def dead_letter_queues(template: dict[str, Any]) -> set[str]:
    """The logical ids of the template's queues that something names as where its failed messages go."""
    queues = {lid for lid, res in template.get("Resources", {}).items() if res.get("Type") == "AWS::SQS::Queue"}
    return {lid for lid in _dead_letter_references(template.get("Resources", {})) if lid in queues}


def _dead_letter_references(value: Any, under: bool = False) -> Iterator[str]:
    if isinstance(value, dict):
        if under and "Ref" in value:
            yield str(value["Ref"])
        if under and "Fn::GetAtt" in value:
            attribute = value["Fn::GetAtt"]
            yield str(attribute[0] if isinstance(attribute, list) else str(attribute).split(".")[0])
        for key, inner in value.items():
            yield from _dead_letter_references(inner, under or key in DEAD_LETTER_KEYS)
    elif isinstance(value, list):
        for inner in value:
            yield from _dead_letter_references(inner, under)


def _function(template: dict[str, Any], handler_suffix: str) -> str | None:
    return next(
        (
            lid
            for lid, res in template.get("Resources", {}).items()
            if res.get("Type") == "AWS::Lambda::Function"
            and str(res.get("Properties", {}).get("Handler", "")).endswith(handler_suffix)
        ),
        None,
    )


def _literal_environment(template: dict[str, Any], handler_suffix: str, stack_name: str) -> dict[str, str]:
    """A function's environment variables that are plain values (a resource's reference is left out)."""
    function = _function(template, handler_suffix)
    if function is None:
        raise ValueError(f"stack {stack_name} has no function with handler *{handler_suffix}: is it a Stepwise stack?")
    variables = template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
    return {name: value for name, value in variables.items() if isinstance(value, str)}
