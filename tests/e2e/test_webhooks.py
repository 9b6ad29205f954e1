"""Webhooks on the local stack, as deployed (tenants' API keys): endpoints on 127.0.0.1 registered through
``/v1/webhooks``, every delivery verified by the receiver with the ``standardwebhooks`` library and by the anthropic
SDK's ``client.beta.webhooks.unwrap``; a receiver that is down gets the delivery later, with the same webhook-id."""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

import functions.handlers.webhooks  # noqa: F401 - its logger exists before function_logs collects loggers
from functions.agent.webhooks import event_id
from stepwise import cli
from stepwise.client import ApiError, StepwiseClient
from stepwise.local.stack import LocalStack
from tests.e2e.test_managed_agents import WEATHER, idle
from tests.e2e.test_tenants import wait_for
from tests.fakes.webhook_receiver import Delivery, WebhookReceiver, receiving

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
RETRY_BASE_SECONDS = 1  # the first retry's delay here (a deployment's: 30 s), so a retry is seen in seconds


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Iterator[LocalStack]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STEPWISE_WEBHOOK_RETRY_BASE_SECONDS", str(RETRY_BASE_SECONDS))
        with LocalStack(port=0, template=template, require_keys=True) as local:
            yield local


@pytest.fixture(scope="module")
def keys(stack: LocalStack) -> dict[str, str]:
    """An API key for each of two tenants."""
    made = {}
    for tenant in ("hooked", "other"):
        local = {"content-type": "application/json", "host": "127.0.0.1"}
        status, _, body = stack.handle_http("POST", "/_local/keys", local, json.dumps({"tenant": tenant}))
        assert status == 201
        made[tenant] = json.loads(body)["key"]
    return made


@pytest.fixture(autouse=True)
def no_endpoints_left(stack: LocalStack, keys: dict[str, str]) -> Iterator[None]:
    """Each test's endpoints are deleted after it (a later test's events are not retried against its receivers)."""
    yield
    for key in keys.values():
        for hook in api(stack, key).request("GET", "/v1/webhooks")["data"]:
            api(stack, key).request("DELETE", f"/v1/webhooks/{hook['id']}")


def api(stack: LocalStack, key: str) -> StepwiseClient:
    return StepwiseClient(stack.url, api_key=key)


def register(stack: LocalStack, key: str, url: str, **fields: Any) -> dict[str, Any]:
    return dict(api(stack, key).request("POST", "/v1/webhooks", {"url": url, **fields}))


def unwrapped(delivery: Delivery, secret: str) -> Any:
    """The delivery as the anthropic SDK's receiver helper reads it (it verifies the signature first)."""
    return anthropic.Anthropic(api_key="unused").beta.webhooks.unwrap(
        delivery.body, headers=delivery.headers, key=secret
    )


def test_each_end_is_delivered_signed_in_the_managed_agents_envelope(stack: LocalStack, keys: dict[str, str]) -> None:
    key = keys["hooked"]
    client = anthropic.Anthropic(api_key=key, base_url=stack.url, max_retries=0)
    with receiving() as every, receiving() as runs_only:
        # Given two endpoints of the tenant: one for every event, one for /runs' successes only
        every.secret = register(stack, key, every.url, description="all")["secret"]
        runs_only.secret = register(stack, key, runs_only.url, event_types=["run.succeeded"])["secret"]
        # When a session's turn idles for its client, the next one ends its turn, another hits its budget
        agent = client.beta.agents.create(name="hooks", model="claude-haiku-4-5", tools=[WEATHER])
        session = client.beta.sessions.create(agent=agent.id, environment_id="local")
        client.beta.sessions.events.send(
            session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "get_weather Paris"}]}]
        )
        stop, events = idle(client, session.id, None)
        assert stop.stop_reason.type == "requires_action"
        (use,) = [event for event in events if event.type == "agent.custom_tool_use"]
        result = {"type": "user.custom_tool_result", "custom_tool_use_id": use.id,
                  "content": [{"type": "text", "text": "18 C"}]}  # fmt: skip
        client.beta.sessions.events.send(session.id, events=[result])
        stop, _ = idle(client, session.id, stop.id)
        assert stop.stop_reason.type == "end_turn"
        cent = {"type": "limit", "max_list_cost": {"amount": "1", "currency": "USD"}}
        poor = client.beta.sessions.create(agent=agent.id, environment_id="local", budget=cent)  # type: ignore[arg-type]
        long = "hello " * 7_000  # a prompt of ~14,000 estimated tokens: $0.014 on Haiku, more than the cent left
        client.beta.sessions.events.send(
            poor.id, events=[{"type": "user.message", "content": [{"type": "text", "text": long}]}]
        )
        stop, _ = idle(client, poor.id, None)
        assert stop.stop_reason.type == "budget_reached"
        # And a /runs run completes
        run = api(stack, key).create_run({"input": "What is 6 * 7?"})
        assert wait_for(stack, run["run_id"], key)["status"] == "SUCCEEDED"
        delivered = every.wait_for(4)
        (for_runs,) = runs_only.wait_for(1)
        time.sleep(1)  # nothing else comes
        assert len(every.deliveries) == 4 and len(runs_only.deliveries) == 1
    # Then every delivery verified with the endpoint's secret, and reads as the SDK's BetaWebhookEvent
    assert all(d.error is None and d.status == 200 for d in [*delivered, for_runs])
    seen = {(d.verified["data"]["type"], d.verified["data"]["id"]) for d in delivered}
    assert seen == {("session.requires_action", session.id), ("session.status_idled", session.id),
                    ("session.budget_reached", poor.id), ("run.succeeded", run["run_id"])}  # fmt: skip
    for delivery in delivered:
        event = unwrapped(delivery, str(every.secret))
        assert event.type == "event" and event.id == delivery.headers["webhook-id"] == delivery.verified["id"]
        assert event.data.organization_id == "hooked" and event.data.workspace_id == "default"
        assert event.data.type == delivery.verified["data"]["type"]
    assert for_runs.verified["data"] == {"type": "run.succeeded", "id": run["run_id"], "organization_id": "hooked",
                                         "workspace_id": "default"}  # fmt: skip
    with pytest.raises(Exception, match="signature"):  # another endpoint's secret does not verify it
        unwrapped(for_runs, str(every.secret))


def test_a_receiver_that_is_down_gets_the_delivery_later_with_the_same_id(
    stack: LocalStack, keys: dict[str, str], function_logs: io.StringIO
) -> None:
    key = keys["other"]
    receiver = WebhookReceiver(answers=[500])  # when it is back, its first answer is an error too
    receiver.reserve_port()  # Given an endpoint that is down (nothing listens on its port)
    receiver.secret = register(stack, key, receiver.url, event_types=["run.succeeded"])["secret"]
    # When a run ends
    run = api(stack, key).create_run({"input": "What is 2 ** 10?"})
    assert wait_for(stack, run["run_id"], key)["status"] == "SUCCEEDED"
    expected = event_id("other", run["run_id"], 0, "run.succeeded")
    # Then the first attempt fails (the connection is refused) ...
    deadline = time.monotonic() + 30
    while not [line for line in function_logs.getvalue().splitlines() if expected in line and "ConnectError" in line]:
        assert time.monotonic() < deadline, "the first attempt was not made"
        time.sleep(0.05)
    try:
        receiver.start()  # ... the receiver comes back (answering 500 once, then 200)
        first, second = receiver.wait_for(2, timeout=30)
    finally:
        receiver.stop()
    # And the delivery arrives later: the same event, the same webhook-id, each attempt signed anew
    assert (first.status, second.status) == (500, 200) and first.error is None and second.error is None
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == expected
    assert second.verified["data"] == {"type": "run.succeeded", "id": run["run_id"], "organization_id": "other",
                                       "workspace_id": "default"}  # fmt: skip
    assert unwrapped(second, str(receiver.secret)).id == expected
    failed = [json.loads(line) for line in function_logs.getvalue().splitlines()
              if '"webhook delivery failed"' in line and expected in line]  # fmt: skip
    # every failed attempt was retried after its backoff: refused while it was down, then the 500
    assert [entry["attempt"] for entry in failed] == list(range(1, len(failed) + 1)) and len(failed) >= 2
    assert "ConnectError" in failed[0]["reason"] and "answered 500" in failed[-1]["reason"]


def test_only_allowed_hosts_are_registered_and_another_tenant_cannot_see_or_delete(
    stack: LocalStack, keys: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, theirs = api(stack, keys["hooked"]), api(stack, keys["other"])
    for url, problem in (("https://hooks.example.com/in", "allow-list"), ("https://10.0.0.7/in", "allow-list"),
                         ("http://127.0.0.1:9/in#x", "fragment"), ("ftp://127.0.0.1/in", "https://")):  # fmt: skip
        with pytest.raises(ApiError) as refused:
            mine.request("POST", "/v1/webhooks", {"url": url})
        assert refused.value.status == 400 and problem in refused.value.message
    created = mine.request("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/in"})
    for method in ("GET", "DELETE"):
        with pytest.raises(ApiError) as missing:
            theirs.request(method, f"/v1/webhooks/{created['id']}")
        assert missing.value.status == 404 and missing.value.code == "not_found_error"
    assert theirs.request("GET", "/v1/webhooks")["data"] == []
    assert mine.request("GET", f"/v1/webhooks/{created['id']}")["url"] == "http://127.0.0.1:9/in"
    # the CLI: list, then delete as the tenant (its key from STEPWISE_API_KEY)
    monkeypatch.setenv("STEPWISE_API_KEY", keys["hooked"])
    capsys.readouterr()
    assert cli.main(["--endpoint", stack.url, "webhooks", "list", "--json"]) == 0
    (listed,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]  # not the EMF lines
    assert created["id"] in [hook["id"] for hook in json.loads(listed)]
    assert cli.main(["--endpoint", stack.url, "webhooks", "delete", created["id"]]) == 0
    with pytest.raises(ApiError) as gone:
        mine.request("GET", f"/v1/webhooks/{created['id']}")
    assert gone.value.status == 404


def test_the_cli_prints_a_new_endpoints_secret_once(
    stack: LocalStack, keys: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPWISE_API_KEY", keys["other"])
    capsys.readouterr()
    assert cli.main(["--endpoint", stack.url, "webhooks", "create", "http://127.0.0.1:9/cli",
                     "--event-type", "run.succeeded"]) == 0  # fmt: skip
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert secret.startswith("whsec_")
    assert cli.main(["--endpoint", stack.url, "webhooks", "list"]) == 0
    assert secret not in capsys.readouterr().out


def test_the_example_receiver_verifies_and_prints_each_event(stack: LocalStack, keys: dict[str, str]) -> None:
    key = keys["hooked"]
    port = WebhookReceiver().reserve_port()
    secret = register(stack, key, f"http://127.0.0.1:{port}/hooks", event_types=["run.succeeded"])["secret"]
    # the README's commands: the receiver with the secret `stepwise webhooks create` printed
    receiver = subprocess.Popen(
        [sys.executable, "examples/webhook_receiver.py", "--port", str(port)], cwd=ROOT, text=True,
        env={**os.environ, "WEBHOOK_SECRET": secret}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert receiver.stderr is not None and receiver.stdout is not None
        assert receiver.stderr.readline().startswith(f"listening on http://127.0.0.1:{port}/hooks")
        run = api(stack, key).create_run({"input": "What is 6 * 7?"})
        assert wait_for(stack, run["run_id"], key)["status"] == "SUCCEEDED"
        ready, _, _ = select.select([receiver.stdout], [], [], 30)
        assert ready, "the example receiver printed nothing"
        printed = json.loads(receiver.stdout.readline())
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    assert printed["data"] == {"type": "run.succeeded", "id": run["run_id"], "organization_id": "hooked",
                               "workspace_id": "default"}  # fmt: skip
