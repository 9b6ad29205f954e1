"""Every `aws` command the README, the runbook and `stepwise doctor` print is one the CLI takes as printed
(tests/aws_commands.py checks each against botocore's service models)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from functions.agent.doctor import (
    AlarmState,
    ExecutionSample,
    QueueRef,
    QueueState,
    alarms_finding,
    api_finding,
    executions_finding,
    queue_findings,
    table_finding,
)
from tests.aws_commands import commands, markdown_commands, problems

ROOT = Path(__file__).resolve().parents[2]
SQS, ARN = "https://sqs.eu-west-1.amazonaws.com/123456789012", "arn:aws:sqs:eu-west-1:123456789012"


def queue(name: str, visible: int = 0, dead_letters: str | None = None) -> QueueState:
    target = f"{ARN}:{dead_letters}" if dead_letters else None
    return QueueState(url=f"{SQS}/{name}", arn=f"{ARN}:{name}", visible=visible, in_flight=0, delayed=0,
                      dead_letter_target_arn=target)  # fmt: skip


def doctor_steps() -> list[str]:
    """The next steps of every finding of the doctor that prints a command: each rule, unhealthy."""
    states = [queue("intake", dead_letters="intake-dlq"), queue("intake-dlq", 2), queue("ended-dlq", 1)]
    refs = [QueueRef(url=state.url, dead_letter=state.name == "ended-dlq") for state in states]
    alarm = AlarmState("Stepwise-intake-dead-letters", "ALARM", reason="1 >= 1", since=datetime.now(UTC))
    findings = [
        api_finding("https://api", 502, 0.1, "Stepwise-Functionsapi-1", "eu-west-1"),
        table_finding("Stepwise-State", "CREATING"),
        *queue_findings(refs, states, {"intake": 7200.0}, region="eu-west-1", local=False),
        executions_finding(
            ExecutionSample({"FAILED": 5}, ["run_1"]), "arn:aws:states:eu-west-1:1:stateMachine:w", "eu-west-1"
        ),
        alarms_finding([alarm.name], [alarm], "eu-west-1"),
    ]
    return [step for finding in findings for step in finding.next_steps]


@pytest.mark.parametrize("document", ["README.md", "docs/runbook.md"])
def test_every_aws_command_of_the_documents_is_one_the_cli_takes(document: str) -> None:
    found = markdown_commands((ROOT / document).read_text())
    assert found  # the documents do print commands
    assert [problem for argv in found for problem in problems(argv)] == []


def test_every_aws_command_the_doctor_prints_is_one_the_cli_takes() -> None:
    found = [argv for step in doctor_steps() for argv in commands(step)]
    # the receive, move-back, purge, event source mapping, executions and alarm history commands (and logs tail)
    assert {tuple(argv[1:3]) for argv in found} >= {
        ("sqs", "receive-message"), ("sqs", "start-message-move-task"), ("sqs", "purge-queue"),
        ("lambda", "list-event-source-mappings"), ("stepfunctions", "list-executions"),
        ("cloudwatch", "describe-alarm-history"), ("dynamodb", "describe-table"), ("logs", "tail"),
    }  # fmt: skip
    assert [problem for argv in found for problem in problems(argv)] == []


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("aws stepfunctions list-executions --state-machine-arn a --max-results 20", "--max-results is not how"),
        ("aws cloudwatch describe-alarm-history --alarm-name a --max-records 5", "--max-records is not how"),
        ("aws deploy list-deployments --application-name a --include-only-statuses Failed",
         "with --application-name, --deployment-group-name must be given too"),
        ("aws sqs receive-message --queue-url q --visibility 0", "receive-message has no option --visibility"),
        ("aws sqs purge-queue", "--queue-url is required"),
        ("aws cloudformation describe-stack-resources --stack-name s",
         "answers the first 100 only: use list-stack-resources"),
        ("aws sqs move-messages --source-arn a", "sqs has no operation 'move-messages'"),
        ("aws lambdas invoke --function-name f", "no service 'lambdas'"),
    ],
)  # fmt: skip
def test_the_check_names_what_the_cli_would_refuse_or_misread(command: str, problem: str) -> None:
    (argv,) = commands(command)
    assert any(problem in found for found in problems(argv)), problems(argv)


def test_commands_are_found_in_substitutions_loops_and_continued_lines() -> None:
    text = (
        'for g in $(aws deploy list-deployment-groups --application-name "a b" --output text); do\n'
        '  aws deploy list-deployments --application-name a \\\n    --deployment-group-name "$g"; done'
    )
    assert commands(text) == [
        ["aws", "deploy", "list-deployment-groups", "--application-name", "a b", "--output", "text"],
        ["aws", "deploy", "list-deployments", "--application-name", "a", "--deployment-group-name", "$g"],
    ]
    assert all(problems(argv) == [] for argv in commands(text))
    assert problems(["aws", "sqs", "purge-queue", "--queue-url", "q", "--no-paginate", "--region", "r"]) == []
    assert problems(["aws", "deploy", "stop-deployment", "--deployment-id", "d", "--no-auto-rollback-enabled"]) == []
