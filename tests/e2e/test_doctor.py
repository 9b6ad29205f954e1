"""`stepwise doctor` against the local stack: a healthy summary after a real run; then a message in the intake
dead-letter queue, and an open circuit (opened through the real breaker on the table), each make it exit
non-zero naming what is wrong and what to do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from functions.adapters import wiring
from functions.adapters.settings import StepSettings, load
from functions.agent.breaker import PROBE_REPORT_MARGIN_SECONDS
from functions.agent.circuit import CircuitState, circuit_key
from functions.agent.pricing import default_price_book
from stepwise import cli
from stepwise.local.stack import LocalStack
from tests.e2e.conftest import http, wait

pytestmark = pytest.mark.e2e
MODEL = "claude-sonnet-5-5"


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Iterator[LocalStack]:
    """The local stack with a global daily budget (a STEPWISE_* setting of the shell wins over the template's)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEPWISE_GLOBAL_DAILY_BUDGET_USD", "200")
        with LocalStack(port=0, template=template) as local:
            yield local


def doctor(stack: LocalStack, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["--endpoint", stack.url, "doctor", *extra])
    printed = capsys.readouterr().out.splitlines()
    return code, "\n".join(line for line in printed if not line.startswith('{"_aws"'))  # the functions' EMF lines


def findings(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, dict[str, Any]]]:
    code, out = doctor(stack, capsys, "--json")
    report = json.loads(out)
    assert report["exit_code"] == code
    return code, {finding["check"]: finding for finding in report["findings"]}


@pytest.fixture
def clean(stack: LocalStack) -> Iterator[None]:
    """What a test breaks, put right after it: the dead-letter queue emptied, the circuit's item removed."""
    yield
    while messages := stack.sqs.receive_message(QueueUrl=stack.dead_letter_queue_url, MaxNumberOfMessages=10).get(
        "Messages"
    ):  # (PurgeQueue: once a minute)
        for message in messages:
            stack.sqs.delete_message(QueueUrl=stack.dead_letter_queue_url, ReceiptHandle=message["ReceiptHandle"])
    key = circuit_key(default_price_book().price(MODEL).provider, MODEL)
    stack.dynamodb.delete_item(TableName=load(StepSettings).table_name,
                               Key={"pk": {"S": f"CIRCUIT#{key}"}, "sk": {"S": "STATE"}})  # fmt: skip


def test_healthy_after_a_run(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--endpoint", stack.url, "tenants", "set", "local", "--daily-usd", "50"]) == 0
    status, run = http(stack, "POST", "/runs", {"input": "What is 6 * 7?"})
    assert status == 202
    assert wait(stack, run["run_id"])["status"] == "SUCCEEDED"

    code, out = doctor(stack, capsys)

    assert code == 0, out
    assert "healthy (exit 0)" in out and "UNHEALTHY" not in out
    for check in ("api", "table", "queue stepwise-intake", "queue stepwise-intake-dlq", "executions", "active",
                  "alarms", "circuits", "spend", "tenant budgets"):  # fmt: skip
        assert check in out
    code, found = findings(stack, capsys)
    assert {f["status"] for f in found.values()} <= {"ok", "skip"}, found
    assert found["alarms"]["status"] == "skip"  # no alarms locally: not reported as checked
    assert "dead-letter queue of stepwise-intake: empty" in found["queue stepwise-intake-dlq"]["detail"]
    assert "succeeded" in found["executions"]["detail"]
    assert found["active"]["detail"] == "no run or session is active"  # the run ended: unlisted
    assert found["circuits"]["detail"].endswith("all closed")
    assert "spent, 2 steps): 0% of the global daily budget $200" in found["spend"]["detail"]
    assert found["tenant budgets"]["detail"].startswith("1 with a budget of its own, 0 at 80% or more: local 0% of $50")


@pytest.mark.usefixtures("clean")
def test_a_dead_letter_fails_with_the_redrive_command(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    stack.sqs.send_message(QueueUrl=stack.dead_letter_queue_url, MessageBody=json.dumps({"run_id": "run_x"}))
    dlq_arn = stack.sqs.get_queue_attributes(QueueUrl=stack.dead_letter_queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]

    code, out = doctor(stack, capsys)

    assert code == 1, out
    assert "UNHEALTHY (exit 1)" in out
    code, found = findings(stack, capsys)
    dead_letters = found["queue stepwise-intake-dlq"]
    assert dead_letters["status"] == "fail"
    assert dead_letters["detail"].startswith("dead-letter queue of stepwise-intake: 1 message")
    assert f"aws sqs start-message-move-task --source-arn {dlq_arn} --region us-east-1" in " ".join(
        dead_letters["next_steps"]
    )
    assert found["queue stepwise-intake"]["status"] == "ok"  # the other checks still ran, and still pass
    assert found["api"]["status"] == "ok"


@pytest.mark.usefixtures("clean")
def test_an_open_circuit_fails_naming_the_model(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    settings = load(StepSettings)
    breaker = wiring.breaker(settings)
    # (a probe that has not reported within a call's timeout and a margin never will: another goes through)
    assert breaker.config.probe_timeout_seconds == settings.model_timeout_seconds + PROBE_REPORT_MARGIN_SECONDS
    key = circuit_key(default_price_book().price(MODEL).provider, MODEL)
    for _ in range(settings.circuit_failure_threshold):  # retryable failures, as steps report them
        breaker.failed(key)
    assert breaker.store.load(key).state is CircuitState.OPEN

    code, found = findings(stack, capsys)

    assert code == 1
    circuits = found["circuits"]
    assert circuits["status"] == "fail"
    assert f"anthropic:{MODEL} OPEN since" in circuits["detail"]
    assert "calls refused until" in circuits["detail"]
    assert any(step.startswith(f"{MODEL}: steps fall back to claude-haiku-4-5") for step in circuits["next_steps"])
    code, out = doctor(stack, capsys)
    assert code == 1 and f"anthropic:{MODEL}" in out and "Circuit breaker and fallbacks" in out


def test_the_route_answers_this_machine_only(stack: LocalStack) -> None:
    status, _, body = stack.handle_http("GET", "/_local/doctor", {"host": "127.0.0.1"}, "", client="10.0.0.5")
    assert status == 403 and json.loads(body) == {"message": "Forbidden"}
    assert stack.handle_http("GET", "/_local/doctor", {"host": "evil.example"}, "")[0] == 403  # DNS rebinding
