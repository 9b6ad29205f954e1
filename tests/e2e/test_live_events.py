"""Live events on the local stack, followed by the official ``anthropic`` SDK's ``client.beta.sessions.events.stream``:
the API (with tenants' keys, as deployed) answers 307 to the stream function's URL with a ticket, the SDK follows
it without the key, and reads server-sent events up to ``session.status_idle``. A client that drops and reconnects
sees every event once."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest

from functions.adapters import wiring
from functions.agent.streams import BEFORE_ALL
from functions.handlers import stream as stream_app
from stepwise import agents_cli, cli
from stepwise.local.stack import LocalStack
from tests.e2e.test_managed_agents import ASK_CALCULATOR, answer, tool_use
from tests.fakes.anthropic_server import FakeAnthropic

pytestmark = pytest.mark.e2e
ASK = {"type": "user.message", "content": [{"type": "text", "text": "What is 6*7? Then 2**10."}]}
JSON = {"content-type": "application/json", "host": "127.0.0.1"}


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Iterator[LocalStack]:
    with LocalStack(port=0, template=template, require_keys=True) as local:
        yield local


@pytest.fixture(scope="module")
def keys(stack: LocalStack) -> dict[str, str]:
    """A key of tenant acme and one of tenant globex, made as an operator makes them."""
    made = {}
    for tenant in ("acme", "globex"):
        status, _, body = stack.handle_http("POST", "/_local/keys", JSON, json.dumps({"tenant": tenant}))
        assert status == 201
        made[tenant] = json.loads(body)["key"]
    return made


@pytest.fixture
def client(stack: LocalStack, keys: dict[str, str]) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=keys["acme"], base_url=stack.url, max_retries=0)


@pytest.fixture
def seen_by_stream_function(stack: LocalStack) -> Iterator[list[dict[str, Any]]]:
    """Each request the stream function got: its path and whether it carried credentials."""
    requests: list[dict[str, Any]] = []

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        requests.append({"path": environ["PATH_INFO"], "authorization": environ.get("HTTP_AUTHORIZATION"),
                         "api_key": environ.get("HTTP_X_API_KEY")})  # fmt: skip
        return stream_app.app(environ, start_response)

    stack._streams.set_app(recording)
    yield requests
    stack._streams.set_app(stream_app.app)


def slow(reply: tuple[int, dict[str, Any]], seconds: float = 0.4) -> Callable[[dict[str, Any]], Any]:
    """A scripted reply that takes a while (a turn long enough to drop a stream in the middle of)."""

    def answer_slowly(_: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        time.sleep(seconds)
        return reply

    return answer_slowly


def calculator_agent(client: anthropic.Anthropic) -> str:
    tools: Any = [{"type": "stepwise_toolset_20261201", "default_config": {"enabled": False},
                   "configs": [{"name": "calculator", "enabled": True}]}]  # fmt: skip
    return client.beta.agents.create(name="maths", model="claude-haiku-4-5", tools=tools).id


def all_events(client: anthropic.Anthropic, session_id: str) -> list[Any]:
    return list(client.beta.sessions.events.list(session_id, limit=1000).data)


def test_the_sdk_follows_a_session_through_the_stream_to_its_idle(
    stack: LocalStack, fake_api: FakeAnthropic, client: anthropic.Anthropic,
    seen_by_stream_function: list[dict[str, Any]],
) -> None:  # fmt: skip
    fake_api.script = [tool_use(("toolu_1", "calculator", {"expression": "6*7"})), answer("6*7 is 42.")]
    session = client.beta.sessions.create(agent=calculator_agent(client), environment_id="e")
    # Given the stream opened first (the SDK's pattern: nothing that happens after it opens is missed)
    with client.beta.sessions.events.stream(session.id) as events:
        # When a message starts a turn
        client.beta.sessions.events.send(session.id, events=[ASK])  # type: ignore[list-item]
        followed = []
        for event in events:
            followed.append(event)
            if event.type == "session.status_idle":
                break
    # Then the stream gave every event of the turn, in order, as the list has them, up to the idle
    listed = all_events(client, session.id)
    assert [(e.id, e.type) for e in followed] == [(e.id, e.type) for e in listed]
    assert [e.type for e in followed] == [
        "user.message", "session.status_running", "span.model_request_start", "agent.tool_use",
        "span.model_request_end", "agent.tool_result", "span.model_request_start", "agent.message",
        "span.model_request_end", "session.status_idle",
    ]  # fmt: skip
    assert followed[-1].stop_reason.type == "end_turn"  # type: ignore[union-attr]
    assert followed[5].content[0].text == "42"  # type: ignore[union-attr]
    # And the key went to the API only: the stream function got the ticket, never the key
    (request,) = seen_by_stream_function
    assert request["path"] == f"/v1/sessions/{session.id}/events/stream"
    assert request["authorization"] is None and request["api_key"] is None


def test_a_client_that_drops_and_reconnects_with_list_and_dedupe_sees_every_event_once(
    stack: LocalStack, fake_api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake_api.script = [slow(tool_use(("toolu_1", "calculator", {"expression": "6*7"})), 0.6),
                       slow(tool_use(("toolu_2", "calculator", {"expression": "2**10"})), 0.6),
                       slow(answer("42, then 1024."), 3.0)]  # fmt: skip
    session = client.beta.sessions.create(agent=calculator_agent(client), environment_id="e")
    handled: list[str] = []  # what the client acted on, in order: each id must appear once
    came_from: dict[str, int] = {"first": 0, "list": 0, "second": 0}
    sent: dict[str, list[str]] = {"first": [], "list": [], "second": []}  # every id each source gave, repeats too

    def handle(event: Any, source: str) -> bool:
        sent[source].append(event.id)
        if event.id not in handled:
            handled.append(event.id)
            came_from[source] += 1
        return bool(event.type == "session.status_idle")

    # Given a client that reads the start of the turn, then loses its connection
    with client.beta.sessions.events.stream(session.id) as first:
        client.beta.sessions.events.send(session.id, events=[ASK])  # type: ignore[list-item]
        for event in first:
            handle(event, "first")
            if event.type == "span.model_request_start":  # its step's other events are out already
                break
    time.sleep(0.5)  # the turn goes on while it is away (its next model calls take 0.6 s, then 3 s)
    # When it reconnects as the SDK does: open the stream, then list what it missed, dropping what it has
    done = False
    with client.beta.sessions.events.stream(session.id) as second:
        for event in all_events(client, session.id):
            done = handle(event, "list") or done
        events = iter(second)
        while not done:
            done = handle(next(events), "second")
    # Then it has handled every event of the turn exactly once, in the order they happened
    listed = [e.id for e in all_events(client, session.id)]
    assert handled == listed
    assert len(listed) == 14  # message, running, two tool steps (start, use, end, result), the answer's 3, idle
    # from all three: the first connection, the list of what it missed, and the second connection
    assert came_from["first"] >= 3 and came_from["list"] >= 2 and came_from["second"] >= 1, came_from
    # And each connection sent each event once, in order, the second starting when it opened (not a replay that
    # the client's own dedupe hid): nothing the first connection had
    for source in ("first", "second"):
        assert sent[source] == sorted(set(sent[source])), (source, sent[source])
    assert min(sent["second"]) > max(sent["first"])


def test_a_client_that_resumes_with_last_event_id_gets_exactly_what_it_missed(
    stack: LocalStack, fake_api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake_api.script = [slow(tool_use(("toolu_1", "calculator", {"expression": "6*7"}))), slow(answer("42."))]
    session = client.beta.sessions.create(agent=calculator_agent(client), environment_id="e")
    received: list[Any] = []
    with client.beta.sessions.events.stream(session.id) as first:
        client.beta.sessions.events.send(session.id, events=[ASK])  # type: ignore[list-item]
        for event in first:
            received.append(event)
            if event.type == "session.status_running":
                break
    time.sleep(0.6)
    # When it reconnects with the last id it has as Last-Event-ID (what an SSE client sends), no list needed
    resumed = client.beta.sessions.events.stream(session.id, extra_headers={"Last-Event-ID": received[-1].id})
    with resumed as second:
        for event in second:
            received.append(event)
            if event.type == "session.status_idle":
                break
    # Then the two connections together gave each event once, in order
    assert [e.id for e in received] == [e.id for e in all_events(client, session.id)]
    # And sevt_0000000000000 replays the whole session from its start
    with client.beta.sessions.events.stream(session.id, extra_headers={"Last-Event-ID": BEFORE_ALL}) as replay:
        assert [next(iter(replay)).id for _ in range(3)] == [e.id for e in received[:3]]


def test_pings_keep_a_quiet_stream_open_and_the_sdk_skips_them(
    stack: LocalStack, client: anthropic.Anthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given streams that ping after 0.2 s of silence and last 1.2 s, on a session where nothing happens
    monkeypatch.setenv("STEPWISE_STREAM_PING_SECONDS", "0.2")
    monkeypatch.setenv("STEPWISE_STREAM_MAX_SECONDS", "1.2")
    wiring.reset()
    session = client.beta.sessions.create(agent=calculator_agent(client), environment_id="e")
    # Then the wire carries pings (read raw, following the redirect as any HTTP client does)
    request = urllib.request.Request(f"{stack.url}/v1/sessions/{session.id}/events/stream",
                                     headers={"authorization": f"Bearer {client.api_key}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        wire = raw.read().decode()
    assert wire.count("event: ping\n") >= 3 and "id:" not in wire
    # And the SDK reads through them: no event, no error, the stream simply ends when the server ends it
    started = time.monotonic()
    with client.beta.sessions.events.stream(session.id) as events:
        assert list(events) == []
    assert 1.0 < time.monotonic() - started < 5


def test_a_sessions_stream_ends_on_its_own_once_the_session_has_idled_a_while(
    stack: LocalStack, fake_api: FakeAnthropic, client: anthropic.Anthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given streams that end after 0.5 s of an idle session (Lambda would not tell the stream function that a
    # client left: a stream nobody reads must not run to its 14 minutes)
    monkeypatch.setenv("STEPWISE_STREAM_IDLE_SECONDS", "0.5")
    monkeypatch.setenv("STEPWISE_STREAM_MAX_SECONDS", "15")  # (without the idle end, it would end here)
    wiring.reset()
    fake_api.script = [answer("Hello.")]
    session = client.beta.sessions.create(agent=calculator_agent(client), environment_id="e")
    # When a client follows a turn and keeps reading past its idle
    started = time.monotonic()
    with client.beta.sessions.events.stream(session.id) as events:
        client.beta.sessions.events.send(session.id, events=[ASK])  # type: ignore[list-item]
        followed = [event.type for event in events]
    # Then the stream gave the whole turn, then ended by itself, well before its time limit
    assert followed == [e.type for e in all_events(client, session.id)] and followed[-1] == "session.status_idle"
    assert time.monotonic() - started < 10


def test_another_tenants_session_and_an_unknown_one_are_not_found(
    stack: LocalStack, client: anthropic.Anthropic, keys: dict[str, str]
) -> None:
    session = client.beta.sessions.create(agent=calculator_agent(client), environment_id="e")
    globex = anthropic.Anthropic(api_key=keys["globex"], base_url=stack.url, max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        globex.beta.sessions.events.stream(session.id)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.events.stream("sesn_00000000000000000000000000")
    nobody = anthropic.Anthropic(api_key="swk_000000000000_" + "x" * 43, base_url=stack.url, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):  # the authorizer's 403, before any function
        nobody.beta.sessions.events.stream(session.id)


def test_what_streams_do_not_offer_is_refused_by_name(client: anthropic.Anthropic) -> None:
    session = client.beta.sessions.create(agent=calculator_agent(client), environment_id="e")
    with pytest.raises(anthropic.BadRequestError, match="event_deltas"):
        client.beta.sessions.events.stream(session.id, event_deltas=["agent.message"])
    with pytest.raises(anthropic.BadRequestError, match="Last-Event-ID"):
        client.beta.sessions.events.stream(session.id, extra_headers={"Last-Event-ID": "yesterday"})


def test_many_followers_of_one_session_each_see_the_whole_turn(
    stack: LocalStack, fake_api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake_api.script = [slow(answer("Hello."), 0.3)]
    session = client.beta.sessions.create(agent=calculator_agent(client), environment_id="e")
    streams = [client.beta.sessions.events.stream(session.id) for _ in range(3)]
    results: list[list[str]] = [[] for _ in streams]

    def follow(index: int) -> None:
        with streams[index] as events:
            for event in events:
                results[index].append(event.type)
                if event.type == "session.status_idle":
                    return

    threads = [threading.Thread(target=follow, args=(i,)) for i in range(len(streams))]
    for thread in threads:
        thread.start()
    client.beta.sessions.events.send(session.id, events=[ASK])  # type: ignore[list-item]
    for thread in threads:
        thread.join(timeout=30)
    expected = [e.type for e in all_events(client, session.id)]
    assert results == [expected] * 3 and expected[-1] == "session.status_idle"


# ------------------------------------------------------------------------------------------- the CLI follows streams


@pytest.fixture
def cli_key(monkeypatch: pytest.MonkeyPatch, keys: dict[str, str]) -> str:
    monkeypatch.setenv("STEPWISE_API_KEY", keys["acme"])
    return keys["acme"]


def api_calls(stack: LocalStack) -> int:
    return stack.lambdas.invocations[stack.topology.api_function]


def test_stepwise_run_follows_the_run_through_its_stream(
    stack: LocalStack, fake_api: FakeAnthropic, cli_key: str, seen_by_stream_function: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    fake_api.script = [slow(tool_use(("toolu_1", "calculator", {"expression": "12*12"})), 0.5), answer("144.")]
    before = api_calls(stack)
    assert cli.main(["--endpoint", stack.url, "run", "What is 12 * 12?"]) == 0
    out = capsys.readouterr().out
    # Then each step was shown as it landed, from the run's stream, and the run's summary at its end
    assert "step 0: tools  calculator" in out and "step 1: finish final answer" in out
    assert "status SUCCEEDED" in out and "144" in out and "polling" not in out
    (request,) = seen_by_stream_function
    assert request["path"].startswith("/runs/run_") and request["path"].endswith("/events/stream")
    # without polling the API: the submit, the stream's redirect, then the run and its steps once for the summary
    assert api_calls(stack) - before == 4


def test_stepwise_run_polls_where_the_deployment_does_not_stream(
    stack: LocalStack, fake_api: FakeAnthropic, cli_key: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    fake_api.script = [answer("144.")]
    monkeypatch.delenv("STEPWISE_STREAM_URL")  # as a deployment without a stream function: the API answers 400
    wiring.reset()
    assert cli.main(["--endpoint", stack.url, "run", "What is 12 * 12?"]) == 0
    out = capsys.readouterr().out
    assert "the event stream is unavailable" in out and "polling instead" in out
    assert "status SUCCEEDED" in out and "step 0: finish final answer" in out


def test_stepwise_chat_follows_the_session_through_its_stream_across_turns(
    stack: LocalStack, fake_api: FakeAnthropic, cli_key: str, client: anthropic.Anthropic,
    seen_by_stream_function: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    fake_api.script = [tool_use(("toolu_1", "calculator", {"expression": "6*7"})), answer("42."), answer("Bye.")]
    agent = client.beta.agents.create(name="asks", model="claude-haiku-4-5", tools=[ASK_CALCULATOR])  # type: ignore[list-item]
    monkeypatch.setattr(cli.console, "input", lambda prompt: "allow")
    assert cli.main(["--endpoint", stack.url, "chat", agent.id, "-m", "6*7?", "-m", "thanks"]) == 0
    out = capsys.readouterr().out
    # Then the approval was asked, each turn shown to its idle once, and every follow went through the stream
    assert out.count("idle: requires_action") == 1 and out.count("idle: end_turn") == 2
    assert out.count("agent  42.") == 1 and "agent  Bye." in out and "long-polling" not in out
    assert len(seen_by_stream_function) == 3  # one connection per wait: the turn, the approved turn, the last
    assert all(r["path"].endswith("/events/stream") and r["authorization"] is None for r in seen_by_stream_function)


def test_ctrl_c_in_stepwise_chat_interrupts_the_running_turn(
    stack: LocalStack, fake_api: FakeAnthropic, cli_key: str, client: anthropic.Anthropic,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    fake_api.script = [tool_use(("toolu_1", "calculator", {"expression": "6*7"})),
                       slow(tool_use(("toolu_2", "calculator", {"expression": "7*6"})), 1.5),
                       answer("never asked for")]  # fmt: skip
    agent_id = calculator_agent(client)
    shown = agents_cli.show_event
    pressed: list[str] = []

    def ctrl_c_after_the_first_step(console: Any, event: dict[str, Any]) -> None:
        shown(console, event)
        if event["type"] == "span.model_request_end" and not pressed:
            pressed.append(event["id"])
            raise KeyboardInterrupt

    monkeypatch.setattr(agents_cli, "show_event", ctrl_c_after_the_first_step)
    assert cli.main(["--endpoint", stack.url, "chat", agent_id, "-m", "6*7, then 7*6?"]) == 0
    out = capsys.readouterr().out
    # Then the turn was interrupted: the call in flight settled, the next one never made, the session idle
    assert "interrupting the turn" in out and "idle: end_turn" in out
    (session,) = [s for s in client.beta.sessions.list(limit=100).data if s.agent.id == agent_id]
    types = [e.type for e in all_events(client, session.id)]
    assert "user.interrupt" in types and types[-1] == "session.status_idle"
    # The interrupt lands while the second call is in flight or, on a busy machine, before the second step starts:
    # either way the third call is never made
    assert 1 <= len(fake_api.requests) <= 2 and "never asked for" not in out
