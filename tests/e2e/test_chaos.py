"""Fault injection end to end: 30 % of model calls fail retryably (429 with retry-after, 529, 500, timeouts,
malformed and empty bodies), step Lambdas crash after the model answered, the function running a tool call (the
step, for a fast one) dies after the tool ran, DynamoDB transactions lose write races, intake messages arrive twice,
a quarter of the runs are cancelled while they work. Every run must end, none may be lost, no step may be charged
twice, no reservation left held, and every tool call of a kept step has its result (a cancelled run's calls get
theirs from the cancel)."""

from __future__ import annotations

import pytest

from tests.fakes.chaos import Faults, run_chaos

pytestmark = pytest.mark.e2e


def test_under_faults_every_run_ends_none_is_lost_and_nothing_is_charged_twice() -> None:
    faults = Faults(retryable=0.3, huge=0.05, duplicate_intake=0.5, crash_after_call=0.15, store_conflicts=0.1, seed=11,
                    cancels=0.25)  # fmt: skip
    report = run_chaos(24, faults, deadline_seconds=240)
    print("\n" + "\n".join(report.lines()))
    assert report.lost == 0
    assert sum(report.statuses.values()) == report.submitted == 24
    assert report.double_charged_steps == 0, report.accounting_mismatches
    assert report.unanswered_calls == []
    assert report.cancels["200"] > 0  # some runs were cancelled while they worked
    assert sum(report.injected.values()) > 0 and report.model_calls > report.minimum_calls  # faults did happen
    assert report.statuses["SUCCEEDED"] + sum(report.failure_reasons.values()) == 24  # every failure has a reason
