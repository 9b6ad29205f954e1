"""The doctor: is a deployment (or the local stack) healthy, and if not, what should an operator do next?

One use case, ``Doctor.examine(target)``, reads each part of the deployment through a small port and turns
what it read into a ``Finding`` (ok / warn / fail / skip, a one-line detail, concrete next steps) with the
rules below. The rules are pure; the reads are adapters (functions/adapters/aws_doctor.py). A check whose
read fails is a ``fail`` naming the error: the doctor never stops at the first broken part.

What is healthy (the thresholds are the constants below):

* api: ``GET /health`` answers 200 (warn when slower than ``SLOW_HEALTH_SECONDS``);
* table: ``ACTIVE`` (warn while ``UPDATING``);
* each queue of the stack: a dead-letter queue holds no message (fail otherwise: an operator must look);
  a work queue's oldest message is younger than ``BACKLOG_WARN_SECONDS`` / ``BACKLOG_FAIL_SECONDS``;
* executions started in the last ``EXECUTION_WINDOW``: fail when at least ``FAILURES_FAIL_MIN`` ended
  FAILED or TIMED_OUT and they are ``FAILURE_RATE_FAIL`` of those that ended; warn on any;
* active: how many runs and sessions are in progress, and whose (functions/agent/census.py): information, ok;
* alarms of the stack: none in ALARM (fail), but a budget alarm (warn: the spend checks judge budgets);
* circuits: none open within its cooldown (fail); open past it, or half-open (probing): warn;
* spend: today's global committed spend under the routing downgrade threshold (warn from it, fail at 100 %);
* tenant budgets: no tenant with a budget of its own at the downgrade threshold or more (warn).

Exit codes (``Report.exit_code``): 0 when nothing failed (warnings included), 1 when any check failed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, computed_field

from functions.agent.census import Census, count_active
from functions.agent.circuit import Circuit, CircuitState, circuit_key
from functions.agent.ledger import usd
from functions.agent.ports import ActiveRuns, Clock
from functions.agent.pricing import PriceBook
from functions.agent.routing import RoutingConfig
from functions.agent.sessions import SESSION_PREFIX

SLOW_HEALTH_SECONDS = 5.0
BACKLOG_WARN_SECONDS = 20 * 60  # intake gives up on a message after 5 receives (~15 min): older means not drained
BACKLOG_FAIL_SECONDS = 60 * 60
EXECUTION_WINDOW = timedelta(hours=1)
EXECUTION_SAMPLE = 1000  # at most this many executions are read (one ListExecutions page)
FAILURES_FAIL_MIN = 3
FAILURE_RATE_FAIL = 0.2
SHOWN_NAMES = 3  # executions, alarms, ... named in a detail

RUNBOOK = "docs/runbook.md"  # one section per alarm (infra/constructs/monitoring.py links it in each)
BUDGET_SECTION = "budget"  # the runbook's section of every budget alarm
README_DEAD_LETTERS = "README: Operations > Failures, retention and security checks (dead-letter queues)"
README_CIRCUITS = "README: Architecture > Circuit breaker and fallbacks"
README_DOCTOR = "README: Operations > Diagnose: stepwise doctor"
LOCAL_AWS_NOTE = (
    "(the local stack keeps its queues in its own process, out of the aws CLI's reach: the command is what a "
    "deployment takes; a restarted local stack starts with empty queues)"
)


# ------------------------------------------------------------------------------------------------ shapes


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"  # not checked here (the local stack has no CloudWatch alarms): never counts as healthy or not


class Finding(BaseModel):
    check: str
    status: Status
    detail: str
    next_steps: list[str] = []


class Report(BaseModel):
    target: str
    checked_at: datetime
    findings: list[Finding]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> Status:
        """The worst finding's status: fail, else warn, else ok."""
        statuses = {finding.status for finding in self.findings}
        return next((s for s in (Status.FAIL, Status.WARN) if s in statuses), Status.OK)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def exit_code(self) -> int:
        return 1 if self.status is Status.FAIL else 0


class QueueRef(BaseModel):
    """A queue of the stack. ``dead_letter``: the stack names it a dead-letter target of something that is
    not a queue (an EventBridge rule's target); a queue's own redrive policy is read from the queue itself."""

    url: str
    dead_letter: bool = False

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


class Target(BaseModel):
    """What the doctor examines: found from a stack's outputs and resources, or the local stack's own."""

    description: str
    region: str
    local: bool = False
    api_url: str | None = None
    api_function: str | None = None  # its log group is /aws/lambda/{api_function}
    table_name: str
    state_machine_arn: str | None = None
    queues: list[QueueRef] = []
    alarm_names: list[str] | None = None  # None: this target has no CloudWatch alarms (the local stack)
    circuit_keys: list[str] = []
    circuit_cooldown_seconds: float = 30.0
    global_daily_usd: Decimal | None = None
    tenant_daily_usd: Decimal | None = None  # a tenant's without a budget of its own


@dataclass(frozen=True)
class QueueState:
    url: str
    arn: str
    visible: int
    in_flight: int
    delayed: int
    dead_letter_target_arn: str | None = None  # from its redrive policy: where its failed messages go

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ExecutionSample:
    """Executions started since a moment, newest first: how many are in each status."""

    counts: dict[str, int]
    failed_names: list[str]  # FAILED or TIMED_OUT, newest first
    truncated: bool = False  # more started in the window than were read


@dataclass(frozen=True)
class AlarmState:
    name: str
    state: str  # OK, ALARM, INSUFFICIENT_DATA
    reason: str = ""
    description: str = ""
    since: datetime | None = None


@dataclass(frozen=True)
class DaySpend:
    spent_usd: Decimal
    committed_usd: Decimal  # spent + reservations in flight: what the budget is checked against
    steps: int


@dataclass(frozen=True)
class TenantBudget:
    """A tenant with a daily budget of its own (`stepwise tenants set`) and what it committed today."""

    tenant: str
    daily_usd: Decimal
    committed_usd: Decimal

    @property
    def percent(self) -> float:
        return float(self.committed_usd / self.daily_usd * 100)


# ------------------------------------------------------------------------------------------------ ports


class HealthProbe(Protocol):
    def get(self, url: str) -> tuple[int, float]:
        """GET ``url``: the HTTP status and the seconds it took. Raises OSError when nothing answers."""


class TableReader(Protocol):
    def table_status(self, table_name: str) -> str:
        """The table's status (ACTIVE, UPDATING, ...). Raises the service's error when it cannot be read."""


class QueueReader(Protocol):
    def queue_state(self, url: str) -> QueueState:
        """Depth, ARN and redrive policy of one queue. Raises the service's error when it cannot be read."""

    def oldest_ages(self, names: Sequence[str]) -> dict[str, float]:
        """The age in seconds of each queue's oldest message (CloudWatch's ApproximateAgeOfOldestMessage, last
        few minutes); a queue without data is left out. Raises the service's error when it cannot be read."""


class ExecutionReader(Protocol):
    def started_since(self, state_machine_arn: str, since: datetime, limit: int) -> ExecutionSample:
        """The executions started at or after ``since`` (at most ``limit``). Raises the service's error."""


class AlarmReader(Protocol):
    def alarm_states(self, names: Sequence[str]) -> list[AlarmState]:
        """The alarms of those names that exist (metric and composite). Raises the service's error."""


class CircuitReader(Protocol):
    def load_many(self, keys: Sequence[str]) -> list[Circuit]:
        """The circuits of those keys (a key never stored: a closed circuit). Raises the service's error."""


class SpendReader(Protocol):
    def global_day(self, day: str) -> DaySpend:
        """Every tenant's spend on the UTC ``day`` (zeros when nothing was spent). Raises the service's error."""

    def own_budgets(self, day: str) -> list[TenantBudget]:
        """Every tenant with a daily budget of its own, and what it committed on ``day`` (one Query and a
        BatchGetItem per 100 tenants: no Scan). Raises the service's error."""


# ------------------------------------------------------------------------------------------------ rules


def circuit_keys(book: PriceBook) -> list[str]:
    """Every circuit a step may use: one per priced model id, keyed as the step keys it."""
    return sorted({circuit_key(book.price(model).provider, model) for model in book.model_ids()})


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M:%S UTC")


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")


def api_finding(url: str, status: int, seconds: float, api_function: str | None, region: str) -> Finding:
    logs = (
        f"aws logs tail /aws/lambda/{api_function} --since 15m --region {region}"
        if api_function
        else "the api function's log group"
    )
    if status != 200:
        return Finding(
            check="api",
            status=Status.FAIL,
            detail=f"GET {url}/health answered {status} in {seconds:.2f} s",
            next_steps=[f"the api function's errors: {logs}"],
        )
    if seconds > SLOW_HEALTH_SECONDS:
        return Finding(
            check="api",
            status=Status.WARN,
            detail=f"GET {url}/health answered 200 but took {seconds:.1f} s (over {SLOW_HEALTH_SECONDS:g} s)",
            next_steps=[f"cold starts or throttling: {logs}"],
        )
    return Finding(check="api", status=Status.OK, detail=f"GET {url}/health answered 200 in {seconds:.2f} s")


def table_finding(table_name: str, status: str) -> Finding:
    if status == "ACTIVE":
        return Finding(check="table", status=Status.OK, detail=f"{table_name} is ACTIVE")
    state = Status.WARN if status == "UPDATING" else Status.FAIL
    return Finding(
        check="table",
        status=state,
        detail=f"{table_name} is {status}",
        next_steps=[f"aws dynamodb describe-table --table-name {table_name}: reads and writes need it ACTIVE"],
    )


def queue_findings(
    refs: Sequence[QueueRef], states: Sequence[QueueState], ages: dict[str, float], *, region: str, local: bool
) -> list[Finding]:
    """One finding per queue. A dead-letter queue is one the stack names so, or one another queue's redrive
    policy sends its failed messages to (then ``start-message-move-task`` moves them back to it)."""
    sources = {s.dead_letter_target_arn: s for s in states if s.dead_letter_target_arn}
    named = {ref.url for ref in refs if ref.dead_letter}
    findings = []
    for state in states:
        source = sources.get(state.arn)
        if source is not None or state.url in named:
            findings.append(_dead_letter_finding(state, source, ages.get(state.name), region=region, local=local))
        else:
            findings.append(_work_queue_finding(state, ages.get(state.name), region=region))
    return findings


def _depth(state: QueueState, age: float | None) -> str:
    oldest = f"oldest {_ago(age)}" if age is not None else "oldest: no CloudWatch data"
    return f"{state.visible} waiting, {state.in_flight} in flight, {state.delayed} delayed; {oldest}"


def _dead_letter_finding(
    state: QueueState, source: QueueState | None, age: float | None, *, region: str, local: bool
) -> Finding:
    held = state.visible + state.in_flight
    of = f"dead-letter queue of {source.name}" if source else "dead-letter queue"
    check = f"queue {state.name}"
    if not held:
        return Finding(check=check, status=Status.OK, detail=f"{of}: empty")
    inspect = (
        f"see why: aws sqs receive-message --queue-url {state.url} --attribute-names All "
        f"--max-number-of-messages 10 --visibility-timeout 0 --region {region}"
    )
    if source is not None:
        act = (
            f"after fixing the cause, move them back to {source.name}: "
            f"aws sqs start-message-move-task --source-arn {state.arn} --region {region}"
        )
    else:
        act = f"once each is dealt with: aws sqs purge-queue --queue-url {state.url} --region {region}"
    steps = [inspect, act, f"what each kind of message means: {README_DEAD_LETTERS}; {RUNBOOK}"]
    if local:
        steps.append(LOCAL_AWS_NOTE)
    return Finding(
        check=check,
        status=Status.FAIL,
        detail=f"{of}: {held} message{'s' if held != 1 else ''} ({_depth(state, age)})",
        next_steps=steps,
    )


def _work_queue_finding(state: QueueState, age: float | None, *, region: str) -> Finding:
    check, detail = f"queue {state.name}", _depth(state, age)
    if age is None or age < BACKLOG_WARN_SECONDS:
        return Finding(check=check, status=Status.OK, detail=detail)
    return Finding(
        check=check,
        status=Status.FAIL if age >= BACKLOG_FAIL_SECONDS else Status.WARN,
        detail=f"{detail}: its consumer is not keeping up",
        next_steps=[
            f"is its event source mapping enabled? aws lambda list-event-source-mappings --event-source-arn "
            f"{state.arn} --region {region}",
            f"throttled or failing consumer: {RUNBOOK}",
        ],
    )


def _show_command(name: str) -> str:
    match = re.fullmatch(rf"({re.escape(SESSION_PREFIX)}.+)_t\d+", name)
    return f"stepwise sessions show {match.group(1)}" if match else f"stepwise status {name}"


def executions_finding(sample: ExecutionSample, state_machine_arn: str, region: str) -> Finding:
    counts = sample.counts
    failed = counts.get("FAILED", 0) + counts.get("TIMED_OUT", 0)
    ended = failed + counts.get("SUCCEEDED", 0)
    window = f"{EXECUTION_WINDOW.total_seconds() / 3600:g} h"
    shown = ", ".join(f"{counts[s]} {s.lower()}" for s in sorted(counts) if counts[s]) or "none"
    at_least = "at least " if sample.truncated else ""
    detail = f"started in the last {window}: {at_least}{shown}"
    if not failed:
        return Finding(check="executions", status=Status.OK, detail=detail)
    rate = failed / ended if ended else 1.0
    state = Status.FAIL if failed >= FAILURES_FAIL_MIN and rate >= FAILURE_RATE_FAIL else Status.WARN
    return Finding(
        check="executions",
        status=state,
        detail=f"{detail} ({rate:.0%} of those that ended failed or timed out)",
        next_steps=[
            f"why: {'; '.join(_show_command(name) for name in sample.failed_names[:SHOWN_NAMES])}",
            f"all of them: aws stepfunctions list-executions --state-machine-arn {state_machine_arn} "
            f"--status-filter FAILED --max-items 20 --region {region}",
            f"a run the workflow caught ends FAILED with the provider's message; {RUNBOOK}",
        ],
    )


def active_finding(census: Census) -> Finding:
    """What is in progress, for information (the ``ActiveRuns`` gauge counts the same, every minute)."""
    return Finding(check="active", status=Status.OK, detail=census.summary())


def is_budget_alarm(alarm: AlarmState) -> bool:
    """A budget alarm (its description links the runbook's budget section): news of spend, not of a fault."""
    return alarm.description.endswith(f"{RUNBOOK}#{BUDGET_SECTION}")


def alarms_finding(names: Sequence[str], states: Sequence[AlarmState], region: str) -> Finding:
    """Any alarm in ALARM fails, but budget alarms alone only warn: a tenant using its budget is no fault (the
    spend and tenant budgets checks judge budgets; a budget alarm stays in ALARM until a step reports less)."""
    firing = [alarm for alarm in states if alarm.state == "ALARM"]
    if not firing:
        missing = f" ({len(names) - len(states)} not found)" if len(states) < len(names) else ""
        return Finding(
            check="alarms", status=Status.OK, detail=f"{len(names)} alarms of the stack{missing}, none in ALARM"
        )
    faults = [alarm for alarm in firing if not is_budget_alarm(alarm)]
    described = "; ".join(
        f"{alarm.name}" + (f" ({alarm.description})" if alarm.description else "")
        + (f" since {_clock(alarm.since)}" if alarm.since else "")
        for alarm in firing
    )  # fmt: skip
    first = faults or firing  # the faults lead
    tenant = (
        f"a budget alarm names no tenant: the step function's log line 'budget use' does ({RUNBOOK}#{BUDGET_SECTION})"
    )
    return Finding(
        check="alarms",
        status=Status.FAIL if faults else Status.WARN,
        detail=f"{len(firing)} of {len(states)} in ALARM: {described}",
        next_steps=[
            *(f"{alarm.name}: {alarm.reason}" for alarm in first[:SHOWN_NAMES] if alarm.reason),
            f"what each alarm means and what to do: {RUNBOOK}",
            *([tenant] if len(faults) < len(firing) else []),
            f"its history: aws cloudwatch describe-alarm-history --alarm-name {first[0].name} "
            f"--history-item-type StateUpdate --max-items 5 --region {region}",
        ],
    )


def circuits_finding(
    circuits: Sequence[Circuit], *, cooldown_seconds: float, now: datetime, routing: RoutingConfig
) -> Finding:
    checked = len(circuits)
    unhealthy = [c for c in circuits if c.state is not CircuitState.CLOSED]
    if not unhealthy:
        return Finding(check="circuits", status=Status.OK, detail=f"{checked} circuits, all closed")
    fail, parts, steps = False, [], []
    for circuit in unhealthy:
        model = circuit.key.split(":", 1)[-1]
        if circuit.state is CircuitState.HALF_OPEN:
            parts.append(f"{circuit.key} half-open (probing since {_clock(_moment(circuit.half_open_at))})")
            continue
        opened, reopens = _moment(circuit.opened_at), _moment(circuit.opened_at + cooldown_seconds)
        cooling = now < reopens
        fail = fail or cooling
        parts.append(
            f"{circuit.key} OPEN since {_clock(opened)} after {circuit.failures} failures: "
            + (f"calls refused until {_clock(reopens)}, then one probe" if cooling else
               f"cooldown over at {_clock(reopens)}: the next call to it probes")
        )  # fmt: skip
        fallbacks = routing.fallbacks.get(model, [])
        steps.append(
            f"{model}: steps fall back to {', '.join(fallbacks)} meanwhile (routing.json; a run's own fallbacks "
            "come first)" if fallbacks else f"{model} has no fallback in routing.json: its steps wait and retry"
        )  # fmt: skip
    steps += [
        "it closes when a probe succeeds; check the provider's status and the step function's ModelErrors metric",
        f"how circuits open and close: {README_CIRCUITS}; {RUNBOOK}",
    ]
    return Finding(
        check="circuits",
        status=Status.FAIL if fail else Status.WARN,
        detail=f"{len(unhealthy)} of {checked} not closed: " + "; ".join(parts),
        next_steps=steps,
    )


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def spend_finding(
    spend: DaySpend, *, day: str, global_daily_usd: Decimal | None, routing: RoutingConfig, local: bool = False
) -> Finding:
    spent = f"{usd(spend.committed_usd)} committed today ({day} UTC; {usd(spend.spent_usd)} spent, {spend.steps} steps)"
    if global_daily_usd is None:
        return Finding(check="spend", status=Status.OK, detail=f"{spent}; no global daily budget is set")
    percent = float(spend.committed_usd / global_daily_usd * 100)
    detail = f"{spent}: {percent:.0f}% of the global daily budget ${global_daily_usd}"
    if percent < routing.downgrade_at_percent:
        return Finding(check="spend", status=Status.OK, detail=detail)
    over = percent >= 100
    return Finding(
        check="spend",
        status=Status.FAIL if over else Status.WARN,
        detail=detail,
        next_steps=[
            "every new model call is refused (BUDGET_EXCEEDED, GLOBAL_DAILY_BUDGET) until 00:00 UTC"
            if over
            else f"calls go to cheaper models from {routing.downgrade_at_percent:g}% (routing.json downgrades); "
            "at 100% every call is refused until 00:00 UTC",
            "a tenant's own spend: stepwise costs, with its key (spend is counted per tenant: ranking today's "
            "tenants would take a Scan); a higher budget: "
            + (
                "STEPWISE_GLOBAL_DAILY_BUDGET_USD=<USD> make local"
                if local
                else "npx cdk deploy -c global_daily_budget_usd=<USD>"
            ),
        ],
    )


def tenants_finding(
    budgets: Sequence[TenantBudget],
    *,
    default_daily_usd: Decimal | None,
    table_name: str,
    routing: RoutingConfig,
    local: bool = False,
) -> Finding:
    """The tenants with budgets of their own, against them (the others are counted per tenant only: finding
    today's would take a Scan, so they are not listed)."""
    default = f"the others: {usd(default_daily_usd)} a day each" if default_daily_usd else "the others: no budget"
    if not budgets:
        detail = f"no tenant has a budget of its own ({default})"
        return Finding(check="tenant budgets", status=Status.OK, detail=detail)
    ranked = sorted(budgets, key=lambda b: b.percent, reverse=True)
    near = [b for b in ranked if b.percent >= routing.downgrade_at_percent]
    shown = "; ".join(f"{b.tenant} {b.percent:.0f}% of {usd(b.daily_usd)}" for b in (near or ranked)[:SHOWN_NAMES])
    threshold = f"{routing.downgrade_at_percent:g}%"
    detail = f"{len(budgets)} with a budget of its own, {len(near)} at {threshold} or more: {shown}"
    if not near:
        return Finding(check="tenant budgets", status=Status.OK, detail=f"{detail} ({default})")
    over = [b.tenant for b in near if b.percent >= 100]
    return Finding(
        check="tenant budgets",
        status=Status.WARN,
        detail=f"{detail} ({default})",
        next_steps=[
            *([f"refused until 00:00 UTC: {_names(over)}"] if over else []),
            f"if it should spend more: stepwise tenants{'' if local else f' --table {table_name}'} set "
            f"{near[0].tenant} --daily-usd <USD> (functions see it within 30 s)",
        ],
    )


# ------------------------------------------------------------------------------------------------ the use case


@dataclass
class Doctor:
    probe: HealthProbe
    table: TableReader
    queues: QueueReader
    executions: ExecutionReader
    alarms: AlarmReader
    circuits: CircuitReader
    spend: SpendReader
    active: ActiveRuns
    clock: Clock
    routing: RoutingConfig

    def examine(self, target: Target) -> Report:
        now = self.clock.now()
        findings = [
            self._check("api", lambda: self._api(target)),
            self._check("table", lambda: table_finding(target.table_name, self.table.table_status(target.table_name))),
            *self._check_many("queues", lambda: self._queues(target)),
            self._check("executions", lambda: self._executions(target, now)),
            self._check("active", lambda: active_finding(count_active(self.active))),
            self._check("alarms", lambda: self._alarms(target)),
            self._check("circuits", lambda: self._circuits(target, now)),
            self._check("spend", lambda: self._spend(target, now)),
            self._check("tenant budgets", lambda: self._tenants(target, now)),
        ]
        return Report(target=target.description, checked_at=now, findings=findings)

    @staticmethod
    def _check(name: str, run: Callable[[], Finding]) -> Finding:
        return Doctor._check_many(name, lambda: [run()])[0]

    @staticmethod
    def _check_many(name: str, run: Callable[[], list[Finding]]) -> list[Finding]:
        try:
            return run()
        except Exception as exc:  # one part that cannot be read must not hide the others
            return [
                Finding(
                    check=name,
                    status=Status.FAIL,
                    detail=f"could not be checked: {type(exc).__name__}: {exc}",
                    next_steps=[f"the credentials' permissions, the region, the resource's existence; {README_DOCTOR}"],
                )
            ]

    def _api(self, target: Target) -> Finding:
        if target.api_url is None:
            return Finding(check="api", status=Status.SKIP, detail="the stack has no API URL output")
        try:
            status, seconds = self.probe.get(target.api_url.rstrip("/") + "/health")
        except OSError as exc:
            return Finding(
                check="api",
                status=Status.FAIL,
                detail=f"GET {target.api_url.rstrip('/')}/health: no answer ({exc})",
                next_steps=["is the endpoint right (output ApiUrl), and is the local stack running (make local)?"],
            )
        return api_finding(target.api_url.rstrip("/"), status, seconds, target.api_function, target.region)

    def _queues(self, target: Target) -> list[Finding]:
        if not target.queues:
            return [Finding(check="queues", status=Status.SKIP, detail="the stack has no queues")]
        states = [self.queues.queue_state(ref.url) for ref in target.queues]
        ages = self.queues.oldest_ages([state.name for state in states])
        return queue_findings(target.queues, states, ages, region=target.region, local=target.local)

    def _executions(self, target: Target, now: datetime) -> Finding:
        if target.state_machine_arn is None:
            return Finding(check="executions", status=Status.SKIP, detail="the stack has no state machine output")
        sample = self.executions.started_since(target.state_machine_arn, now - EXECUTION_WINDOW, EXECUTION_SAMPLE)
        return executions_finding(sample, target.state_machine_arn, target.region)

    def _alarms(self, target: Target) -> Finding:
        if target.alarm_names is None:
            return Finding(
                check="alarms", status=Status.SKIP, detail="no CloudWatch alarms here (not emulated locally)"
            )
        states = self.alarms.alarm_states(target.alarm_names) if target.alarm_names else []
        return alarms_finding(target.alarm_names, states, target.region)

    def _circuits(self, target: Target, now: datetime) -> Finding:
        circuits = self.circuits.load_many(target.circuit_keys)
        return circuits_finding(circuits, cooldown_seconds=target.circuit_cooldown_seconds, now=now,
                                routing=self.routing)  # fmt: skip

    def _spend(self, target: Target, now: datetime) -> Finding:
        day = now.astimezone(UTC).date().isoformat()
        return spend_finding(self.spend.global_day(day), day=day, global_daily_usd=target.global_daily_usd,
                             routing=self.routing, local=target.local)  # fmt: skip

    def _tenants(self, target: Target, now: datetime) -> Finding:
        budgets = self.spend.own_budgets(now.astimezone(UTC).date().isoformat())
        return tenants_finding(budgets, default_daily_usd=target.tenant_daily_usd, table_name=target.table_name,
                               routing=self.routing, local=target.local)  # fmt: skip
