"""The doctor's rules (functions/agent/doctor.py): what is healthy, the thresholds, the next step for each finding;
and the use case with in-memory ports: one part that cannot be read fails its check, never the others."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from functions.agent.active import ActiveEntry
from functions.agent.circuit import Circuit, CircuitState
from functions.agent.doctor import (
    BACKLOG_FAIL_SECONDS,
    BACKLOG_WARN_SECONDS,
    AlarmState,
    DaySpend,
    Doctor,
    ExecutionSample,
    Finding,
    QueueRef,
    QueueState,
    Report,
    Status,
    Target,
    TenantBudget,
    alarms_finding,
    api_finding,
    circuit_keys,
    circuits_finding,
    executions_finding,
    queue_findings,
    spend_finding,
    table_finding,
    tenants_finding,
)
from functions.agent.pricing import default_price_book
from functions.agent.routing import default_routing
from tests.fakes.clock import FixedClock
from tests.fakes.memory_store import InMemoryRunStore

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
ROUTING = default_routing()
SQS = "https://sqs.eu-west-1.amazonaws.com/123456789012"
ARN = "arn:aws:sqs:eu-west-1:123456789012"
MACHINE = "arn:aws:states:eu-west-1:123456789012:stateMachine:wf"


def queue(name: str, visible: int = 0, in_flight: int = 0, dead_letters: str | None = None) -> QueueState:
    target = f"{ARN}:{dead_letters}" if dead_letters else None
    return QueueState(url=f"{SQS}/{name}", arn=f"{ARN}:{name}", visible=visible, in_flight=in_flight, delayed=0,
                      dead_letter_target_arn=target)  # fmt: skip


def by_check(findings: Sequence[Finding]) -> dict[str, Finding]:
    return {finding.check: finding for finding in findings}


# ------------------------------------------------------------------------------------------------ the report


@pytest.mark.parametrize(
    ("statuses", "status", "exit_code"),
    [
        ([Status.OK, Status.SKIP], Status.OK, 0),
        ([Status.OK, Status.WARN, Status.SKIP], Status.WARN, 0),
        ([Status.WARN, Status.FAIL, Status.OK], Status.FAIL, 1),
        ([], Status.OK, 0),
    ],
)
def test_the_worst_finding_decides(statuses: list[Status], status: Status, exit_code: int) -> None:
    report = Report(target="t", checked_at=NOW, findings=[Finding(check=str(n), status=s, detail="")
                                                          for n, s in enumerate(statuses)])  # fmt: skip
    assert report.status is status and report.exit_code == exit_code
    again = Report.model_validate_json(report.model_dump_json())  # what the local route sends the CLI
    assert again == report and again.exit_code == exit_code


# ------------------------------------------------------------------------------------------------ rules


def test_api() -> None:
    assert api_finding("https://x", 200, 0.2, "fn", "eu-west-1").status is Status.OK
    slow = api_finding("https://x", 200, 7.5, "fn", "eu-west-1")
    assert slow.status is Status.WARN and "took 7.5 s" in slow.detail
    broken = api_finding("https://x", 502, 0.1, "stepwise-api-fn", "eu-west-1")
    assert broken.status is Status.FAIL and broken.detail == "GET https://x/health answered 502 in 0.10 s"
    assert broken.next_steps == [
        "the api function's errors: aws logs tail /aws/lambda/stepwise-api-fn --since 15m --region eu-west-1"
    ]


@pytest.mark.parametrize(("state", "status"), [("ACTIVE", Status.OK), ("UPDATING", Status.WARN),
                                               ("DELETING", Status.FAIL)])  # fmt: skip
def test_table(state: str, status: Status) -> None:
    assert table_finding("t", state).status is status


def test_a_redrive_target_is_a_dead_letter_queue_that_messages_can_be_moved_back_from() -> None:
    states = [queue("intake", visible=4, dead_letters="intake-dlq"), queue("intake-dlq", visible=2, in_flight=1)]
    refs = [QueueRef(url=s.url) for s in states]

    found = by_check(queue_findings(refs, states, {"intake-dlq": 7200.0}, region="eu-west-1", local=False))

    assert found["queue intake"].status is Status.OK
    dlq = found["queue intake-dlq"]
    assert dlq.status is Status.FAIL
    assert dlq.detail == "dead-letter queue of intake: 3 messages (2 waiting, 1 in flight, 0 delayed; oldest 2.0 h)"
    assert dlq.next_steps[0].startswith(f"see why: aws sqs receive-message --queue-url {SQS}/intake-dlq ")
    assert dlq.next_steps[1] == (
        "after fixing the cause, move them back to intake: "
        f"aws sqs start-message-move-task --source-arn {ARN}:intake-dlq --region eu-west-1"
    )
    assert "docs/runbook.md" in dlq.next_steps[2] and len(dlq.next_steps) == 3  # no local-stack note deployed


def test_a_queue_the_stack_names_dead_letters_is_purged_once_handled() -> None:
    state = queue("ended-dlq", visible=1)
    (finding,) = queue_findings([QueueRef(url=state.url, dead_letter=True)], [state], {}, region="r", local=True)
    assert finding.status is Status.FAIL and finding.detail.startswith("dead-letter queue: 1 message (")
    assert finding.next_steps[1] == f"once each is dealt with: aws sqs purge-queue --queue-url {state.url} --region r"
    assert "out of the aws CLI's reach" in finding.next_steps[-1]  # the local stack's queues live in its process


def test_an_empty_dead_letter_queue_is_healthy() -> None:
    states = [queue("a", dead_letters="a-dlq"), queue("a-dlq")]
    found = by_check(queue_findings([QueueRef(url=s.url) for s in states], states, {}, region="r", local=False))
    assert found["queue a-dlq"].status is Status.OK and found["queue a-dlq"].detail == "dead-letter queue of a: empty"


@pytest.mark.parametrize(
    ("age", "status"),
    [(None, Status.OK), (60.0, Status.OK), (BACKLOG_WARN_SECONDS, Status.WARN), (BACKLOG_FAIL_SECONDS, Status.FAIL)],
)
def test_a_work_queue_is_judged_by_its_oldest_message(age: float | None, status: Status) -> None:
    state = queue("webhooks", visible=40)
    ages = {} if age is None else {"webhooks": age}
    (finding,) = queue_findings([QueueRef(url=state.url)], [state], ages, region="r", local=False)
    assert finding.status is status
    assert ("no CloudWatch data" in finding.detail) is (age is None)
    if status is not Status.OK:
        assert f"list-event-source-mappings --event-source-arn {ARN}:webhooks" in finding.next_steps[0]


def sample(failed: int = 0, succeeded: int = 0, names: list[str] | None = None, **more: int) -> ExecutionSample:
    counts = {"FAILED": failed, "SUCCEEDED": succeeded, **more}
    return ExecutionSample(counts={k: v for k, v in counts.items() if v},
                           failed_names=names or [f"run_{n}" for n in range(failed)])  # fmt: skip


@pytest.mark.parametrize(
    ("executions", "status"),
    [
        (sample(succeeded=50, ABORTED=9), Status.OK),  # cancels are not failures
        (sample(failed=1, succeeded=9), Status.WARN),
        (sample(failed=3, succeeded=100), Status.WARN),  # 3 %: worth a look, not unhealthy
        (sample(failed=2, succeeded=0), Status.WARN),  # too few to call a rate
        (sample(failed=3, succeeded=10), Status.FAIL),
        (sample(succeeded=2, TIMED_OUT=3), Status.FAIL),
    ],
)
def test_failure_rate(executions: ExecutionSample, status: Status) -> None:
    assert executions_finding(executions, MACHINE, "r").status is status


def test_failed_executions_name_the_runs_and_sessions_to_look_at() -> None:
    executions = ExecutionSample(counts={"FAILED": 4, "SUCCEEDED": 1, "RUNNING": 2},
                                 failed_names=["sesn_01ab_t3", "run_9", "run_8", "run_7"], truncated=True)  # fmt: skip
    finding = executions_finding(executions, MACHINE, "eu-west-1")
    assert finding.detail == (
        "started in the last 1 h: at least 4 failed, 2 running, 1 succeeded "
        "(80% of those that ended failed or timed out)"
    )
    assert finding.next_steps[0] == (
        "why: stepwise sessions show sesn_01ab; stepwise status run_9; stepwise status run_8"
    )
    assert f"list-executions --state-machine-arn {MACHINE} --status-filter FAILED" in finding.next_steps[1]


def test_alarms() -> None:
    quiet = [AlarmState("a", "OK"), AlarmState("b", "INSUFFICIENT_DATA")]
    assert alarms_finding(["a", "b", "c"], quiet, "r") == Finding(
        check="alarms", status=Status.OK, detail="3 alarms of the stack (1 not found), none in ALARM"
    )
    firing = [*quiet, AlarmState("dlq", "ALARM", reason="Threshold Crossed: 1 datapoint", description="DLQ", since=NOW)]
    finding = alarms_finding(["a", "b", "dlq"], firing, "eu-west-1")
    assert finding.status is Status.FAIL
    assert finding.detail == "1 of 3 in ALARM: dlq (DLQ) since 12:00:00 UTC"
    assert finding.next_steps[0] == "dlq: Threshold Crossed: 1 datapoint"
    assert finding.next_steps[1] == "what each alarm means and what to do: docs/runbook.md"
    assert "describe-alarm-history --alarm-name dlq" in finding.next_steps[2]


def test_a_budget_alarm_alone_is_a_warning_and_says_how_to_find_the_tenant() -> None:
    # Given a budget alarm in ALARM (the stack's description links the runbook's budget section)
    budget = AlarmState(
        "Stepwise-budget-TenantDaily-80",
        "ALARM",
        reason="80.5 >= 80",
        description="A TenantDaily budget is 80 % committed. What to do: docs/runbook.md#budget",
    )
    finding = alarms_finding([budget.name], [budget], "eu-west-1")
    # Then it is news of spend, not a fault: the doctor warns, and says where the tenant is named
    assert finding.status is Status.WARN
    assert finding.detail.startswith("1 of 1 in ALARM: Stepwise-budget-TenantDaily-80")
    assert any("'budget use'" in step and "docs/runbook.md#budget" in step for step in finding.next_steps)
    # And with another alarm firing, it fails, leading with that one
    dlq = AlarmState(
        "Stepwise-intake-dead-letters",
        "ALARM",
        reason="1 >= 1",
        description="Intake messages reached the DLQ. What to do: docs/runbook.md#intake-dead-letters",
    )
    finding = alarms_finding([budget.name, dlq.name], [budget, dlq], "eu-west-1")
    assert finding.status is Status.FAIL
    assert finding.next_steps[0] == "Stepwise-intake-dead-letters: 1 >= 1"
    assert "describe-alarm-history --alarm-name Stepwise-intake-dead-letters" in finding.next_steps[-1]


def open_circuit(key: str, seconds_ago: float) -> Circuit:
    return Circuit(key=key, state=CircuitState.OPEN, failures=5, opened_at=NOW.timestamp() - seconds_ago, version=3)


def test_a_circuit_open_within_its_cooldown_fails_and_says_when_it_may_close() -> None:
    circuits = [Circuit(key="anthropic:claude-haiku-4-5"), open_circuit("anthropic:claude-sonnet-5-5", 10)]
    finding = circuits_finding(circuits, cooldown_seconds=30, now=NOW, routing=ROUTING)
    assert finding.status is Status.FAIL
    assert finding.detail == (
        "1 of 2 not closed: anthropic:claude-sonnet-5-5 OPEN since 11:59:50 UTC after 5 failures: "
        "calls refused until 12:00:20 UTC, then one probe"
    )
    assert finding.next_steps[0].startswith("claude-sonnet-5-5: steps fall back to claude-haiku-4-5 meanwhile")
    assert "README: Architecture > Circuit breaker and fallbacks" in finding.next_steps[-1]


def test_a_circuit_past_its_cooldown_or_probing_is_a_warning() -> None:
    past = circuits_finding([open_circuit("bedrock:m", 45)], cooldown_seconds=30, now=NOW, routing=ROUTING)
    assert past.status is Status.WARN and "cooldown over at 11:59:45 UTC: the next call to it probes" in past.detail
    assert past.next_steps[0] == "m has no fallback in routing.json: its steps wait and retry"
    probing = Circuit(key="anthropic:x", state=CircuitState.HALF_OPEN, half_open_at=NOW.timestamp() - 5, probes=1)
    half = circuits_finding([probing], cooldown_seconds=30, now=NOW, routing=ROUTING)
    assert half.status is Status.WARN and "anthropic:x half-open (probing since 11:59:55 UTC)" in half.detail
    assert circuits_finding([Circuit(key="a:b")], cooldown_seconds=30, now=NOW, routing=ROUTING).status is Status.OK


@pytest.mark.parametrize(
    ("committed", "budget", "status"),
    [("5", None, Status.OK), ("159.99", "200", Status.OK), ("160", "200", Status.WARN), ("200", "200", Status.FAIL)],
)
def test_spend_against_the_global_budget(committed: str, budget: str | None, status: Status) -> None:
    spend = DaySpend(spent_usd=Decimal("1.5"), committed_usd=Decimal(committed), steps=12)
    finding = spend_finding(spend, day="2026-11-21", global_daily_usd=Decimal(budget) if budget else None,
                            routing=ROUTING)  # fmt: skip
    assert finding.status is status
    assert finding.detail.startswith(f"${Decimal(committed).normalize():f} committed today (2026-11-21 UTC; $1.5 spent")
    if status is Status.FAIL:
        assert "every new model call is refused" in finding.next_steps[0]


def test_tenants_with_budgets_of_their_own() -> None:
    none = tenants_finding([], default_daily_usd=Decimal(20), table_name="T", routing=ROUTING)
    assert none == Finding(check="tenant budgets", status=Status.OK,
                           detail="no tenant has a budget of its own (the others: $20 a day each)")  # fmt: skip
    calm = [TenantBudget("a", Decimal(50), Decimal(5)), TenantBudget("b", Decimal(10), Decimal(7))]
    ok = tenants_finding(calm, default_daily_usd=None, table_name="T", routing=ROUTING)
    assert ok.status is Status.OK
    assert ok.detail == (
        "2 with a budget of its own, 0 at 80% or more: b 70% of $10; a 10% of $50 (the others: no budget)"
    )
    near = [*calm, TenantBudget("c", Decimal(5), Decimal("5.2")), TenantBudget("d", Decimal(100), Decimal(85))]
    warn = tenants_finding(near, default_daily_usd=Decimal(20), table_name="T", routing=ROUTING)
    assert warn.status is Status.WARN
    assert warn.detail.startswith("4 with a budget of its own, 2 at 80% or more: c 104% of $5; d 85% of $100")
    assert warn.next_steps == [
        "refused until 00:00 UTC: c",
        "if it should spend more: stepwise tenants --table T set c --daily-usd <USD> (functions see it within 30 s)",
    ]
    local = tenants_finding(near, default_daily_usd=None, table_name="T", routing=ROUTING, local=True)
    assert local.next_steps[1].startswith("if it should spend more: stepwise tenants set c --daily-usd <USD>")


def test_every_priced_model_has_a_circuit() -> None:
    keys = circuit_keys(default_price_book())
    assert "anthropic:claude-sonnet-5-5" in keys and "anthropic:claude-haiku-4-5" in keys
    assert any(key.startswith("bedrock:") for key in keys)
    assert len(keys) == len(set(keys)) == len(default_price_book().model_ids())


# ------------------------------------------------------------------------------------------------ the use case


@dataclass
class FakeDeployment:
    """Every port in memory; ``broken``: the reads that raise, as a denied or unreachable service does."""

    health: int = 200
    queues: dict[str, QueueState] = field(default_factory=dict)
    ages: dict[str, float] = field(default_factory=dict)
    executions: ExecutionSample = field(default_factory=lambda: ExecutionSample(counts={}, failed_names=[]))
    alarms: list[AlarmState] = field(default_factory=list)
    circuits: dict[str, Circuit] = field(default_factory=dict)
    spend: DaySpend = field(default_factory=lambda: DaySpend(Decimal(0), Decimal(0), 0))
    budgets: list[TenantBudget] = field(default_factory=list)
    index: InMemoryRunStore = field(default_factory=InMemoryRunStore)  # the index of active work
    broken: set[str] = field(default_factory=set)
    asked: list[tuple[str, object]] = field(default_factory=list)

    def _read(self, what: str, argument: object) -> None:
        self.asked.append((what, argument))
        if what in self.broken:
            raise PermissionError(f"AccessDenied on {what}")

    def get(self, url: str) -> tuple[int, float]:
        self._read("health", url)
        return self.health, 0.05

    def table_status(self, table_name: str) -> str:
        self._read("table", table_name)
        return "ACTIVE"

    def queue_state(self, url: str) -> QueueState:
        self._read("queue", url)
        return self.queues[url]

    def oldest_ages(self, names: Sequence[str]) -> dict[str, float]:
        return self.ages

    def started_since(self, state_machine_arn: str, since: datetime, limit: int) -> ExecutionSample:
        self._read("executions", since)
        return self.executions

    def alarm_states(self, names: Sequence[str]) -> list[AlarmState]:
        self._read("alarms", list(names))
        return [alarm for alarm in self.alarms if alarm.name in names]

    def load_many(self, keys: Sequence[str]) -> list[Circuit]:
        self._read("circuits", list(keys))
        return [self.circuits.get(key, Circuit(key=key)) for key in keys]

    def global_day(self, day: str) -> DaySpend:
        self._read("spend", day)
        return self.spend

    def own_budgets(self, day: str) -> list[TenantBudget]:
        self._read("tenants", day)
        return self.budgets

    def list_active(self, shard: int, *, tenant: str | None, limit: int, after: str | None) -> list[ActiveEntry]:
        self._read("active", shard)
        return self.index.list_active(shard, tenant=tenant, limit=limit, after=after)


def doctor(deployment: FakeDeployment) -> Doctor:
    d = deployment
    return Doctor(probe=d, table=d, queues=d, executions=d, alarms=d, circuits=d, spend=d, active=d,
                  clock=FixedClock(NOW, tick=timedelta(0)), routing=ROUTING)  # fmt: skip


def target(**changes: object) -> Target:
    base = Target(description="stack S (eu-west-1)", region="eu-west-1", api_url="https://api.example.com/",
                  table_name="t", state_machine_arn=MACHINE, queues=[QueueRef(url=f"{SQS}/intake"),
                  QueueRef(url=f"{SQS}/intake-dlq")], alarm_names=["a"], circuit_keys=["anthropic:m"],
                  global_daily_usd=Decimal(100))  # fmt: skip
    return base.model_copy(update=changes)


def healthy() -> FakeDeployment:
    queues = [queue("intake", dead_letters="intake-dlq"), queue("intake-dlq")]
    return FakeDeployment(queues={q.url: q for q in queues}, alarms=[AlarmState("a", "OK")])


def test_a_healthy_deployment() -> None:
    deployment = healthy()

    report = doctor(deployment).examine(target())

    assert [(f.check, f.status) for f in report.findings] == [
        ("api", Status.OK), ("table", Status.OK), ("queue intake", Status.OK), ("queue intake-dlq", Status.OK),
        ("executions", Status.OK), ("active", Status.OK), ("alarms", Status.OK), ("circuits", Status.OK),
        ("spend", Status.OK), ("tenant budgets", Status.OK),
    ]  # fmt: skip
    assert by_check(report.findings)["active"].detail == "no run or session is active"
    assert report.exit_code == 0 and report.checked_at == NOW and report.target == "stack S (eu-west-1)"
    assert ("health", "https://api.example.com/health") in deployment.asked
    assert ("executions", NOW - timedelta(hours=1)) in deployment.asked
    assert ("spend", "2026-11-21") in deployment.asked and ("circuits", ["anthropic:m"]) in deployment.asked


def test_a_read_that_fails_fails_its_check_only() -> None:
    deployment = healthy()
    deployment.broken = {"queue", "alarms", "active"}

    report = doctor(deployment).examine(target())

    found = by_check(report.findings)
    assert found["queues"].status is Status.FAIL
    assert found["queues"].detail == "could not be checked: PermissionError: AccessDenied on queue"
    assert found["alarms"].detail == "could not be checked: PermissionError: AccessDenied on alarms"
    assert found["active"].detail == "could not be checked: PermissionError: AccessDenied on active"
    assert {found[c].status for c in ("api", "table", "executions", "circuits", "spend", "tenant budgets")} == {
        Status.OK
    }
    assert report.exit_code == 1


def test_an_unreachable_api_and_what_a_target_lacks() -> None:
    deployment = healthy()

    class Down:
        def get(self, url: str) -> tuple[int, float]:
            raise ConnectionRefusedError(111, "Connection refused")

    checks = doctor(deployment)
    checks.probe = Down()
    report = checks.examine(target(alarm_names=None, queues=[], state_machine_arn=None))

    found = by_check(report.findings)
    assert found["api"].status is Status.FAIL and "no answer" in found["api"].detail
    assert found["alarms"].status is Status.SKIP and found["queues"].status is Status.SKIP
    assert found["executions"].status is Status.SKIP
    assert not any(what in ("alarms", "queue", "executions") for what, _ in deployment.asked)


# ------------------------------------------------------------------------------------------------ the CLI


def test_the_report_as_rendered() -> None:
    from rich.console import Console

    from stepwise.doctor_cli import render

    console = Console(record=True, width=200)
    warned = Finding(check="spend", status=Status.WARN, detail="85% of $200", next_steps=["a step", "another"])
    render(Report(target="stack S (eu-west-1)", checked_at=NOW, findings=[Finding(check="api", status=Status.OK,
           detail="fine"), warned]), console)  # fmt: skip

    text = console.export_text()
    assert text.startswith("stepwise doctor: stack S (eu-west-1) at 2026-11-21 12:00:00 UTC")
    assert "next steps\nspend (warn):\n  - a step\n  - another\n" in text
    assert text.rstrip().endswith("healthy, with warnings (exit 0)")


def test_a_remote_endpoint_without_a_stack_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from stepwise import cli

    assert cli.main(["--endpoint", "https://api.example.com", "doctor"]) == 2
    assert "pass --stack <stack name>" in capsys.readouterr().out
