"""The gauges function on moto: the index of active work as the DynamoDB stores write it (runs and sessions active,
ended, and an entry an earlier release left on an ended run), counted by the handler the schedule invokes, and the
``ActiveRuns`` EMF it prints."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parser import ValidationError

from functions.adapters.dynamodb_sessions import DynamoDBSessionStore
from functions.adapters.dynamodb_store import ACTIVE_PK, ACTIVE_SK, RUN_SK, DynamoDBRunStore, run_pk
from functions.agent import ledger
from functions.agent.active import ACTIVE_SHARDS, place
from functions.agent.census import count_active
from functions.agent.models import Budget, Run, RunStatus, Turn
from functions.handlers import gauges
from stepwise.local.lambdas import LocalContext
from tests.functional.conftest import TABLE, Aws
from tests.functional.test_kill_switch import session

EVENT = json.loads((Path(__file__).resolve().parents[2] / "events" / "gauges" / "scheduled.json").read_text())
T0 = "2026-12-01T00:00:00.000+00:00"


def run(run_id: str, tenant: str, status: RunStatus = RunStatus.QUEUED) -> Run:
    return Run(run_id=run_id, tenant=tenant, status=status, input="x", model="claude-haiku-4-5", tools=[],
               budget=Budget(), created_at=T0, updated_at=T0)  # fmt: skip


def seed() -> DynamoDBRunStore:
    """acme: 5 queued runs, 2 running, a session in a turn, one idle, a run that ended; globex: 2 running runs;
    legacy: an ended run an earlier release left listed."""
    client = boto3.client("dynamodb")
    store, sessions = DynamoDBRunStore(TABLE, client), DynamoDBSessionStore(TABLE, client)
    for n in range(5):
        store.create_run(run(f"run_q{n}", "acme"))
    for n, tenant in enumerate(("acme", "acme", "globex", "globex")):
        store.create_run(run(f"run_r{n}", tenant, RunStatus.RUNNING))
    sessions.create_session(session("sesn_busy", RunStatus.QUEUED, [Turn(first_step=0, started_at=T0)]), [])
    sessions.create_session(session("sesn_idle", RunStatus.SUCCEEDED, []), [])
    store.create_run(run("run_done", "acme"))
    assert ledger.end_run(store, run("run_done", "acme").key, RunStatus.SUCCEEDED, now=T0)  # unlisted
    left = run("run_left", "legacy", RunStatus.SUCCEEDED)
    store.create_run(left)
    listed = place(left)
    client.update_item(TableName=TABLE, Key={"pk": {"S": run_pk(left.key)}, "sk": {"S": RUN_SK}},
                       UpdateExpression="SET #p = :p, #s = :s", ExpressionAttributeNames={"#p": ACTIVE_PK,
                       "#s": ACTIVE_SK}, ExpressionAttributeValues={":p": {"S": listed.partition},
                       ":s": {"S": listed.key}})  # fmt: skip
    return store


def emf(printed: str) -> list[dict[str, Any]]:
    return [blob for blob in map(json.loads, (line for line in printed.splitlines() if line.startswith("{")))
            if "_aws" in blob]  # fmt: skip


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """The gauges function's log lines at INFO (a deployment's level; the tests' environment says WARNING)."""
    buffer, logger = io.StringIO(), gauges.logger
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logger.registered_formatter)
    level = logger.log_level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_the_schedule_counts_active_runs_and_sessions_and_prints_each_series(
    aws: Aws, context: LocalContext, capsys: pytest.CaptureFixture[str], logged: io.StringIO
) -> None:
    # Given the index with runs and sessions active and ended
    seed()
    capsys.readouterr()
    # When the schedule invokes the gauges function
    result = gauges.handler(EVENT, context)
    # Then it counted the active ones by kind and status, each tenant's among them, in one Query a shard
    assert (result["runs"], result["sessions"], result["ended_but_listed"]) == (9, 1, 1)
    assert result["by_status"] == {"run:QUEUED": 5, "run:RUNNING": 4, "session:QUEUED": 1, "session:RUNNING": 0}
    assert result["top_tenants"] == [{"tenant": "acme", "active": 8}, {"tenant": "globex", "active": 2}]
    assert result["reads"] == ACTIVE_SHARDS
    # And printed one ActiveRuns blob per kind and status, 0 included, under the gauges' service
    printed = capsys.readouterr().out
    series = {(blob["kind"], blob["status"]): blob["ActiveRuns"] for blob in emf(printed)}
    assert series == {("run", "QUEUED"): [5], ("run", "RUNNING"): [4], ("session", "QUEUED"): [1],
                      ("session", "RUNNING"): [0]}  # fmt: skip
    for blob in emf(printed):
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Stepwise" and directive["Dimensions"] == [["service", "kind", "status"]]
        assert blob["service"] == "stepwise-gauges" and directive["Metrics"] == [{"Name": "ActiveRuns",
                                                                                  "Unit": "Count"}]  # fmt: skip
    # And logged the counts with the tenants that have the most (not a metric dimension: tenants are unbounded)
    (line,) = [json.loads(text) for text in logged.getvalue().splitlines() if '"message":"active work"' in text]
    assert line["top_tenants"] == result["top_tenants"] and line["level"] == "INFO"


def test_the_index_is_counted_page_by_page_on_dynamodb(aws: Aws) -> None:
    store = seed()
    whole = count_active(store)
    # pages of 2: a shard of 3 entries is read again after its second entry's key (the index's start key)
    paged = count_active(store, page=2)
    assert (paged.counts, paged.tenants, paged.ended) == (whole.counts, whole.tenants, whole.ended)
    assert paged.reads > whole.reads == ACTIVE_SHARDS


def test_an_event_that_is_not_the_schedules_is_refused(aws: Aws, context: LocalContext) -> None:
    with pytest.raises(ValidationError):
        gauges.handler({"detail": {}}, context)
