"""Webhooks' core: the envelope, the event types a run's or a turn's end maps to, filters, the allow-list, retries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.agent.errors import DeliveryFailedError, EnqueueError, NotFoundError, RequestRejectedError
from functions.agent.models import Budget, Run, RunError, RunKey, RunRequest, RunStatus, Turn
from functions.agent.webhooks import (
    MAX_ATTEMPTS,
    MAX_WEBHOOKS,
    Deliveries,
    Endpoints,
    Webhook,
    WebhookEvent,
    WebhookNotifier,
    Webhooks,
    backoff_seconds,
    envelope,
    new_secret,
)
from tests.fakes import core
from tests.fakes.clock import FixedClock
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.services import RecordingQueue, RecordingWorkflow
from tests.fakes.webhooks import MemoryWebhooks, RecordingSender, RecordingWebhookQueue

T0 = "2026-11-21T12:00:00.000+00:00"
ALLOWED = Endpoints.parse("hooks.example.com,*.example.org", "127.0.0.1")


def run(status: RunStatus, *, session: bool = False, error: RunError | None = None, turns: int = 1) -> Run:
    return Run(
        run_id="sesn_1" if session else "run_1", tenant="acme", status=status, input="", model="claude-haiku-4-5",
        tools=[], budget=Budget(), error=error, session={"rev": 1} if session else None,
        turns=[Turn(first_step=0, started_at=T0) for _ in range(turns)] if session else [],
        created_at=T0, updated_at=T0,
    )  # fmt: skip


def webhooks(store: MemoryWebhooks | None = None) -> Webhooks:
    ids = iter(f"wh_{n}" for n in range(100))
    return Webhooks(store=store or MemoryWebhooks(), clock=FixedClock(), endpoints=ALLOWED, new_id=lambda: next(ids))


# ------------------------------------------------------------------------------------------- what is sent


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (RunStatus.SUCCEEDED, None, "session.status_idled"),  # end_turn
        (RunStatus.CANCELLED, None, "session.status_idled"),  # an interrupt: end_turn
        (RunStatus.IDLE, None, "session.requires_action"),
        (RunStatus.BUDGET_EXCEEDED, RunError(code="MAX_USD", message="m"), "session.budget_reached"),
        (RunStatus.FAILED, RunError(code="REFUSAL", message="m"), "session.status_idled"),  # refusal
        (RunStatus.FAILED, RunError(code="RetryableModelError", message="m"), "session.status_idled"),
        (RunStatus.TIMED_OUT, None, "session.status_idled"),  # retries_exhausted
    ],
)
def test_a_turn_that_idles_announces_its_stop_reason_as_a_resource_verb_type(
    status: RunStatus, error: RunError | None, expected: str
) -> None:
    event = envelope(run(status, session=True, error=error))
    assert event is not None and event["data"]["type"] == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [(RunStatus.SUCCEEDED, "run.succeeded"), (RunStatus.FAILED, "run.failed"), (RunStatus.CANCELLED, "run.failed"),
     (RunStatus.BUDGET_EXCEEDED, "run.failed"), (RunStatus.TIMED_OUT, "run.failed")],
)  # fmt: skip
def test_a_run_that_ends_announces_run_succeeded_or_run_failed(status: RunStatus, expected: str) -> None:
    event = envelope(run(status))
    assert event is not None and event["data"]["type"] == expected


def test_the_envelope_is_thin_and_names_the_resource() -> None:
    event = envelope(run(RunStatus.IDLE, session=True))
    assert event == {
        "id": event["id"] if event else None,
        "created_at": T0,
        "type": "event",
        "data": {"type": "session.requires_action", "id": "sesn_1", "organization_id": "acme",
                 "workspace_id": "default"},
    }  # fmt: skip
    assert str(event["id"]).startswith("wevt_")
    assert WebhookEvent.model_validate(event).model_dump() == event  # the shape the webhooks function accepts


def test_the_sdk_reads_every_event_type_stepwise_sends() -> None:
    import anthropic

    client = anthropic.Anthropic(api_key="unused")
    for status, session in ((RunStatus.IDLE, True), (RunStatus.SUCCEEDED, True), (RunStatus.SUCCEEDED, False),
                            (RunStatus.BUDGET_EXCEEDED, True), (RunStatus.FAILED, False)):  # fmt: skip
        event = envelope(run(status, session=session))
        assert event is not None
        parsed = client.beta.webhooks.parse_unverified(json.dumps(event))
        assert parsed.id == event["id"] and parsed.type == "event" and parsed.data.id == event["data"]["id"]
        assert parsed.data.type == event["data"]["type"] and parsed.created_at.isoformat().startswith("2026-11-21")


def test_an_end_reported_twice_is_the_same_event_and_another_turn_is_another() -> None:
    first, again = envelope(run(RunStatus.SUCCEEDED, session=True)), envelope(run(RunStatus.SUCCEEDED, session=True))
    later = envelope(run(RunStatus.SUCCEEDED, session=True, turns=2))
    assert first is not None and again is not None and later is not None
    assert first["id"] == again["id"] != later["id"]


@pytest.mark.parametrize("status", [RunStatus.QUEUED, RunStatus.RUNNING])
def test_nothing_is_announced_before_the_end(status: RunStatus) -> None:
    queue = RecordingWebhookQueue()
    assert WebhookNotifier(queue=queue).ended(run(status)) is None
    assert queue.announced == []


def test_a_queue_that_refuses_is_reported_never_raised() -> None:
    notifier = WebhookNotifier(queue=RecordingWebhookQueue(refuse=True))
    event = notifier.ended(run(RunStatus.SUCCEEDED))
    assert event is not None
    (failure,) = notifier.take_failures()
    assert (failure.event_id, failure.event_type, failure.resource_id) == (event["id"], "run.succeeded", "run_1")
    assert "the queue is unavailable" in failure.reason and notifier.take_failures() == []


# ------------------------------------------------------------------------------------------- endpoints


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/in", "https://a.example.org:8443/x?y=1", "http://127.0.0.1:9000/hook",
     "https://HOOKS.example.com./in"],
)  # fmt: skip
def test_the_allow_list_admits_its_hosts(url: str) -> None:
    assert ALLOWED.check(url) == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://hooks.example.com/in", "http:// is refused"),
        ("https://evil.example.com/in", "not on this deployment's allow-list"),
        ("https://example.org/in", "not on this deployment's allow-list"),  # *.example.org: subdomains only
        ("ftp://hooks.example.com/in", "an https:// URL"),
        ("hooks.example.com/in", "an https:// URL"),
        ("https://user:pw@hooks.example.com/in", "credentials"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("https://hooks.example.com/#frag", "fragment"),
        ("https://hooks.example.com/caf\u00e9", "printable ASCII only"),
        ("https://hooks.example.com/a b", "printable ASCII only"),
        ("https://b\u00fccher.example.org/in", "printable ASCII only"),  # *.example.org, but not in its xn-- form
    ],
)
def test_the_allow_list_refuses_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(RequestRejectedError, match=problem):
        ALLOWED.check(url)


def test_a_deployment_without_an_allow_list_has_no_webhooks() -> None:
    with pytest.raises(RequestRejectedError, match="webhook_allowed_hosts"):
        Endpoints.parse("").check("https://hooks.example.com/")


def test_created_once_with_its_secret_then_listed_without_it() -> None:
    store = MemoryWebhooks()
    hooks = webhooks(store)
    created = hooks.create("acme", {"url": "https://hooks.example.com/in", "event_types": ["session.requires_action"]})
    assert created["secret"].startswith("whsec_") and created["id"] == "wh_0"
    assert created["event_types"] == ["session.requires_action"]
    (listed,) = hooks.list("acme")
    assert "secret" not in listed.public() and listed.secret == created["secret"]
    assert hooks.list("other") == []
    with pytest.raises(NotFoundError):
        hooks.get("other", "wh_0")  # another tenant's is not found
    with pytest.raises(NotFoundError):
        hooks.get("acme", "wh_" + "0" * 2000)  # too long to be an id: not looked up
    assert hooks.delete("acme", "wh_0") == {"type": "webhook_deleted", "id": "wh_0"}
    assert store.webhooks == {}


@pytest.mark.parametrize(
    ("body", "problem"),
    [({}, "url"), ({"url": "https://hooks.example.com/", "event_types": ["agent.created"]}, "event_types"),
     ({"url": "https://hooks.example.com/", "event_types": []}, "event_types"),
     ({"url": "https://hooks.example.com/", "secret": "mine"}, "secret")],
)  # fmt: skip
def test_bad_registrations_are_refused_naming_the_field(body: dict[str, Any], problem: str) -> None:
    store = MemoryWebhooks()
    with pytest.raises(RequestRejectedError, match=problem):
        webhooks(store).create("acme", body)
    assert store.webhooks == {}


def test_a_tenant_has_a_bounded_number_of_webhooks() -> None:
    hooks = webhooks()
    for _ in range(MAX_WEBHOOKS):
        hooks.create("acme", {"url": "https://hooks.example.com/"})
    with pytest.raises(RequestRejectedError, match="at most"):
        hooks.create("acme", {"url": "https://hooks.example.com/"})


class RacingWebhooks(MemoryWebhooks):
    """A store where another request's registration lands between this one's count and its write."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: Webhook | None = None

    def put_webhook(self, webhook: Webhook) -> None:
        if self.rival is not None:
            super().put_webhook(self.rival)
            self.rival = None
        super().put_webhook(webhook)


def test_concurrent_registrations_cannot_take_a_tenant_past_its_bound() -> None:
    rival = Webhook(webhook_id="wh_rival", tenant="acme", url="https://hooks.example.com/r", secret=new_secret(),
                    created_at=T0)  # fmt: skip
    store = RacingWebhooks()
    hooks = webhooks(store)
    for _ in range(MAX_WEBHOOKS - 1):
        hooks.create("acme", {"url": "https://hooks.example.com/"})
    store.rival = rival  # the last free place: another request registers while this one does
    with pytest.raises(RequestRejectedError, match="at most"):
        hooks.create("acme", {"url": "https://hooks.example.com/late"})
    assert len(store.list_webhooks("acme")) == MAX_WEBHOOKS
    assert "https://hooks.example.com/late" not in [hook.url for hook in store.list_webhooks("acme")]


def test_a_secret_is_a_standard_webhooks_secret() -> None:
    from standardwebhooks import Webhook

    secret = new_secret()
    Webhook(secret)  # the library reads it
    assert secret.startswith("whsec_") and secret != new_secret()


# ------------------------------------------------------------------------------------------- delivery


def deliveries(
    store: MemoryWebhooks, sender: RecordingSender, queue: RecordingWebhookQueue, endpoints: Endpoints = ALLOWED
) -> Deliveries:
    return Deliveries(store=store, queue=queue, sender=sender, endpoints=endpoints, retry_base_seconds=30)


def test_fan_out_queues_one_delivery_per_endpoint_that_wants_the_type() -> None:
    store, queue = MemoryWebhooks(), RecordingWebhookQueue()
    hooks = webhooks(store)
    hooks.create("acme", {"url": "https://hooks.example.com/all"})
    hooks.create("acme", {"url": "https://hooks.example.com/runs", "event_types": ["run.succeeded", "run.failed"]})
    hooks.create("other", {"url": "https://hooks.example.com/theirs"})
    event = envelope(run(RunStatus.IDLE, session=True))
    assert event is not None
    assert deliveries(store, RecordingSender(), queue).fan_out("acme", event) == ["wh_0"]
    assert queue.deliveries == [("acme", ["wh_0"], event)]


def test_a_failed_delivery_is_retried_with_exponential_backoff_until_the_last_attempt() -> None:
    store, queue, sender = MemoryWebhooks(), RecordingWebhookQueue(), RecordingSender(failures=MAX_ATTEMPTS)
    webhooks(store).create("acme", {"url": "https://hooks.example.com/"})
    event = envelope(run(RunStatus.SUCCEEDED))
    assert event is not None
    use_case = deliveries(store, sender, queue)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with pytest.raises(DeliveryFailedError, match=f"attempt {attempt} of {MAX_ATTEMPTS}") as failed:
            use_case.deliver("acme", "wh_0", event, attempt=attempt, receipt=f"r{attempt}")
        assert failed.value.last_attempt is (attempt == MAX_ATTEMPTS)
    # the last attempt schedules nothing: the queue's redrive moves it to the dead-letter queue
    assert queue.retries == [(f"r{n}", backoff_seconds(n)) for n in range(1, MAX_ATTEMPTS)]
    assert [seconds for _, seconds in queue.retries][:4] == [30, 60, 120, 240]


def test_a_delivery_signs_with_the_endpoints_secret_and_the_events_id() -> None:
    store, sender = MemoryWebhooks(), RecordingSender()
    created = webhooks(store).create("acme", {"url": "https://hooks.example.com/"})
    event = envelope(run(RunStatus.SUCCEEDED))
    assert event is not None
    assert (
        deliveries(store, sender, RecordingWebhookQueue()).deliver("acme", "wh_0", event, attempt=1, receipt="r")
        == "delivered"
    )
    assert sender.sent == [("https://hooks.example.com/", created["secret"], event["id"], event)]


def test_a_deleted_endpoint_gets_nothing_more() -> None:
    sender = RecordingSender()
    event = envelope(run(RunStatus.SUCCEEDED))
    assert event is not None
    use_case = deliveries(MemoryWebhooks(), sender, RecordingWebhookQueue())
    assert use_case.deliver("acme", "wh_gone", event, attempt=1, receipt="r") == "gone"
    assert sender.sent == []


def test_an_endpoint_whose_host_left_the_allow_list_gets_nothing_more() -> None:
    store, sender, queue = MemoryWebhooks(), RecordingSender(), RecordingWebhookQueue()
    webhooks(store).create("acme", {"url": "https://hooks.example.com/"})
    event = envelope(run(RunStatus.SUCCEEDED))
    assert event is not None
    narrower = Endpoints.parse("other.example.com")  # the deployment's allow-list changed since it was registered
    outcome = deliveries(store, sender, queue, narrower).deliver("acme", "wh_0", event, attempt=1, receipt="r")
    assert outcome == "refused" and sender.sent == [] and queue.retries == []


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_seconds(n, 1) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff_seconds(30) == 3600


# ------------------------------------------------------------------------------------------- where runs end


def announced(queue: RecordingWebhookQueue) -> list[tuple[str, str]]:
    return [(event["data"]["id"], event["data"]["type"]) for _, event in queue.announced]


def stored(store: InMemoryRunStore, status: RunStatus, *, session: bool = False, turns: int = 1) -> RunKey:
    store.create_run(run(status, session=session, turns=turns))
    return RunKey("acme", "sesn_1" if session else "run_1")


def test_an_end_is_announced_by_whoever_records_it_and_only_once() -> None:
    store, queue = InMemoryRunStore(), RecordingWebhookQueue()
    lifecycle = core.lifecycle(store, RecordingQueue(), notifier=WebhookNotifier(queue=queue))
    key = stored(store, RunStatus.RUNNING)
    lifecycle.end(key, RunStatus.SUCCEEDED, None)  # e.g. the run watchdog
    lifecycle.end(key, RunStatus.FAILED, RunError(code="WORKFLOW_FAILED", message="m"))  # a late execution event
    assert announced(queue) == [("run_1", "run.succeeded")]


def test_the_workflows_end_announces_the_end_the_step_recorded() -> None:
    # the step's transaction records a final answer's SUCCEEDED; Finalize (or MarkFailed) comes next and announces it
    store, queue = InMemoryRunStore(), RecordingWebhookQueue()
    lifecycle = core.lifecycle(store, notifier=WebhookNotifier(queue=queue))
    key = stored(store, RunStatus.IDLE, session=True)
    lifecycle.end(key, RunStatus.IDLE, None, turn=1, workflow_end=True)
    lifecycle.fail(key, "States.TaskFailed", "finalize crashed", turn=1)  # the Catch after Finalize: same event
    assert announced(queue) == [("sesn_1", "session.requires_action")] * 2
    assert queue.announced[0][1]["id"] == queue.announced[1][1]["id"]


def test_a_late_end_of_an_earlier_turn_announces_nothing() -> None:
    store, queue = InMemoryRunStore(), RecordingWebhookQueue()
    key = stored(store, RunStatus.RUNNING, session=True, turns=2)
    core.lifecycle(store, notifier=WebhookNotifier(queue=queue)).end(key, RunStatus.SUCCEEDED, None, turn=1,
                                                                     workflow_end=True)  # fmt: skip
    assert announced(queue) == []


@pytest.mark.parametrize(("session", "expected"), [(False, "run.failed"), (True, "session.status_idled")])
def test_a_cancel_or_an_interrupt_is_announced(session: bool, expected: str) -> None:
    store, queue = InMemoryRunStore(), RecordingWebhookQueue()
    key = stored(store, RunStatus.RUNNING, session=session)
    lifecycle = core.lifecycle(store, RecordingQueue(), notifier=WebhookNotifier(queue=queue))
    lifecycle.cancel(key, RecordingWorkflow(), turn=1 if session else None)
    assert announced(queue) == [(key.run_id, expected)]


def test_an_end_the_queue_cannot_announce_still_ends_the_run() -> None:
    store, notifier = InMemoryRunStore(), WebhookNotifier(queue=RecordingWebhookQueue(refuse=True))
    key = stored(store, RunStatus.RUNNING)
    ended = core.lifecycle(store, notifier=notifier).end(key, RunStatus.SUCCEEDED, None, workflow_end=True)
    assert ended.status is RunStatus.SUCCEEDED and [f.resource_id for f in notifier.take_failures()] == ["run_1"]


def test_a_stuck_run_the_watchdog_ends_is_announced() -> None:
    store, queue, workflow = InMemoryRunStore(), RecordingWebhookQueue(), RecordingWorkflow()
    key = stored(store, RunStatus.RUNNING)
    workflow.statuses["run_1"] = "FAILED"
    assert core.intake(store, workflow, notifier=WebhookNotifier(queue=queue)).watch(key) == "stuck:FAILED"
    assert announced(queue) == [("run_1", "run.failed")]


def test_a_run_that_cannot_be_queued_is_announced_when_it_is_failed() -> None:
    store, queue = InMemoryRunStore(), RecordingWebhookQueue()
    submitter = core.submitter(store, queue=RecordingQueue(fail=ConnectionError("down")),
                               notifier=WebhookNotifier(queue=queue))  # fmt: skip
    with pytest.raises(EnqueueError):
        submitter.submit("acme", RunRequest(input="hi"))
    ((run_id, kind),) = announced(queue)
    assert kind == "run.failed" and store.get_run(RunKey("acme", run_id)) is not None
