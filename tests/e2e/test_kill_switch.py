"""The kill switch on the local stack as deployed (`--require-keys`, two tenants): 20 sessions of one tenant with a
model call in flight are stopped by its kill switch, their executions stopped and their reservations released after
the (shortened) release delay, while another tenant's sessions run on and finish; and the operator's `stepwise
active` / `stepwise kill` (the local stack's operator routes, the same use case) for one, a tenant's, and all."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import pytest

from stepwise import cli
from stepwise.local.stack import LocalStack
from tests.e2e.test_managed_agents import answer, user_text
from tests.e2e.test_tenants import bearer, call, new_key, wait_for
from tests.fakes.anthropic_server import FakeAnthropic, error

pytestmark = pytest.mark.e2e

RELEASE_DELAY = 2  # seconds: a deployment's is the step timeout + 60 s (355)
SESSIONS_A, SESSIONS_B = 20, 3


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Iterator[LocalStack]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STEPWISE_RELEASE_DELAY_SECONDS", str(RELEASE_DELAY))
        env.setenv("STEPWISE_TENANT_REQUESTS_PER_MINUTE", "100000")
        env.setenv("STEPWISE_MODEL_TIMEOUT_SECONDS", "120")  # the held calls never time out during the test
        env.setenv("STEPWISE_CIRCUIT_FAILURE_THRESHOLD", "1000")  # A's rate-limited calls open no circuit for B's
        with LocalStack(port=0, template=template, require_keys=True) as local:
            yield local


def spend(stack: LocalStack, tenant: str) -> tuple[Decimal, Decimal]:
    """The tenant's spent and committed (spent + reserved) USD over its day counters."""
    items = stack.dynamodb.query(
        TableName="stepwise-local", KeyConditionExpression="pk = :pk AND begins_with(sk, :day)",
        ExpressionAttributeValues={":pk": {"S": f"T#{tenant}#SPEND"}, ":day": {"S": "DAY#"}},
    )["Items"]  # fmt: skip
    days = [item for item in items if item["sk"]["S"].count("#") == 1]  # DAY#{day}, not per model or run
    return (sum((Decimal(i.get("spent_usd", {"N": "0"})["N"]) for i in days), Decimal(0)),
            sum((Decimal(i.get("committed_usd", {"N": "0"})["N"]) for i in days), Decimal(0)))  # fmt: skip


def printed(capsys: pytest.CaptureFixture[str]) -> Any:
    """What the CLI printed as JSON (the in-process stack's functions print their EMF lines to stdout too)."""
    lines = [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith('{"_aws"')]
    return json.loads(lines[-1])


def execution_status(stack: LocalStack, name: str) -> str:
    arn = stack.state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + name
    return str(stack.sfn.describe_execution(executionArn=arn)["status"])


def eventually(check: Any, timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def test_a_tenants_kill_switch_stops_its_20_sessions_and_leaves_another_tenants_running(
    stack: LocalStack, fake_api: FakeAnthropic, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a provider that rate-limits tenant A's calls for 5 minutes (each turn then waits in the workflow's
    # RetryAfter Wait state, running, its reservation held, no Lambda busy) and holds B's until the test lets it answer
    release_b = threading.Event()

    def provider(request: dict[str, Any]) -> Any:
        said = user_text(request)[-1]
        if said.startswith("A"):
            return (*error(429, "rate_limit_error", "slow down"), {"retry-after": "300"})
        release_b.wait(timeout=90)
        return answer(f"done {said}", input_tokens=40, output_tokens=5)

    fake_api.script = [provider] * 40
    keys = {"A": new_key(stack, "acme", capsys), "B": new_key(stack, "globex", capsys)}
    clients = {t: anthropic.Anthropic(api_key=k, base_url=stack.url, max_retries=0) for t, k in keys.items()}
    sessions: dict[str, list[str]] = {"A": [], "B": []}

    def start(tenant: str, count: int) -> None:
        client = clients[tenant]
        agent = client.beta.agents.create(name=f"agent-{tenant}", model="claude-haiku-4-5")
        for n in range(count):
            session = client.beta.sessions.create(agent=agent.id, environment_id="env")
            client.beta.sessions.events.send(
                session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": f"{tenant}{n}"}]}]
            )
            sessions[tenant].append(session.id)

    # And A's 20 sessions each in a running turn that has reserved for its call and waits to retry it
    start("A", SESSIONS_A)
    eventually(lambda: len(fake_api.requests) == SESSIONS_A, what="every one of A's turns calling the model")
    running = call(stack, "GET", "/active?limit=100", **bearer(keys["A"]))[1]["data"]
    eventually(lambda: {e["status"] for e in call(stack, "GET", "/active", **bearer(keys["A"]))[1]["data"]}
               == {"RUNNING"}, what="A's turns reserved")  # fmt: skip
    assert spend(stack, "acme")[1] > 0 and spend(stack, "acme")[0] == 0  # reserved, nothing spent
    # And B's 3 sessions running too, the first with its call in flight
    start("B", SESSIONS_B)
    eventually(lambda: len(fake_api.requests) == SESSIONS_A + 1, what="B's first call")
    # (each tenant sees its own active work, one Query of the index, in pages; the operator sees everyone's)
    _, listed = call(stack, "GET", "/active?limit=100", **bearer(keys["A"]))
    assert sorted(e["id"] for e in listed["data"]) == sorted(sessions["A"]) and listed["next_page"] is None
    assert {(e["type"], e["tenant"], e["turn"]) for e in running} == {("session", "acme", 1)}
    _, page = call(stack, "GET", "/active?limit=15", **bearer(keys["A"]))
    _, rest = call(stack, "GET", f"/active?limit=15&page={page['next_page']}", **bearer(keys["A"]))
    assert len(page["data"]) == 15 and [e["id"] for e in page["data"] + rest["data"]] == [
        e["id"] for e in listed["data"]] and rest["next_page"] is None  # fmt: skip
    # (the SDK's sessions.list(statuses=["running"]) reads the same index; Stepwise has no other status to filter by)
    running_a = clients["A"].beta.sessions.list(statuses=["running"], limit=7)
    assert sorted(s.id for s in running_a) == sorted(sessions["A"])  # (the SDK follows next_page)
    assert {s.status for s in running_a} == {"running"}
    with pytest.raises(anthropic.BadRequestError, match="'running' only"):
        clients["A"].beta.sessions.list(statuses=["idle"])
    capsys.readouterr()
    assert cli.main(["--endpoint", stack.url, "active", "--json"]) == 0
    everyone = printed(capsys)
    assert sorted(e["id"] for e in everyone) == sorted(sessions["A"] + sessions["B"])

    # When tenant A throws its kill switch (as many requests as it takes: each stops what it can in its time)
    stopped: list[dict[str, Any]] = []
    path = "/active/cancel"
    while True:
        status, report = call(stack, "POST", path, **bearer(keys["A"]))
        assert status == 200, report
        stopped += report["data"]
        if report["next_page"] is None:
            break
        path = f"/active/cancel?page={report['next_page']}"

    # Then its 20 sessions were stopped, and nothing of B's
    assert sorted(s["id"] for s in stopped) == sorted(sessions["A"])
    assert {(s["type"], s["tenant"], s["outcome"]) for s in stopped} == {("session", "acme", "stopped")}
    # their turns' executions are stopped, their turns cancelled (the status written first), and none is listed
    assert {execution_status(stack, f"{sid}_t1") for sid in sessions["A"]} == {"ABORTED"}
    assert call(stack, "GET", "/active", **bearer(keys["A"]))[1]["data"] == []
    assert list(clients["A"].beta.sessions.list(statuses=["running"])) == []
    # and once the release delay has passed, what their calls had reserved is free again, and every one idles
    eventually(lambda: spend(stack, "acme") == (Decimal(0), Decimal(0)), timeout=30, what="A's reservations released")
    a = clients["A"]
    assert {a.beta.sessions.retrieve(sid).status for sid in sessions["A"]} == {"idle"}
    events = [e.type for e in a.beta.sessions.events.list(sessions["A"][0]).data]
    assert events.index("user.interrupt") < events.index("session.status_idle")
    # And B's sessions were untouched: still running, still listed, still holding what they reserved
    assert {execution_status(stack, f"{sid}_t1") for sid in sessions["B"]} == {"RUNNING"}
    _, b_listed = call(stack, "GET", "/active", **bearer(keys["B"]))
    assert sorted(e["id"] for e in b_listed["data"]) == sorted(sessions["B"])
    assert spend(stack, "globex")[1] > 0

    # When the model answers B's calls, B's turns finish as if nothing had happened
    release_b.set()
    b = clients["B"]
    for sid in sessions["B"]:
        eventually(lambda sid=sid: b.beta.sessions.retrieve(sid).status == "idle", what=f"B's {sid} idle")
        events_b = b.beta.sessions.events.list(sid).data
        assert [e.type for e in events_b if e.type in ("agent.message", "user.interrupt")] == ["agent.message"]
        assert next(e for e in events_b if e.type == "session.status_idle").stop_reason.type == "end_turn"
    assert call(stack, "GET", "/active", **bearer(keys["B"]))[1]["data"] == []
    b_spent, b_committed = spend(stack, "globex")
    assert b_spent > 0 and b_committed == b_spent

    # And a stopped session is idle, not archived: its client may go on
    fake_api.script = [answer("back again")]
    a.beta.sessions.events.send(
        sessions["A"][0], events=[{"type": "user.message", "content": [{"type": "text", "text": "again"}]}]
    )
    eventually(lambda: a.beta.sessions.retrieve(sessions["A"][0]).status == "idle" and any(
        e.type == "agent.message" and e.content[0].text == "back again"
        for e in a.beta.sessions.events.list(sessions["A"][0]).data), what="A's next turn")  # fmt: skip


def test_the_operators_kill_switch_stops_one_a_tenants_or_everyones_work(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two runs of each of three tenants, each running: rate-limited, waiting 5 minutes to call the model again
    keys = {tenant: new_key(stack, tenant, capsys) for tenant in ("hooli", "initech", "umbrella")}
    fake = FakeAnthropic(*[(*error(429, "rate_limit_error", "slow down"), {"retry-after": "300"})] * 10)
    with fake, pytest.MonkeyPatch.context() as env:
        from functions.adapters import wiring

        env.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        env.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        wiring.reset()
        runs: dict[str, list[str]] = {}
        for tenant, key in keys.items():
            runs[tenant] = [call(stack, "POST", "/runs", {"input": f"task {n}"}, **bearer(key))[1]["run_id"]
                            for n in range(2)]  # fmt: skip
        eventually(lambda: len(fake.requests) == 6, what="every run calling the model")
        capsys.readouterr()
        cli_base = ["--endpoint", stack.url]
        # When the operator stops one run by id
        assert cli.main([*cli_base, "kill", runs["hooli"][0], "--tenant", "hooli", "--json"]) == 0
        assert [r["outcome"] for r in printed(capsys)] == ["stopped"]
        # and a tenant's active work
        assert cli.main([*cli_base, "kill", "--tenant", "initech", "--json"]) == 0
        assert sorted(r["id"] for r in printed(capsys)) == sorted(runs["initech"])
        # Then only those ended, cancelled by an operator, and the rest is still listed
        for tenant, run_ids in runs.items():
            for run_id in run_ids:
                run = call(stack, "GET", f"/runs/{run_id}", **bearer(keys[tenant]))[1]
                killed = tenant == "initech" or run_id == runs["hooli"][0]
                assert (run["status"] == "CANCELLED") == killed, (tenant, run)
                if killed:
                    assert run["error"]["message"] == "cancelled by an operator's kill switch"
        assert cli.main([*cli_base, "active", "--json"]) == 0
        assert sorted(e["id"] for e in printed(capsys)) == sorted(
            [runs["hooli"][1], *runs["umbrella"]])  # fmt: skip
        # And --all asks first: refused without a terminal unless --yes
        assert cli.main([*cli_base, "kill", "--all"]) == 2
        assert cli.main([*cli_base, "kill", "--all", "--yes", "--json"]) == 0
        assert sorted(r["id"] for r in printed(capsys)) == sorted(
            [runs["hooli"][1], *runs["umbrella"]])  # fmt: skip
        assert cli.main([*cli_base, "active", "--json"]) == 0
        assert printed(capsys) == []
        # and stopping what has ended is idempotent: nothing more is stopped
        assert cli.main([*cli_base, "kill", "--tenant", "umbrella", "--json"]) == 0
        assert printed(capsys) == []
        assert cli.main([*cli_base, "kill", runs["hooli"][0], "--tenant", "hooli", "--json"]) == 0
        assert [r["outcome"] for r in printed(capsys)] == ["already_ended"]
        for tenant, run_ids in runs.items():
            for run_id in run_ids:
                assert wait_for(stack, run_id, keys[tenant])["status"] == "CANCELLED"
    wiring.reset()
