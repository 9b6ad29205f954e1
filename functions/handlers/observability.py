"""Logs and metrics of every function, named in one place: one metrics namespace, one service name per
function that is both its log's ``service`` and its metrics' ``service`` dimension, and ``CATALOG``, every metric
a function may emit (its unit, its dimensions beside ``service``, the functions that emit it). A handler emits
only through ``Observability.emit``, which refuses a name, dimension or value the catalog does not have. The
AWS metrics the dashboard and alarms read (SQS, Step Functions) are named in ``AWS_METRICS``; the dashboard and
alarms look every metric up here (infra/metrics.py), so they read only what is emitted.

Traces: X-Ray's active tracing is switched on per function by the stack (infra/constructs/agent_functions.py);
each function's powertools ``Tracer`` adds its handler's subsegment (``## handler``), annotated through
``Observability.annotate`` with the keys of ``TRACE_ANNOTATIONS`` only, and the AWS SDK's calls as subsegments
(``TRACED_LIBRARIES``). The model call and tool calls are subsegments too (functions/adapters/tracing.py). No
trace holds what a run says: handlers are decorated with ``capture_response=False`` (a response is a run's
output, a tool's result, a session's events) and ``capture_error=False`` (an error's text may quote a provider,
an ARN, a key or the input that failed validation; logs get it through redact()), and their tracer
(``QuietTracer``) records an exception leaving a handler or a record handler by its type alone, where the X-Ray
SDK would record its message and stack.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer, single_metric
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from functions.agent.errors import RETRYABLE_KINDS
from functions.agent.ledger import GLOBAL_DAILY_BUDGET, MAX_STEPS, MAX_TOKENS, MAX_USD, TENANT_DAILY_BUDGET
from functions.agent.models import TERMINAL_STATUSES, RunStatus
from functions.agent.redact import redact

if TYPE_CHECKING:
    from functions.agent.webhooks import WebhookNotifier

NAMESPACE = "Stepwise"
BUDGET_ALARM_THRESHOLDS = (50, 80, 90, 100)  # percent of a budget committed: alarms (infra), log lines (step)

# Handlers that add no metric on some paths (reads, replays); powertools would warn on every one of them.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Every log line, exception text included, with keys, tokens, ARNs and account ids taken out."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def service_name(function: str) -> str:
    """The service of a function (``mark_failed`` -> ``stepwise-mark-failed``)."""
    return "stepwise-" + function.replace("_", "-")


class MetricError(ValueError):
    """A metric the catalog does not have, or with dimensions or values it does not allow (a bug: tests fail)."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric of ``CATALOG``: every function in ``functions`` emits it with the ``service`` dimension and
    exactly ``dimensions`` beside it; a dimension in ``values`` takes only those values (bounded cardinality)."""

    name: str
    unit: MetricUnit
    functions: tuple[str, ...]
    what: str
    dimensions: tuple[str, ...] = ()
    values: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(service_name(function) for function in self.functions)


def _values(*values: str) -> frozenset[str]:
    return frozenset(values)


STATUS_CLASSES = _values("2xx", "3xx", "4xx", "5xx")
RUN_ENDS = _values(*(status.value for status in TERMINAL_STATUSES))
TOOL_STATUSES = _values("ok", "error")
# a delivery: made, failed and tried again later, failed for the last time (the dead-letter queue), not made because
# its endpoint was deleted, or because its host left the deployment's allow-list
WEBHOOK_DELIVERY_STATUSES = _values("delivered", "retrying", "dead_lettered", "gone", "refused")
ENDS_RUNS = ("api", "intake", "finalize", "mark_failed", "workflow_ended")  # the functions that end runs
KINDS = _values("session", "run")  # a session, or a run of POST /runs (a stream's, an active entry's)
ACTIVE_STATUSES = _values(*(status.value for status in RunStatus if not status.terminal))
OTHER_TOOL = "agent_tool"  # the bucket of a tool the deployment does not register (a client's or MCP server's)
COUNT, MS = MetricUnit.Count, MetricUnit.Milliseconds

CATALOG: tuple[MetricSpec, ...] = (
    # api: requests
    MetricSpec("Requests", COUNT, ("api",), "answers by status class", ("status_class",),
               {"status_class": STATUS_CLASSES}),
    MetricSpec("RequestLatency", MS, ("api",), "time the api function took to answer a request"),
    MetricSpec("ApiErrors", COUNT, ("api",), "answers that were an unexpected 500"),
    MetricSpec("RateLimiterErrors", COUNT, ("api",), "requests let through because the rate could not be counted"),
    MetricSpec("RequestsRateLimited", COUNT, ("api",), "requests refused 429 by a tenant's requests per minute"),
    MetricSpec("RunsAccepted", COUNT, ("api",), "runs submitted (a replayed Idempotency-Key not counted)"),
    MetricSpec("RunsCancelled", COUNT, ("api",), "runs cancelled by request"),
    MetricSpec("AuthRefused", COUNT, ("authorizer",), "requests refused by the API key authorizer"),
    # stream: live events (server-sent events behind the function URL)
    MetricSpec("StreamsOpened", COUNT, ("stream",), "event streams opened, of a session or a run", ("kind",),
               {"kind": KINDS}),
    MetricSpec("StreamDuration", MetricUnit.Seconds, ("stream",), "how long a stream stayed open (the function's "
               "billed time)", ("kind",), {"kind": KINDS}),
    # step: model calls, tokens, cost, the resilience around them
    MetricSpec("StepLatency", MS, ("step",), "one step, end to end (model call and fast tools included; an "
               "invocation may take several)"),
    MetricSpec("ModelCalls", COUNT, ("step",), "model calls answered and settled"),
    MetricSpec("ResponseCacheHits", COUNT, ("step",), "steps answered by the response cache (no model call)"),
    MetricSpec("ModelLatency", MS, ("step",), "one model call"),
    MetricSpec("InputTokens", COUNT, ("step",), "uncached input tokens"),
    MetricSpec("OutputTokens", COUNT, ("step",), "output tokens"),
    MetricSpec("CacheReadInputTokens", COUNT, ("step",), "input tokens read from the prompt cache"),
    MetricSpec("CacheCreationInputTokens", COUNT, ("step",), "input tokens written to the prompt cache"),
    MetricSpec("CostMicroUSD", COUNT, ("step",), "cost of the model calls, in millionths of a dollar"),
    MetricSpec("CostMicroUSDByModel", COUNT, ("step",), "the same, by priced model id (else 'other')", ("model",)),
    MetricSpec("StepRetries", COUNT, ("step",), "step invocations that are Step Functions' retries"),
    MetricSpec("ModelErrors", COUNT, ("step",), "retryable model failures by kind (throttled: 429, overloaded: 529)",
               ("kind",), {"kind": _values(*RETRYABLE_KINDS)}),
    MetricSpec("Fallbacks", COUNT, ("step",), "model calls sent to a fallback model"),
    MetricSpec("CircuitTransitions", COUNT, ("step",), "circuit state changes, by provider:model",
               ("State", "Circuit"), {"State": _values("closed", "open", "half_open")}),
    MetricSpec("CircuitsOpened", COUNT, ("step",), "circuits that opened (one series, whichever circuit)"),
    MetricSpec("BudgetUsedPercent", MetricUnit.Percent, ("step",), "a daily budget committed before the step's call",
               ("Budget",), {"Budget": _values("TenantDaily", "GlobalDaily")}),
    MetricSpec("BudgetRefusals", COUNT, ("step",), "steps a budget refused, by refusal code", ("code",),
               {"code": _values(MAX_STEPS, MAX_TOKENS, MAX_USD, TENANT_DAILY_BUDGET, GLOBAL_DAILY_BUDGET)}),
    # tool (and step: the fast calls a step runs itself)
    MetricSpec("ToolCalls", COUNT, ("tool", "step"), f"tool calls by registered tool (else {OTHER_TOOL!r}) and status",
               ("tool", "status"), {"status": TOOL_STATUSES}),
    # how runs end
    MetricSpec("RunsFinished", COUNT, ("finalize",), "runs (and session turns: IDLE) the workflow ended, by status",
               ("status",), {"status": RUN_ENDS}),
    MetricSpec("StepsPerRun", COUNT, ("finalize",), "steps a run took"),
    MetricSpec("RunDuration", MetricUnit.Seconds, ("finalize",), "a run's submission to its end (runs, not sessions)"),
    MetricSpec("RunsFailed", COUNT, ("mark_failed",), "runs the workflow's Catch ended FAILED"),
    MetricSpec("ExecutionsEnded", COUNT, ("workflow_ended",), "executions that ended outside the workflow"),
    MetricSpec("ExecutionsEndedByStatus", COUNT, ("workflow_ended",), "the same, by execution status", ("status",),
               {"status": _values("TIMED_OUT", "FAILED", "ABORTED")}),
    # gauges: what is in progress, every minute
    MetricSpec("ActiveRuns", COUNT, ("gauges",), "runs and sessions in a turn that are active (listed in the index "
               "of active work), by kind and status", ("kind", "status"), {"kind": KINDS, "status": ACTIVE_STATUSES}),
    # webhooks
    MetricSpec("WebhookAnnounceFailures", COUNT, ENDS_RUNS,
               "ends of runs and turns not announced to webhooks (the webhooks queue refused)"),
    MetricSpec("WebhookEvents", COUNT, ("webhooks",), "events fanned out to at least one of their tenant's endpoints"),
    MetricSpec("WebhookDeliveries", COUNT, ("webhooks",), "delivery attempts by outcome", ("status",),
               {"status": WEBHOOK_DELIVERY_STATUSES}),
)  # fmt: skip
METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOG}

# AWS's own metrics the dashboard and alarms read (never emitted by Stepwise): (namespace, name) -> dimensions
AWS_METRICS: dict[tuple[str, str], tuple[str, ...]] = {
    ("AWS/SQS", "ApproximateAgeOfOldestMessage"): ("QueueName",),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"): ("QueueName",),
    **{("AWS/States", f"Executions{what}"): ("StateMachineArn",)
       for what in ("Started", "Succeeded", "Failed", "TimedOut", "Aborted")},
}  # fmt: skip


# Only the AWS SDK is patched (DynamoDB, SQS, Step Functions, S3, Secrets Manager and Bedrock calls appear as
# subsegments). Not httpx, httplib or requests: they would send a trace header to the model provider, MCP servers and
# the hosts tools fetch, and record those URLs (a tool's input) in traces; and patching them imports them at start.
TRACED_LIBRARIES = ("botocore",)

# What a function's trace is annotated with (X-Ray indexes annotations: ``annotation.run_id = "run_..."`` finds a
# run's traces in the console or with ``aws xray get-trace-summaries --filter-expression``). Ids and names only.
TRACE_ANNOTATIONS: dict[str, str] = {
    "tenant": "the tenant of the run, session or request",
    "run_id": "the run (a session's run id is the session id)",
    "session_id": "the session, when the run is one",
    "turn": "the session's turn (1 for the first)",
    "step": "the run's step",
    "route": "the API route matched, as its template (GET /runs/{run_id})",
    "tool": f"the tool function's call: a registered tool's name, else {OTHER_TOOL!r} (an agent's MCP or Lambda tool)",
}
SESSION_PREFIX = "sesn_"  # functions.agent.sessions.SESSION_PREFIX (not imported here: the module costs 35 ms)
MAX_ANNOTATION_CHARS = 256


class QuietTracer(Tracer):
    """powertools' Tracer whose handler and method subsegments record a failure by the exception's type only.

    ``capture_error=False`` keeps the exception out of the subsegment's metadata, but the X-Ray SDK's subsegment
    context manager still records it as the subsegment leaves (``cause``: its message and stack): a validation
    error quotes the input it refused, a webhook delivery's failure its endpoint's URL. A failure that ends the
    invocation is reported by Lambda's runtime anyway (the function's segment); a record handler's (intake,
    webhooks) is caught by the batch and would be nowhere else."""

    def _add_full_exception_as_metadata(
        self, method_name: str, error: Exception, subsegment: Any, capture_error: bool | None = None
    ) -> None:
        super()._add_full_exception_as_metadata(method_name, error, subsegment, capture_error)
        record = subsegment.add_exception

        def by_type(exception: BaseException, stack: Any, remote: bool = False) -> None:
            record(type(type(exception).__name__, (Exception,), {})(), [], remote)  # a fault, its type: no text

        setattr(subsegment, "add_exception", by_type)  # noqa: B010  # this subsegment only, as it leaves


class TraceError(ValueError):
    """An annotation not in TRACE_ANNOTATIONS, or a value that is not a short id or number (a bug: tests fail)."""


def metric_spec(name: str, function: str | None = None, dimensions: Mapping[str, str] | None = None) -> MetricSpec:
    """The catalog's metric ``name``, checked: emitted by ``function`` (when given), with exactly these
    dimensions beside ``service`` and allowed values (when given). Raises MetricError."""
    spec = METRICS.get(name)
    if spec is None:
        raise MetricError(f"metric {name!r} is not in the catalog (functions/handlers/observability.py)")
    if function is not None and function not in spec.functions:
        raise MetricError(f"metric {name!r} is emitted by {', '.join(spec.functions)}, not {function}")
    if dimensions is not None:
        if set(dimensions) != set(spec.dimensions):
            raise MetricError(f"metric {name!r} has dimensions {sorted(spec.dimensions)}, not {sorted(dimensions)}")
        for dimension, allowed in spec.values.items():
            if dimensions[dimension] not in allowed:
                raise MetricError(f"metric {name!r}: {dimension} {dimensions[dimension]!r} not in {sorted(allowed)}")
    return spec


@dataclass(frozen=True)
class Observability:
    function: str
    service: str
    logger: Logger
    metrics: EphemeralMetrics
    tracer: Tracer

    def emit(self, name: str, value: float = 1, **dimensions: str) -> None:
        """Metric ``name`` of the catalog, in its unit. Without dimensions of its own it joins the invocation's
        EMF blob (``@metrics.log_metrics`` flushes it); with them it is its own blob, emitted at once."""
        spec = metric_spec(name, self.function, dimensions)
        if not dimensions:
            self.metrics.add_metric(name=name, unit=spec.unit, value=value)
            return
        with single_metric(
            name=name, unit=spec.unit, value=value, namespace=NAMESPACE, default_dimensions={"service": self.service}
        ) as metric:
            for dimension, dimension_value in dimensions.items():
                metric.add_dimension(name=dimension, value=dimension_value)

    def annotate(self, **annotations: str | int | None) -> None:
        """Annotate the trace entity being recorded (the handler's subsegment) with these keys of TRACE_ANNOTATIONS;
        None leaves a key out. Raises TraceError for another key or a value that is not a short string or an int."""
        for key, value in annotations.items():
            if key not in TRACE_ANNOTATIONS:
                raise TraceError(f"annotation {key!r} is not in TRACE_ANNOTATIONS (handlers/observability.py)")
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise TraceError(f"annotation {key!r} must be a string or an int, not {type(value).__name__}")
            if isinstance(value, str) and not (0 < len(value) <= MAX_ANNOTATION_CHARS and value.isprintable()):
                raise TraceError(f"annotation {key!r} must be 1 to {MAX_ANNOTATION_CHARS} printable characters")
            self.tracer.put_annotation(key=key, value=value)  # type: ignore[arg-type]  # an int is a numbers.Number

    def annotate_run(
        self, tenant: str | None, run_id: str, *, turn: int | None = None, step: int | None = None
    ) -> None:
        """The run (or session, and its turn) an invocation works on, as annotations of its trace."""
        session = run_id.startswith(SESSION_PREFIX)
        self.annotate(tenant=tenant, run_id=run_id, session_id=run_id if session else None,
                      turn=turn if session and turn else None, step=step)  # fmt: skip

    def unannounced(self, notifier: WebhookNotifier | None) -> int:
        """Log the ends this invocation could not announce to webhooks (functions/agent/lifecycle.py); their number,
        which the handler emits as ``WebhookAnnounceFailures``."""
        failures = notifier.take_failures() if notifier is not None else []
        for failure in failures:
            self.logger.error(
                "webhook event not announced", tenant=failure.tenant, event_id=failure.event_id,
                event_type=failure.event_type, resource_id=failure.resource_id, reason=failure.reason,
            )  # fmt: skip
        return len(failures)


def observability(function: str) -> Observability:
    """The logger, metrics and tracer of one function (its name as in infra/functions.py). Its metrics are its own
    (powertools' ``EphemeralMetrics``; ``Metrics`` instances share one metric set per process): on Lambda a
    process runs one function, but the local stack runs every handler in one process, where a shared set
    printed one function's metrics under another's ``service``. Its tracer is off where X-Ray is not (outside
    Lambda, or POWERTOOLS_TRACE_DISABLED=true: the local stack and the tests)."""
    service = service_name(function)
    logger = Logger(service=service, logger_formatter=RedactingFormatter())
    tracer = QuietTracer(service=service, auto_patch=True, patch_modules=TRACED_LIBRARIES)
    return Observability(function, service, logger, EphemeralMetrics(namespace=NAMESPACE, service=service), tracer)
