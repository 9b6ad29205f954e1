"""`stepwise doctor --stack` against a deployment, on moto: the stack found with CloudFormation (outputs, resources,
template), every part read with boto3 as an operator's credentials would, no AWS account needed. Also what the
synthesised Stepwise template gives the doctor: both dead-letter queues and every alarm, found by type."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.adapters.aws import SystemClock
from functions.adapters.aws_doctor import build_doctor, dead_letter_queues, stack_target, target_from_stack
from functions.adapters.dynamodb_circuits import DynamoDBCircuitStore
from functions.adapters.dynamodb_store import (
    ACTIVE_INDEX,
    ACTIVE_PK,
    ACTIVE_PROJECTION,
    ACTIVE_SK,
    DynamoDBRunStore,
    day_sk,
    spend_pk,
)
from functions.adapters.dynamodb_tenants import DynamoDBTenantStore
from functions.adapters.serde import to_item
from functions.agent.breaker import Breaker
from functions.agent.circuit import CircuitConfig, CircuitState
from functions.agent.models import Budget, Run, RunStatus
from functions.agent.tenants import TenantLimits
from stepwise import cli

STACK = "Stepwise"
ROLE = {"Fn::GetAtt": ["Role", "Arn"]}
KEY_SCHEMA = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
ATTRIBUTES = [{"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", ACTIVE_PK, ACTIVE_SK)]
ACTIVE = {"IndexName": ACTIVE_INDEX, "KeySchema": [{"AttributeName": ACTIVE_PK, "KeyType": "HASH"},
          {"AttributeName": ACTIVE_SK, "KeyType": "RANGE"}], "Projection": {"ProjectionType": "INCLUDE",
          "NonKeyAttributes": list(ACTIVE_PROJECTION)}}  # fmt: skip
FAILING = json.dumps({"StartAt": "Boom", "States": {"Boom": {"Type": "Fail", "Error": "X", "Cause": "test"}}})


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "ok"}' if self.path == "/health" else b"{}"
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api_url() -> Iterator[str]:
    """The deployment's API, as far as /health goes (on 127.0.0.1)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def function(handler: str, variables: dict[str, Any]) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Handler": handler,
            "Runtime": "python3.13",
            "Role": ROLE,
            "Code": {"ZipFile": "def handler(event, context): pass"},
            "Environment": {"Variables": variables},
        },
    }


def stepwise_like_template(api_url: str, state_machine_arn: str) -> dict[str, Any]:
    """The parts of Stepwise's template the doctor reads: a queue with its redrive dead-letter queue, a queue
    an EventBridge rule's target names as its dead letters, the table, the functions, the outputs. (The state
    machine is made outside it: moto runs executions only of state machines its Step Functions API made.)"""
    table = {"Ref": "Table"}
    return {
        "Resources": {
            "Role": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "lambda.amazonaws.com"},
                                "Action": "sts:AssumeRole",
                            }
                        ],
                    }
                },
            },
            "IntakeDeadLetterQueue": {"Type": "AWS::SQS::Queue"},
            "IntakeQueue": {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "RedrivePolicy": {
                        "deadLetterTargetArn": {"Fn::GetAtt": ["IntakeDeadLetterQueue", "Arn"]},
                        "maxReceiveCount": 5,
                    }
                },
            },
            "EndedDeadLetters": {"Type": "AWS::SQS::Queue"},
            "EndedRule": {
                "Type": "AWS::Events::Rule",
                "Properties": {
                    "EventPattern": {"source": ["aws.states"]},
                    "Targets": [
                        {
                            "Id": "ended",
                            "Arn": {"Fn::GetAtt": ["IntakeQueue", "Arn"]},
                            "DeadLetterConfig": {"Arn": {"Fn::GetAtt": ["EndedDeadLetters", "Arn"]}},
                        }
                    ],
                },
            },
            "Table": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "KeySchema": KEY_SCHEMA,
                    "AttributeDefinitions": ATTRIBUTES,
                    "GlobalSecondaryIndexes": [ACTIVE],
                    "BillingMode": "PAY_PER_REQUEST",
                },
            },
            "StepFunction": function(
                "functions.handlers.step.handler",
                {
                    "STEPWISE_TABLE": table,
                    "STEPWISE_GLOBAL_DAILY_BUDGET_USD": "200",
                    "STEPWISE_CIRCUIT_COOLDOWN_SECONDS": "30",
                    "STEPWISE_EXTRA_PRICES": "",
                },
            ),
            "ApiFunction": function("functions.handlers.api.handler", {"STEPWISE_TABLE": table}),
        },
        "Outputs": {
            "ApiUrl": {"Value": api_url},
            "TableName": {"Value": table},
            "StateMachineArn": {"Value": state_machine_arn},
        },
    }


@pytest.fixture
def deployed(api_url: str) -> Iterator[dict[str, Any]]:
    """A Stepwise-like stack, deployed with moto's CloudFormation; its resources by logical id."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        workflow = boto3.client("stepfunctions").create_state_machine(
            name="stepwise", definition=FAILING, roleArn="arn:aws:iam::123456789012:role/sfn"
        )["stateMachineArn"]
        cloudformation = boto3.client("cloudformation")
        body = json.dumps(stepwise_like_template(api_url, workflow))
        cloudformation.create_stack(StackName=STACK, TemplateBody=body)
        summaries = cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
        yield {"Workflow": workflow, **{s["LogicalResourceId"]: s["PhysicalResourceId"] for s in summaries}}


def doctor_json(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, dict[str, Any]]]:
    capsys.readouterr()
    code = cli.main(["doctor", "--stack", STACK, "--region", "us-east-1", "--json"])
    report = json.loads(capsys.readouterr().out)
    return code, {finding["check"]: finding for finding in report["findings"]}


def test_a_healthy_stack(deployed: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, found = doctor_json(capsys)

    assert code == 0, found
    assert {f["status"] for f in found.values()} == {"ok"}
    intake, intake_dlq, ended = (deployed[q].rsplit("/", 1)[1] for q in
                                 ("IntakeQueue", "IntakeDeadLetterQueue", "EndedDeadLetters"))  # fmt: skip
    assert found[f"queue {intake_dlq}"]["detail"] == f"dead-letter queue of {intake}: empty"
    assert found[f"queue {ended}"]["detail"] == "dead-letter queue: empty"  # named so by the rule's target
    assert found[f"queue {intake}"]["detail"].startswith("0 waiting")
    assert found["table"]["detail"] == f"{deployed['Table']} is ACTIVE"
    assert found["spend"]["detail"].endswith("0% of the global daily budget $200")  # the step function's setting
    assert found["active"]["detail"] == "no run or session is active"  # the index of active work, on moto


def test_an_unhealthy_stack(deployed: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    sqs, table = boto3.client("sqs"), deployed["Table"]
    sqs.send_message(QueueUrl=deployed["EndedDeadLetters"], MessageBody="{}")
    sqs.send_message(QueueUrl=deployed["IntakeDeadLetterQueue"], MessageBody="{}")
    sfn = boto3.client("stepfunctions")
    for n in range(3):
        sfn.start_execution(stateMachineArn=deployed["Workflow"], name=f"run_{n}")
    breaker = Breaker(DynamoDBCircuitStore(table, boto3.client("dynamodb")), CircuitConfig(),
                      now=lambda: datetime.now(UTC).timestamp())  # fmt: skip
    for _ in range(CircuitConfig().failure_threshold):
        breaker.failed("anthropic:claude-opus-5-5")
    today = datetime.now(UTC).date().isoformat()
    for tenant, committed in ((None, 170), ("acme", 45), ("beta", 1)):
        boto3.client("dynamodb").put_item(TableName=table, Item=to_item(
            {"pk": spend_pk(tenant), "sk": day_sk(today), "spent_usd": 1, "committed_usd": committed, "steps": 9}
        ))  # fmt: skip
    tenants = DynamoDBTenantStore(table, boto3.client("dynamodb"))
    tenants.put_limits(TenantLimits(tenant="acme", daily_usd=Decimal(50)))
    tenants.put_limits(TenantLimits(tenant="beta", daily_usd=Decimal(20)))
    tenants.put_limits(TenantLimits(tenant="gamma", requests_per_minute=10))  # no budget of its own
    for n, tenant in enumerate(("acme", "acme", "beta")):  # active work, for information
        DynamoDBRunStore(table, boto3.client("dynamodb")).create_run(Run(
            run_id=f"run_active{n}", tenant=tenant, status=RunStatus.RUNNING, input="", model="claude-haiku-4-5",
            tools=[], budget=Budget(), created_at="2026-12-01T00:00:00.000+00:00",
            updated_at="2026-12-01T00:00:00.000+00:00"))  # fmt: skip
    _wait_ended(sfn, deployed["Workflow"])

    code, found = doctor_json(capsys)

    assert code == 1
    ended = found[f"queue {deployed['EndedDeadLetters'].rsplit('/', 1)[1]}"]
    assert ended["status"] == "fail"
    assert any(s.startswith("once each is dealt with: aws sqs purge-queue") for s in ended["next_steps"])
    dlq = found[f"queue {deployed['IntakeDeadLetterQueue'].rsplit('/', 1)[1]}"]
    assert any("start-message-move-task --source-arn arn:aws:sqs:" in step for step in dlq["next_steps"])
    assert found["executions"]["status"] == "fail"
    assert "3 failed" in found["executions"]["detail"] and "100%" in found["executions"]["detail"]
    assert "stepwise status run_2" in found["executions"]["next_steps"][0]  # the newest first
    assert found["circuits"]["status"] == "fail" and "anthropic:claude-opus-5-5 OPEN" in found["circuits"]["detail"]
    assert found["spend"]["status"] == "warn" and "85% of the global daily budget $200" in found["spend"]["detail"]
    assert found["tenant budgets"]["status"] == "warn"
    assert found["tenant budgets"]["detail"].startswith("2 with a budget of its own, 1 at 80% or more: acme 90% of $50")
    assert f"stepwise tenants --table {table} set acme --daily-usd" in found["tenant budgets"]["next_steps"][0]
    assert found["active"] == {"check": "active", "status": "ok", "next_steps": [],
                               "detail": "3 runs (3 running), 0 sessions; most: acme 2, beta 1"}  # fmt: skip


def test_alarms_in_alarm(deployed: dict[str, Any]) -> None:
    """moto's CloudFormation makes no alarms: the stack's alarm names are given, as ListStackResources finds them."""
    cloudwatch = boto3.client("cloudwatch")
    for name in ("stepwise-dlq", "stepwise-budget"):
        cloudwatch.put_metric_alarm(AlarmName=name, AlarmDescription=f"{name} alarm", MetricName="M", Namespace="N",
                                    Statistic="Maximum", Period=60, EvaluationPeriods=1, Threshold=1,
                                    ComparisonOperator="GreaterThanOrEqualToThreshold")  # fmt: skip
    cloudwatch.set_alarm_state(AlarmName="stepwise-dlq", StateValue="ALARM", StateReason="1 message visible")
    target = stack_target(boto3.client("cloudformation"), STACK)
    target = target.model_copy(update={"alarm_names": ["stepwise-dlq", "stepwise-budget", "gone"]})

    report = build_doctor(boto3, target.table_name, SystemClock()).examine(target)

    (alarms,) = [f for f in report.findings if f.check == "alarms"]
    assert alarms.status == "fail" and alarms.detail.startswith("1 of 2 in ALARM: stepwise-dlq (stepwise-dlq alarm)")
    assert alarms.next_steps[0] == "stepwise-dlq: 1 message visible"
    assert "docs/runbook.md" in alarms.next_steps[1]
    assert report.exit_code == 1


def test_no_such_stack_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with mock_aws():
        assert cli.main(["doctor", "--stack", "Nope", "--region", "us-east-1"]) == 2
    assert "AWS error" in capsys.readouterr().out


def test_the_synthesised_template(template: dict[str, Any]) -> None:
    """Stepwise's own template: its dead-letter queues (the intake's and the webhooks' redrives, the execution-ended
    rule's) and every alarm of the stack, whatever its name, found by type; the budget and circuit settings of its
    step function."""
    resources = template["Resources"]
    queues = {lid for lid, res in resources.items() if res["Type"] == "AWS::SQS::Queue"}
    found = dead_letter_queues(template)
    assert len(found) == 3 and found < queues
    assert all("DeadLetter" in lid for lid in found)
    summaries = [{"LogicalResourceId": lid, "ResourceType": res["Type"], "PhysicalResourceId": f"physical-{lid}"}
                 for lid, res in resources.items()]  # fmt: skip
    outputs = {"TableName": "t", "ApiUrl": "https://api.example.com", "StateMachineArn": "arn:sm"}

    target = target_from_stack(STACK, "eu-west-1", outputs=outputs, resources=summaries, template=template)

    alarms = {lid for lid, res in resources.items() if res["Type"] == "AWS::CloudWatch::Alarm"}
    assert target.alarm_names == sorted(f"physical-{lid}" for lid in alarms) and len(alarms) >= 2
    assert {q.url for q in target.queues} == {f"physical-{lid}" for lid in queues}
    assert {q.url for q in target.queues if q.dead_letter} == {f"physical-{lid}" for lid in found}
    assert target.api_function and target.api_function.startswith("physical-")
    assert "anthropic:claude-sonnet-5-5" in target.circuit_keys and target.circuit_cooldown_seconds == 30
    with pytest.raises(ValueError, match="no TableName output"):
        target_from_stack(STACK, "eu-west-1", outputs={}, resources=summaries, template=template)
    # what the README says a run costs, on this stack
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (counted,) = re.findall(r"(\d+) GetQueueAttributes \(one per queue\)", readme)
    (about,) = re.findall(r"ListStackResources per 100 of the stack's resources, about (\d+)", readme)
    assert int(counted) == len(queues) and abs(int(about) - len(resources)) <= 10


def _wait_ended(sfn: Any, arn: str) -> None:
    for _ in range(200):
        if all(e["status"] != "RUNNING" for e in sfn.list_executions(stateMachineArn=arn)["executions"]):
            return
        threading.Event().wait(0.05)
    raise AssertionError("the executions did not end")


def test_circuit_states_are_read_in_one_batch(deployed: dict[str, Any]) -> None:
    store = DynamoDBCircuitStore(deployed["Table"], boto3.client("dynamodb"))
    breaker = Breaker(store, CircuitConfig(failure_threshold=1), now=lambda: 1000.0)
    breaker.failed("anthropic:a")
    keys = ["anthropic:a", *(f"anthropic:m{n}" for n in range(150))]  # two BatchGetItem requests

    circuits = store.load_many(keys)

    assert [c.key for c in circuits] == keys
    assert circuits[0].state is CircuitState.OPEN and circuits[0].opened_at == 1000.0
    assert {c.state for c in circuits[1:]} == {CircuitState.CLOSED}
