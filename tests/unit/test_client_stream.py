"""The CLI's stream reading (stepwise/client.py): server-sent events parsed, a stream followed across connections
with Last-Event-ID, and the point where it gives up for polling."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stepwise.client import ApiError, StepwiseClient, StreamUnavailable, follow_events, read_sse


def test_frames_are_read_as_event_and_data_comments_and_nameless_frames_skipped() -> None:
    wire = (b": stream open\n\n", b"event: ping\n", b'data: {"type": "ping"}\n', b"\n",
            b"event: agent.message\r\n", b"id: sevt_0001300000001\r\n", b'data: {"a":\r\n', b"data: 1}\r\n", b"\r\n",
            b"data: orphan\n", b"\n", b"retry: 10\n", b"\n")  # fmt: skip
    assert list(read_sse(wire)) == [("ping", '{"type": "ping"}'), ("agent.message", '{"a":\n1}')]


class Connections:
    """A client whose streams are scripted: each connection gives its events, then ends or drops."""

    def __init__(self, *connections: list[dict[str, Any] | Exception]) -> None:
        self.connections = list(connections)
        self.afters: list[str | None] = []

    def stream(self, path: str, *, after: str | None = None) -> Iterator[dict[str, Any]]:
        self.afters.append(after)
        for item in self.connections.pop(0):
            if isinstance(item, Exception):
                raise item
            yield item


def event(n: int) -> dict[str, Any]:
    return {"id": f"sevt_000130000{n:04d}", "type": "agent.message"}


def test_a_dropped_stream_resumes_after_the_last_event_and_an_ended_one_reconnects_at_once() -> None:
    # Given a stream that drops after two events, then one that ends at its time limit, then one more
    client = Connections(
        [event(1), event(2), ConnectionResetError("dropped")],
        [{"type": "ping"}, event(3)],
        [event(4)],
    )
    sleeps: list[float] = []
    stream = follow_events(client, "/v1/sessions/s/events/stream", after=None, sleep=sleeps.append)  # type: ignore[arg-type]
    got = [next(stream) for _ in range(5)]
    # Then every event came once, in order, each connection resuming after the last id seen
    assert [e.get("id") for e in got] == [event(1)["id"], event(2)["id"], None, event(3)["id"], event(4)["id"]]
    assert client.afters == [None, event(2)["id"], event(3)["id"]]
    assert sleeps == [2.0]  # a pause after the drop only


def test_connections_that_keep_failing_give_up_for_polling() -> None:
    client = Connections(*([ConnectionRefusedError("refused")] for _ in range(5)))
    sleeps: list[float] = []
    with pytest.raises(StreamUnavailable, match="failed 5 times in a row"):
        list(follow_events(client, "/p", after="sevt_0000000000000", sleep=sleeps.append))  # type: ignore[arg-type]
    assert sleeps == [2.0, 4.0, 8.0, 10.0]


def test_streams_that_end_at_once_with_nothing_back_off_too() -> None:
    client = Connections(*([] for _ in range(3)))
    with pytest.raises(StreamUnavailable, match="ended at once"):
        list(follow_events(client, "/p", after=None, attempts=3, sleep=lambda s: None))  # type: ignore[arg-type]


def test_a_redirect_anywhere_but_https_or_this_machine_is_not_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    client = StepwiseClient("http://127.0.0.1:9", api_key="swk_x")
    targets = {"http://evil.example/s?ticket=t": False, "http://127.0.0.1:5/s?ticket=t": True,
               "https://x.lambda-url.us-east-1.on.aws/s?ticket=t": True, "ftp://x/s": False}  # fmt: skip
    for target, followed in targets.items():
        monkeypatch.setattr("stepwise.client._NO_REDIRECTS.open", _redirect(target))
        if followed:
            assert client._stream_location("/s", {}) == target
        else:
            with pytest.raises(StreamUnavailable, match="not https"):
                client._stream_location("/s", {})


@pytest.mark.parametrize(("status", "code", "raised"), [
    (429, "RATE_LIMITED", ConnectionError), (503, "INTERNAL", ConnectionError), (502, "HTTP_ERROR", ConnectionError),
    (404, "RUN_NOT_FOUND", ApiError), (401, "UNAUTHENTICATED", ApiError), (400, "VALIDATION_ERROR", StreamUnavailable),
])  # fmt: skip
def test_the_apis_throttle_or_outage_is_retried_and_its_refusals_are_not(
    monkeypatch: pytest.MonkeyPatch, status: int, code: str, raised: type[Exception]
) -> None:
    # Given an API that answers a stream's request with an error instead of its redirect
    monkeypatch.setattr("stepwise.client._NO_REDIRECTS.open", _refusal(status, code))
    client = StepwiseClient("http://127.0.0.1:9", api_key="swk_x")
    # Then a throttle or an outage is a dropped connection (follow_events tries again), a refusal is the caller's
    with pytest.raises(raised):
        client._stream_location("/runs/run_1/events/stream", {})
    if raised is ConnectionError:
        sleeps: list[float] = []
        with pytest.raises(StreamUnavailable, match=f"failed 2 times in a row.*{status}"):
            list(follow_events(client, "/runs/run_1/events/stream", after=None, attempts=2, sleep=sleeps.append))
        assert sleeps == [2.0]


def _refusal(status: int, code: str) -> Any:
    import email.message
    import io
    import json
    import urllib.error

    def opener(request: Any, timeout: float) -> Any:
        body = io.BytesIO(json.dumps({"error": {"code": code, "message": "no"}}).encode())
        raise urllib.error.HTTPError(request.full_url, status, "Refused", email.message.Message(), body)

    return opener


def _redirect(location: str) -> Any:
    import email.message
    import urllib.error

    def opener(request: Any, timeout: float) -> Any:
        headers = email.message.Message()
        headers["location"] = location
        raise urllib.error.HTTPError(request.full_url, 307, "Temporary Redirect", headers, None)

    return opener
