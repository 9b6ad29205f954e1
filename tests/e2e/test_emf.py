"""The EMF the functions really print, on the local stack, against the catalog and against what the synthesised
dashboard and alarms read: a metric renamed, re-unitted or given another dimension in a handler fails here
(the handler's ``obs.emit`` refuses a name the catalog lacks; a blob that does not match what the dashboard
reads fails the comparison)."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from typing import Any

import anthropic
import pytest

from functions.agent.streams import BEFORE_ALL
from functions.handlers.observability import CATALOG, METRICS, NAMESPACE
from stepwise.client import StepwiseClient
from stepwise.local.stack import LOCAL_TENANT, LocalStack
from tests.e2e.conftest import count_gauges, http, wait
from tests.e2e.test_managed_agents import answer, tool_use
from tests.fakes.anthropic_server import FakeAnthropic, error
from tests.fakes.webhook_receiver import receiving
from tests.metric_references import Reference, alarm_references, dashboard_references

pytestmark = pytest.mark.e2e

# What this run does not make happen, and why (each is still checked statically: tests/unit/test_metric_catalog.py)
NOT_EXERCISED = {
    "ApiErrors": "an unexpected 500 in the api function (a bug)",
    "RateLimiterErrors": "the table failing to count a request",
    "AuthRefused": "the authorizer: this stack runs without API keys (tests/e2e/test_tenants.py runs with them)",
    "Fallbacks": "a fallback model (Bedrock) answering",
    "CircuitTransitions": "a circuit opening takes 5 failures, each retried with backoff (tests/unit)",
    "CircuitsOpened": "the same",
    "RunsFailed": "a task failing past its retries (a crash: the workflow's Catch; tests/e2e/test_chaos.py)",
    "ExecutionsEnded": "EventBridge's execution-ended rule, which the local stack does not emulate",
    "ExecutionsEndedByStatus": "the same",
    "WebhookAnnounceFailures": "the webhooks queue refusing an end's announcement (tests/functional/test_webhooks.py)",
}


def emf_blobs(printed: str) -> list[dict[str, Any]]:
    """Every EMF document printed (powertools writes one JSON object a line; log lines have no ``_aws``)."""
    blobs = []
    for line in printed.splitlines():
        if line.startswith("{"):
            document = json.loads(line)
            if "_aws" in document:
                blobs.append(document)
    return blobs


def emitted_series(blobs: list[dict[str, Any]]) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """Each metric's series as emitted: its dimensions with their values. Asserts every blob is CloudWatch EMF
    in the Stepwise namespace with the catalog's unit and exactly the catalog's dimensions for each metric."""
    series: dict[str, set[tuple[tuple[str, str], ...]]] = defaultdict(set)
    for blob in blobs:
        assert isinstance(blob["_aws"]["Timestamp"], int), blob
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == NAMESPACE, blob
            (dimension_set,) = directive["Dimensions"]  # one dimension set a metric: the series a chart reads
            for metric in directive["Metrics"]:
                name = metric["Name"]
                assert name in METRICS, f"{name!r} is printed but is not in the catalog: {blob}"
                spec = METRICS[name]
                assert metric["Unit"] == spec.unit.value, f"{name} in {metric['Unit']}, the catalog says {spec.unit}"
                assert set(dimension_set) == {"service", *spec.dimensions}, f"{name} by {dimension_set}: {blob}"
                assert blob["service"] in spec.services, f"{name} from {blob['service']}, emitted by {spec.services}"
                for dimension, allowed in spec.values.items():
                    assert blob[dimension] in allowed, f"{name} {dimension}={blob[dimension]!r}: {blob}"
                assert isinstance(blob[name], int | float | list), blob
                series[name].add(tuple(sorted((d, str(blob[d])) for d in dimension_set)))
    return series


def read_by(references: list[Reference], name: str, series: tuple[tuple[str, str], ...]) -> bool:
    """Whether a reference reads this series: its dimensions exactly, each value charted (a SEARCH: any)."""
    emitted = dict(series)
    return any(
        r.namespace == NAMESPACE and r.name == name and set(r.dimensions) == set(emitted)
        and all(value is None or value == emitted[d] for d, value in r.dimensions.items())
        for r in references
    )  # fmt: skip


def drive(stack: LocalStack, fake_api: FakeAnthropic) -> None:
    """A run, a session turn and the paths around them that emit metrics (a webhook endpoint told of them)."""
    with receiving() as receiver:
        _, hook = http(stack, "POST", "/v1/webhooks", {"url": receiver.url})
        receiver.secret = hook["secret"]
        try:
            runs_and_a_turn(stack, fake_api)
            receiver.wait_for(1)
            webhooks_drained(stack)
        finally:
            http(stack, "DELETE", f"/v1/webhooks/{hook['id']}")


def webhooks_drained(stack: LocalStack, timeout: float = 30) -> None:
    """Once the webhooks queue is empty, every delivery (and its EMF) is done."""
    deadline = time.monotonic() + timeout
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    while any(int(count) for count in stack.sqs.get_queue_attributes(
            QueueUrl=stack.webhooks_queue_url, AttributeNames=names)["Attributes"].values()):  # fmt: skip
        assert time.monotonic() < deadline, "the webhooks queue did not drain"
        time.sleep(0.1)


def runs_and_a_turn(stack: LocalStack, fake_api: FakeAnthropic) -> None:
    # A run: the provider is overloaded once (a retry), then asks for the calculator, then answers
    fake_api.script = [error(529, "overloaded_error", "Overloaded"),
                       tool_use(("toolu_1", "calculator", {"expression": "6*7"}), cache_read_input_tokens=30),
                       answer("42", cache_creation_input_tokens=20)]  # fmt: skip
    _, accepted = http(stack, "POST", "/runs", {"input": "What is 6*7?", "tools": ["calculator"]})
    assert wait(stack, accepted["run_id"])["status"] == "SUCCEEDED"
    # its events, streamed (the stream ends with the run's idle)
    streamed = list(StepwiseClient(stack.url).stream(f"/runs/{accepted['run_id']}/events/stream", after=BEFORE_ALL))
    assert streamed[-1]["type"] == "session.status_idle"
    # A run whose budget allows one step, that asks for a second
    fake_api.script = [tool_use(("toolu_2", "calculator", {"expression": "1+1"}))]
    _, accepted = http(stack, "POST", "/runs", {"input": "1+1?", "budget": {"max_steps": 1}})
    assert wait(stack, accepted["run_id"])["status"] == "BUDGET_EXCEEDED"
    # A run the provider refuses (a fatal error: the step ends it FAILED)
    fake_api.script = [error(400, "invalid_request_error", "messages: bad")]
    _, accepted = http(stack, "POST", "/runs", {"input": "hello"})
    assert wait(stack, accepted["run_id"])["status"] == "FAILED"
    # The same question twice from the response cache: one model call
    fake_api.script = [answer("4")]
    for _ in range(2):
        _, accepted = http(stack, "POST", "/runs", {"input": "What is 2*2?", "response_cache": True})
        assert wait(stack, accepted["run_id"])["status"] == "SUCCEEDED"
    # A run cancelled while its model call is in flight
    release = threading.Event()

    def slow(_: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        release.wait(timeout=20)
        return answer("late")

    fake_api.script = [slow]
    _, accepted = http(stack, "POST", "/runs", {"input": "slow"})
    # (the gauges, as their schedule invokes them every minute, count it: listed from its submission)
    assert count_gauges(stack)["runs"] >= 1
    assert http(stack, "POST", f"/runs/{accepted['run_id']}/cancel")[0] == 200
    release.set()
    wait(stack, accepted["run_id"])
    # A session turn with a tool call, through the official SDK
    fake_api.script = [tool_use(("toolu_3", "calculator", {"expression": "2**5"})), answer("32")]
    client = anthropic.Anthropic(api_key="sk-local", base_url=stack.url, max_retries=0)
    agent = client.beta.agents.create(name="m", model="claude-haiku-4-5", tools=[{"type": "stepwise_toolset_20261201"}])
    session = client.beta.sessions.create(agent=agent.id, environment_id="env_local")
    with client.beta.sessions.events.stream(session.id) as events:  # followed live
        client.beta.sessions.events.send(
            session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "2**5?"}]}]
        )
        stop = next(event for event in events if event.type == "session.status_idle")
    assert stop.stop_reason.type == "end_turn"
    # A request over the tenant's rate
    assert http(stack, "POST", f"/_local/tenants/{LOCAL_TENANT}", {"requests_per_minute": 1})[0] == 200
    statuses = {http(stack, "GET", "/costs")[0] for _ in range(3)}
    assert 429 in statuses


@pytest.fixture
def daily_budget(stack: LocalStack) -> Any:
    """The local tenant with a daily budget (the step function then reports how much of it is committed)."""
    assert http(stack, "POST", f"/_local/tenants/{LOCAL_TENANT}", {"daily_usd": 50})[0] == 200
    yield
    http(stack, "DELETE", f"/_local/tenants/{LOCAL_TENANT}")


def test_every_emf_blob_of_local_runs_and_a_session_turn_is_the_catalogs_and_is_what_the_dashboard_reads(
    stack: LocalStack,
    fake_api: FakeAnthropic,
    daily_budget: None,
    template: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    # When the local stack serves runs and a session turn
    drive(stack, fake_api)
    # Then every EMF blob printed is in the namespace, with each metric's unit and dimensions as cataloged
    series = emitted_series(emf_blobs(capsys.readouterr().out))
    # And every metric the catalog declares was printed, but the paths this run cannot take
    assert set(series) == set(METRICS) - set(NOT_EXERCISED), sorted(set(METRICS) ^ set(series) ^ set(NOT_EXERCISED))
    assert set(NOT_EXERCISED) <= {spec.name for spec in CATALOG}
    # And the synthesised dashboard and alarms read each series printed: the same name and dimensions, and
    # each value charted (a SEARCH reads every value)
    references = dashboard_references(template) + alarm_references(template)
    unread = {(name, s) for name, each in series.items() for s in each if not read_by(references, name, s)}
    assert not unread, f"printed but read by no widget or alarm: {sorted(unread)}"
