"""Tenants on the local stack as deployed (`stepwise local --require-keys`): every route but /health runs the stack's
authorizer, each tenant's API key decides its tenant, and no tenant can see or touch another's runs, agents or
sessions (404, as for an id that does not exist)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from stepwise import cli
from stepwise.local.stack import LocalStack
from tests.e2e.test_managed_agents import answer, idle, tool_use
from tests.fakes.anthropic_server import FakeAnthropic

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Iterator[LocalStack]:
    with LocalStack(port=0, template=template, require_keys=True) as local:
        yield local


def call(stack: LocalStack, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(stack.url + path, data=data, method=method,
                                     headers={"content-type": "application/json", **headers})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_for(stack: LocalStack, run_id: str, key: str) -> dict[str, Any]:
    for _ in range(600):
        _, run = call(stack, "GET", f"/runs/{run_id}", **bearer(key))
        if run["status"] not in ("QUEUED", "RUNNING"):
            return dict(run)
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not end")


def new_key(stack: LocalStack, tenant: str, capsys: pytest.CaptureFixture[str]) -> str:
    """As an operator would: `stepwise keys create --tenant T` prints the key as its only line on stdout."""
    capsys.readouterr()
    assert cli.main(["--endpoint", stack.url, "keys", "create", "--tenant", tenant, "--name", "e2e"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("swk_")
    return out.strip()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_each_tenants_key_sees_only_its_own_runs_agents_and_sessions(
    stack: LocalStack, fake_api: FakeAnthropic, capsys: pytest.CaptureFixture[str]
) -> None:
    calculator = tool_use(("toolu_acme", "calculator", {"expression": "6*7"}))
    fake_api.script = [answer("Hello from acme's agent."), calculator, answer("42")]
    acme, globex = new_key(stack, "acme", capsys), new_key(stack, "globex", capsys)
    a = anthropic.Anthropic(api_key=acme, base_url=stack.url, max_retries=0)
    b = anthropic.Anthropic(api_key=globex, base_url=stack.url, max_retries=0)

    # the official SDK authenticates with a tenant's key and runs a turn
    agent = a.beta.agents.create(name="acme-agent", model="claude-haiku-4-5")
    session = a.beta.sessions.create(agent=agent.id, environment_id="env")
    a.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "hi"}]}]
    )
    stop, _ = idle(a, session.id, None)
    assert stop.stop_reason.type == "end_turn"
    status, run = call(stack, "POST", "/runs", {"input": "acme's secret task", "tools": ["calculator"]}, **bearer(acme))
    assert status == 202
    assert wait_for(stack, run["run_id"], acme)["status"] == "SUCCEEDED"
    owned = call(stack, "GET", f"/runs/{run['run_id']}/tool_results/toolu_acme", **bearer(acme))
    assert owned[0] == 200 and owned[1]["content"] == "42"  # so the other tenant's 404 below is a refusal

    # another tenant gets 404 for every one of them, on every route, as for ids that do not exist
    for attempt in (
        lambda: b.beta.agents.retrieve(agent.id),
        lambda: b.beta.agents.update(agent.id, version=1, name="stolen"),
        lambda: b.beta.agents.archive(agent.id),
        lambda: b.beta.agents.versions.list(agent.id),
        lambda: b.beta.sessions.retrieve(session.id),
        lambda: b.beta.sessions.events.list(session.id),
        lambda: b.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}]),
        lambda: b.beta.sessions.archive(session.id),
        lambda: b.beta.sessions.delete(session.id),
        lambda: b.beta.sessions.create(agent=agent.id, environment_id="env"),
    ):
        with pytest.raises(anthropic.NotFoundError):
            attempt()
    assert [x.id for x in b.beta.agents.list().data] == [] and [x.id for x in b.beta.sessions.list().data] == []
    for method, path in (("GET", f"/runs/{run['run_id']}"), ("GET", f"/runs/{run['run_id']}/steps"),
                         ("POST", f"/runs/{run['run_id']}/cancel"),
                         ("GET", f"/runs/{run['run_id']}/tool_results/toolu_acme"),
                         ("GET", f"/v1/sessions/{session.id}/tool_results/toolu_x")):  # fmt: skip
        status, _ = call(stack, method, path, **bearer(globex))
        assert status == 404, (method, path)
    _, costs = call(stack, "GET", "/costs", **bearer(globex))
    assert costs["tenant"] == "globex" and costs["total"]["cost_usd"] == 0 and costs["total"]["steps"] == 0
    # and the owner still has all of it, with who created it (the key's id, never the key)
    mine = a.beta.sessions.retrieve(session.id)
    assert mine.id == session.id and mine.model_extra["created_by"] == acme.split("_")[1]
    assert call(stack, "GET", f"/runs/{run['run_id']}", **bearer(acme))[1]["created_by"] == acme.split("_")[1]
    assert call(stack, "GET", f"/runs/{run['run_id']}", **{"x-api-key": acme})[0] == 200  # x-api-key works too


def test_no_key_a_revoked_key_or_a_malformed_one_is_refused(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key(stack, "initech", capsys)
    assert call(stack, "GET", "/v1/agents", **bearer(key))[0] == 200
    key_id = key.split("_")[1]

    assert cli.main(["--endpoint", stack.url, "keys", "revoke", key_id]) == 0

    for headers in ({}, bearer(key), bearer("swk_000000000000_" + "a" * 43), bearer("sk-ant-api03-nope"),
                    {"authorization": "Basic dXNlcjpwYXNz"}, {"x-api-key": ""}):  # fmt: skip
        status, body = call(stack, "GET", "/v1/agents", **headers)
        assert (status, body) == (403, {"message": "Forbidden"}), headers
    assert call(stack, "GET", "/health") == (200, {"status": "ok"})  # the one public route
    assert "revoked key" in capsys.readouterr().out
    assert cli.main(["--endpoint", stack.url, "keys", "list", "--tenant", "initech", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["key_id"] == key_id and listed["revoked_at"] is not None and key not in json.dumps(listed)


def test_the_local_key_routes_answer_this_machine_only(stack: LocalStack) -> None:
    json_type = {"content-type": "application/json", "host": "127.0.0.1"}
    assert stack.handle_http("POST", "/_local/keys", json_type, '{"tenant": "x"}', client="10.0.0.5")[0] == 403
    assert stack.handle_http("GET", "/_local/keys", {"host": "evil.example"}, "", client="127.0.0.1")[0] == 403
    assert stack.handle_http("POST", "/_local/keys", {"host": "127.0.0.1"}, '{"tenant": "x"}')[0] == 403  # a form
    assert stack.handle_http("POST", "/_local/keys", json_type, '{"tenant": "x"}')[0] == 201


@pytest.mark.parametrize("tenant", ["", "a" * 65, "acme corp", "T#x"])
def test_a_malformed_tenant_gets_no_key(stack: LocalStack, tenant: str) -> None:
    status, body = call(stack, "POST", "/_local/keys", {"tenant": tenant})
    assert status == 400 and "1 to 64 letters" in body["error"]["message"]


def test_an_operators_limits_hold_for_that_tenant_only_and_clearing_restores_the_defaults(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two tenants' keys, and an operator who gives hooli a daily budget no model call fits in
    hooli, umbrella = new_key(stack, "hooli", capsys), new_key(stack, "umbrella", capsys)
    tenants = ["--endpoint", stack.url, "tenants"]
    assert cli.main([*tenants, "set", "hooli", "--daily-usd", "0.000001"]) == 0
    assert "hooli" in capsys.readouterr().out
    # When hooli submits a run, it ends refused by its own daily budget, not the deployment's
    status, run = call(stack, "POST", "/runs", {"input": "hello"}, **bearer(hooli))
    assert status == 202
    ended = wait_for(stack, run["run_id"], hooli)
    assert ended["status"] == "BUDGET_EXCEEDED" and ended["error"]["code"] == "TENANT_DAILY_BUDGET"
    assert "$0.000001" in ended["error"]["message"]
    # When the operator also limits hooli to 2 requests a minute (the daily budget stays)
    assert cli.main([*tenants, "set", "hooli", "--requests-per-minute", "2"]) == 0
    assert cli.main([*tenants, "show", "hooli", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert shown["requests_per_minute"] == 2 and shown["daily_usd"] == 0.000001
    client = anthropic.Anthropic(api_key=hooli, base_url=stack.url, max_retries=0)
    # Then its third request of the minute is refused with the SDK's rate-limit error and when to retry (a later
    # one, if they straddled a minute's boundary; the exact count is tests/unit/test_tenants.py's)
    admitted = 0
    with pytest.raises(anthropic.RateLimitError) as refused:
        while admitted < 5:
            client.beta.agents.list()
            admitted += 1
    assert admitted in (2, 3, 4) and 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    assert "2 requests per minute" in refused.value.message
    # while another tenant was never limited
    other = anthropic.Anthropic(api_key=umbrella, base_url=stack.url, max_retries=0)
    assert all(other.beta.agents.list().data == [] for _ in range(5))
    # and once cleared, hooli has the deployment's limits again
    assert cli.main([*tenants, "clear", "hooli"]) == 0
    assert client.beta.agents.list().data == []
    assert cli.main([*tenants, "list", "--json"]) == 0
    assert "hooli" not in [t["tenant"] for t in json.loads(capsys.readouterr().out.splitlines()[-1])]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["set", "hooli"], "daily_usd, requests_per_minute or both"),
        (["set", "hooli", "--daily-usd", "-3"], "daily_usd"),
        (["set", "acme corp", "--daily-usd", "1"], "letters, digits"),
        (["show", "nobody"], "has no limits of its own"),
    ],
)
def test_a_bad_tenant_limit_is_a_cli_error_naming_it(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert cli.main(["--endpoint", stack.url, "tenants", *argv]) == 2
    assert message in capsys.readouterr().out.replace("\n", " ")
