"""The kill switch's adapters on moto: the index of active work as the DynamoDB stores write it (runs, and sessions'
turns), the api function's GET /active and POST /active/cancel, and `stepwise active` / `stepwise kill --table` with
an operator's credentials."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from functions.adapters.dynamodb_sessions import DynamoDBSessionStore
from functions.adapters.dynamodb_store import ACTIVE_PK, ACTIVE_SK, RUN_SK, DynamoDBRunStore, run_pk
from functions.agent import ledger
from functions.agent.active import place, shard_of
from functions.agent.models import Budget, Reservation, Run, RunKey, RunStatus, Turn
from functions.handlers import api
from stepwise import cli
from stepwise.local.lambdas import LocalContext
from tests.functional.conftest import TABLE, Aws, http_event

T0, T1 = "2026-12-01T00:00:00.000+00:00", "2026-12-01T00:10:00.000+00:00"


def active_ids(store: DynamoDBRunStore, tenant: str) -> list[str]:
    return [e.run_id for e in store.list_active(shard_of(tenant), tenant=tenant, limit=100, after=None)]


def session(run_id: str, status: RunStatus, turns: list[Turn], rev: int = 0) -> Run:
    return Run(run_id=run_id, tenant="acme", status=status, input="", model="claude-haiku-4-5", tools=[],
               budget=Budget(max_steps=25), session={"rev": rev, "agent_id": "agent_a", "archived_at": None},
               turns=turns, created_at=T0, updated_at=T0)  # fmt: skip


def request(context: LocalContext, method: str, path: str, tenant: str = "default", body: Any = None,
            query: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
    event = http_event(method, path, body)
    event["requestContext"]["authorizer"] = {"lambda": {"tenant": tenant}}
    if query:
        event["queryStringParameters"] = query
        event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    response = api.handler(event, context)
    return response["statusCode"], json.loads(response["body"])


def test_a_sessions_turns_are_listed_while_they_run_and_the_write_that_ends_one_unlists_it(aws: Aws) -> None:
    client = boto3.client("dynamodb")
    sessions, store = DynamoDBSessionStore(TABLE, client), DynamoDBRunStore(TABLE, client)
    # A session created idle is not listed; one created with its first events is, from its first turn's start
    sessions.create_session(session("sesn_idle", RunStatus.SUCCEEDED, []), [])
    first = session("sesn_busy", RunStatus.QUEUED, [Turn(first_step=0, started_at=T0)])
    sessions.create_session(first, [])
    assert active_ids(store, "acme") == ["sesn_busy"]
    (entry,) = store.list_active(shard_of("acme"), tenant="acme", limit=10, after=None)
    assert (entry.kind, entry.turn, entry.since, entry.status) == ("session", 1, T0, RunStatus.QUEUED)
    # The ledger's write that idles the turn unlists it
    assert ledger.end_run(store, first.key, RunStatus.SUCCEEDED, now=T1)
    assert active_ids(store, "acme") == []
    item = client.get_item(TableName=TABLE, Key={"pk": {"S": run_pk(first.key)}, "sk": {"S": RUN_SK}})["Item"]
    assert ACTIVE_PK not in item and ACTIVE_SK not in item
    # The next turn lists it again, from that turn's start; answers that leave it idle do not
    idle = store.get_run(first.key)
    assert idle is not None
    waiting = idle.model_copy(update={"session": {**(idle.session or {}), "rev": 1}})
    assert sessions.save_session(waiting, read=idle, events=[], results=[])
    assert active_ids(store, "acme") == []
    second = waiting.model_copy(update={"status": RunStatus.QUEUED, "session": {**(waiting.session or {}), "rev": 2},
                                        "turns": [*waiting.turns, Turn(first_step=0, started_at=T1)]})  # fmt: skip
    assert sessions.save_session(second, read=waiting, events=[], results=[])
    (entry,) = store.list_active(shard_of("acme"), tenant="acme", limit=10, after=None)
    assert (entry.turn, entry.since) == (2, T1) and entry.key == place(second).key
    # And deleting a session (only an idle one can be) leaves nothing listed
    assert ledger.end_run(store, first.key, RunStatus.CANCELLED, now=T1, release=False)
    sessions.delete_session(first.key)
    assert active_ids(store, "acme") == []


def test_the_index_is_read_in_pages_of_one_tenant_in_its_shard(aws: Aws) -> None:
    store = DynamoDBRunStore(TABLE, boto3.client("dynamodb"))
    for n, tenant in [*((n, "acme") for n in range(7)), (99, "globex")]:
        run = Run(run_id=f"run_{n:026x}", tenant=tenant, status=RunStatus.QUEUED, input="x", model="claude-haiku-4-5",
                  tools=[], budget=Budget(), created_at=T0, updated_at=T0)  # fmt: skip
        store.create_run(run)
    first = store.list_active(shard_of("acme"), tenant="acme", limit=3, after=None)
    rest = store.list_active(shard_of("acme"), tenant="acme", limit=10, after=first[-1].key)
    assert [e.run_id for e in first + rest] == [f"run_{n:026x}" for n in range(7)]


def test_the_api_lists_and_stops_the_callers_active_work_only(aws: Aws, context: LocalContext) -> None:
    # Given runs of two tenants, one of them holding a reservation
    runs = {tenant: [request(context, "POST", "/runs", tenant, {"input": f"task {n}"})[1]["run_id"]
                     for n in range(3)] for tenant in ("acme", "globex")}  # fmt: skip
    store = DynamoDBRunStore(TABLE, boto3.client("dynamodb"))
    held = Reservation(step=0, amount_usd=store.committed("acme", "x")[0] + 1, day="2026-12-01", model="m")
    first = store.get_run(RunKey("acme", runs["acme"][0]))
    assert first is not None
    ledger.reserve(store, first, held, ledger.BudgetLimits(), now=T0)
    # When acme lists its active work: its own, in pages
    status, page = request(context, "GET", "/active", "acme", query={"limit": "2"})
    assert status == 200 and len(page["data"]) == 2 and page["next_page"]
    _, rest = request(context, "GET", "/active", "acme", query={"page": page["next_page"]})
    assert sorted(e["id"] for e in page["data"] + rest["data"]) == sorted(runs["acme"])
    assert {e["status"] for e in page["data"] + rest["data"]} == {"QUEUED", "RUNNING"}
    # (another tenant's page token is refused, not read)
    status, refused = request(context, "GET", "/active", "globex", query={"page": page["next_page"]})
    assert status == 400 and "not a next_page" in refused["error"]["message"]
    # When acme throws its kill switch
    status, report = request(context, "POST", "/active/cancel", "acme")
    assert status == 200 and report["stopped"] == 3 and report["next_page"] is None
    assert {(r["type"], r["outcome"]) for r in report["data"]} == {("run", "stopped")}
    # Then its runs are cancelled, the held reservation's release is scheduled, and globex's runs run on
    for run_id in runs["acme"]:
        assert request(context, "GET", f"/runs/{run_id}", "acme")[1]["status"] == "CANCELLED"
    attributes = aws.sqs.get_queue_attributes(QueueUrl=aws.queue_url, AttributeNames=["All"])["Attributes"]
    assert int(attributes["ApproximateNumberOfMessagesDelayed"]) == 1
    assert sorted(e["id"] for e in request(context, "GET", "/active", "globex")[1]["data"]) == sorted(runs["globex"])
    # And again: nothing more to stop
    assert request(context, "POST", "/active/cancel", "acme")[1] == {"data": [], "stopped": 0, "next_page": None}


@pytest.mark.parametrize(
    ("method", "query", "body", "named"),
    [
        ("GET", {"limit": "0"}, None, "limit must be a whole number from 1 to 100"),
        ("GET", {"limit": "101"}, None, "limit must be"),
        ("GET", {"page": "bm9wZQ"}, None, "page: not a next_page"),
        ("POST", {"limit": "x"}, None, "limit must be"),
        ("POST", {}, {"tenant": "globex"}, "takes no body"),
        ("POST", {"page": "%%%"}, None, "page: not a next_page"),
    ],
)
def test_a_bad_request_is_a_400_and_stops_nothing(
    aws: Aws, context: LocalContext, method: str, query: dict[str, str], body: Any, named: str
) -> None:
    _, run = request(context, "POST", "/runs", "acme", {"input": "x"})
    path = "/active" if method == "GET" else "/active/cancel"
    status, answer = request(context, method, path, "acme", body, query)
    assert status == 400 and named in answer["error"]["message"]
    assert request(context, "GET", f"/runs/{run['run_id']}", "acme")[1]["status"] == "QUEUED"


def test_an_operator_lists_and_stops_with_aws_credentials(
    aws: Aws, context: LocalContext, capsys: pytest.CaptureFixture[str]
) -> None:
    for tenant in ("acme", "globex"):
        request(context, "POST", "/runs", tenant, {"input": "x"})
    capsys.readouterr()  # (the api function's metric lines)
    table = ["--table", TABLE]
    assert cli.main(["active", *table, "--json"]) == 0
    assert sorted(e["tenant"] for e in json.loads(capsys.readouterr().out)) == ["acme", "globex"]
    # stopping needs the state machine and the queue too (a failed stop is retried, a reservation released, there)
    assert cli.main(["kill", "--tenant", "acme", *table]) == 2
    assert "--state-machine and --queue" in capsys.readouterr().out
    stop = [*table, "--state-machine", aws.state_machine_arn, "--queue", aws.queue_url, "--json"]
    assert cli.main(["kill", "--tenant", "acme", *stop]) == 0
    (stopped,) = json.loads(capsys.readouterr().out)
    assert (stopped["tenant"], stopped["outcome"]) == ("acme", "stopped")
    assert cli.main(["kill", "--all", "--yes", *stop]) == 0
    assert [(s["tenant"], s["outcome"]) for s in json.loads(capsys.readouterr().out)] == [("globex", "stopped")]
    assert cli.main(["kill", stopped["id"], "--tenant", "acme", *stop]) == 0
    assert json.loads(capsys.readouterr().out)[0]["outcome"] == "already_ended"
    assert cli.main(["active", *table, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert aws.sqs.receive_message(QueueUrl=aws.webhooks_queue_url).get("Messages", []) == []  # none was named


def test_an_operators_kill_announces_what_it_stops_when_given_the_webhooks_queue(
    aws: Aws, context: LocalContext, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = request(context, "POST", "/runs", "acme", {"input": "x"})[1]["run_id"]
    capsys.readouterr()
    stop = ["--table", TABLE, "--state-machine", aws.state_machine_arn, "--queue", aws.queue_url]
    assert cli.main(["kill", "--tenant", "acme", *stop, "--webhooks-queue", aws.webhooks_queue_url, "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [run_id]
    # the end is announced on the webhooks queue as the API's kill switch announces it (the fan-out finds the
    # tenant's endpoints, or none)
    (message,) = aws.sqs.receive_message(QueueUrl=aws.webhooks_queue_url).get("Messages", [])
    announced = json.loads(message["Body"])
    assert announced["tenant"] == "acme" and announced["event"]["data"]["type"] == "run.failed"
    assert announced["event"]["data"]["id"] == run_id
    # and an end the webhooks queue refuses is still stopped, and said on stderr (the JSON on stdout stays JSON)
    other = request(context, "POST", "/runs", "acme", {"input": "y"})[1]["run_id"]
    capsys.readouterr()
    gone = aws.webhooks_queue_url + "-gone"
    assert cli.main(["kill", "--tenant", "acme", *stop, "--webhooks-queue", gone, "--json"]) == 0
    out, err = capsys.readouterr()
    assert [(r["id"], r["outcome"]) for r in json.loads(out)] == [(other, "stopped")]
    assert f"acme {other}: its webhook event was not announced" in err


@pytest.mark.parametrize(
    "argv",
    [["kill"], ["kill", "--tenant", "a", "--all"], ["kill", "run_x"], ["kill", "run_x", "--tenant", "a", "--all"]],
)
def test_the_kill_command_says_what_it_needs(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "error:" in capsys.readouterr().out
