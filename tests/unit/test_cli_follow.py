"""`stepwise run` following a run (stepwise/cli.py): from its event stream, and by polling when the stream gives
out part way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stepwise import cli
from stepwise.client import StreamUnavailable

RUN = "run_" + "0" * 26
USAGE = {"input_tokens": 10, "output_tokens": 2}


def step(n: int) -> dict[str, Any]:
    return {"step": n, "decision": "finish", "tool_calls": [], "usage": USAGE, "cost_usd": 0.001, "provider": "p"}


class HalfStream:
    """A deployment whose stream sends the first step's events, then gives out (so the CLI polls); polled, the run
    is running with that step, then has ended with a second."""

    def __init__(self) -> None:
        self.polls = 0

    def stream(self, path: str, *, after: str | None = None) -> Iterator[dict[str, Any]]:
        yield {"id": "sevt_0001100000000", "type": "session.status_running"}
        yield {"id": "sevt_0001300000000", "type": "span.model_request_start"}
        yield {"id": "sevt_0001300000500", "type": "span.model_request_end", "cost_usd": "0.001", "model_usage": USAGE,
               "provider": "p"}  # fmt: skip
        raise StreamUnavailable("the stream failed 5 times in a row")

    def get_run(self, run_id: str) -> dict[str, Any]:
        self.polls += 1
        status, steps = ("RUNNING", 1) if self.polls == 1 else ("SUCCEEDED", 2)
        return {"run_id": run_id, "status": status, "steps": steps, "usage": USAGE, "cost_usd": 0.002}

    def get_steps(self, run_id: str) -> dict[str, Any]:
        return {"steps": [step(0), step(1)]}


def test_a_stream_that_gives_out_part_way_is_polled_from_the_step_it_had_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli.time, "sleep", lambda seconds: None)  # the poll's pause
    run = cli.follow_stream(HalfStream(), RUN)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    # Then each step is shown once: the first from the stream, the second by polling
    assert run["status"] == "SUCCEEDED" and "polling instead" in out
    assert out.count("step 0:") == 1 and out.count("step 1:") == 1
