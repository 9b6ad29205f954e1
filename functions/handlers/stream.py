"""The stream function: a session's (or a run's) events as server-sent events, in the shape the anthropic SDK's
``client.beta.sessions.events.stream`` reads.

API Gateway's HTTP API cannot stream, so this is not behind it: it is a small WSGI app behind a Lambda function
URL in response-streaming mode, run by the AWS Lambda Web Adapter (``stream.sh`` starts it; the adapter turns each
invocation into an HTTP request to it and streams its answer back). The local stack serves the same app as its
"function URL". Routes (GET):

* ``/v1/sessions/{id}/events/stream?ticket=...``: a session's events, for as long as the connection lasts (at most
  ``stream_max_seconds``, and ``stream_idle_seconds`` once the session is idle; the client reconnects), errors in
  the Anthropic shape;
* ``/runs/{id}/events/stream?ticket=...``: a run's events, until it has ended;
* ``/health``: the adapter's readiness check.

The URL is public: a stream opens only with a ticket the API issued to an authenticated caller for that session or
run (``GET .../events/stream`` on the API answers 307 to here with one), used once, within 30 s. ``Last-Event-ID``
resumes after an event; without it the stream starts at the moment it opens (functions/agent/streams.py)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from functions.adapters import wiring
from functions.adapters.settings import StreamSettings, load
from functions.agent.errors import MAX_MESSAGE, NotFoundError, RequestRejectedError, TicketError, clip
from functions.agent.models import RunKey
from functions.agent.sessions import run_events, session_events
from functions.agent.streams import Follower, Frame, StreamLimits, StreamTicket, check_cursor, session_idle
from functions.handlers.observability import observability

SETTINGS = StreamSettings
obs = observability("stream")
logger = obs.logger
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
STATUS = {200: "200 OK", 400: "400 Bad Request", 401: "401 Unauthorized", 404: "404 Not Found",
          405: "405 Method Not Allowed", 500: "500 Internal Server Error"}  # fmt: skip
V1_KINDS = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 405: "not_found_error",
            500: "api_error"}  # fmt: skip
CODES = {400: "VALIDATION_ERROR", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 405: "NOT_FOUND", 500: "INTERNAL"}
SSE_HEADERS = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),  # a proxy that honours it passes each frame on at once
]
OPENED = b": stream open\n\n"  # a comment (clients skip it): the headers leave at once, not with the first frame
CLOSING = "stepwise.closing"  # environ: the server's Event, set when it closes (the local stack stopping)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _Closed(Exception):
    """The server is closing: streams end (their clients reconnect)."""


def _route(path: str) -> tuple[str, str] | None:
    """("session" | "run", its id) for a stream path; None for any other path."""
    parts = path.strip("/").split("/")
    if len(parts) == 5 and parts[:2] == ["v1", "sessions"] and parts[3:] == ["events", "stream"]:
        return "session", parts[2]
    if len(parts) == 4 and parts[0] == "runs" and parts[2:] == ["events", "stream"]:
        return "run", parts[1]
    return None


def _request_id(environ: dict[str, Any]) -> str:
    """The function URL's request id (the adapter passes the request context on), else a new one (locally)."""
    try:
        context = json.loads(environ.get("HTTP_X_AMZN_REQUEST_CONTEXT") or "{}")
    except ValueError:
        context = {}
    found = context.get("requestId") if isinstance(context, dict) else None
    return str(found) if found else str(uuid.uuid4())


def _error(status: int, message: str, *, v1: bool, request_id: str) -> dict[str, Any]:
    """An error in the shape of the route's API (``/v1``: the Anthropic shape)."""
    text = clip(message, MAX_MESSAGE)
    if v1:
        return {"type": "error", "error": {"type": V1_KINDS[status], "message": text}, "request_id": request_id}
    return {"error": {"code": CODES[status], "message": text}, "request_id": request_id}


def encode(frame: Frame) -> bytes:
    """One SSE frame: ``event:`` the event's type (the SDK skips ``ping``), ``id:`` its id (a client resumes with
    it as Last-Event-ID), ``data:`` the event as JSON on one line."""
    if frame.event is None:
        return b'event: ping\ndata: {"type": "ping"}\n\n'
    event = frame.event
    return f"event: {event['type']}\nid: {event['id']}\ndata: {json.dumps(event)}\n\n".encode()


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI app: a stream, or a JSON refusal (400, 401, 404, 405)."""
    path = str(environ.get("PATH_INFO") or "/")
    request_id = _request_id(environ)
    if path == "/health":
        return _json(start_response, 200, {"status": "ok"}, request_id)
    route = _route(path)
    v1 = path.startswith("/v1/")
    try:
        if route is None:
            raise _Refused(404, f"no route {clip(path)}")
        if environ.get("REQUEST_METHOD") != "GET":
            raise _Refused(405, f"{clip(environ.get('REQUEST_METHOD'))} {clip(path)}: only GET streams")
        follower, ticket = _open(route, environ)
    except _Refused as exc:
        return _json(start_response, exc.status, _error(exc.status, exc.message, v1=v1, request_id=request_id),
                     request_id)  # fmt: skip
    except Exception:  # a bug or an outage (the table): logged under the request id, which the client gets
        logger.exception("stream not opened", request_id=request_id)
        message = "internal error: quote the request id when you report it"
        return _json(start_response, 500, _error(500, message, v1=v1, request_id=request_id), request_id)
    start_response(STATUS[200], [*SSE_HEADERS, ("request-id", request_id)])
    return _stream(follower, ticket, route[0], v1=v1, request_id=request_id)


def _open(route: tuple[str, str], environ: dict[str, Any]) -> tuple[Follower, StreamTicket]:
    """The ticket taken, the stream's start fixed (raises _Refused)."""
    kind, target = route
    params = parse_qsl(str(environ.get("QUERY_STRING") or ""), keep_blank_values=True)
    unknown = sorted({name for name, _ in params} - {"ticket"})
    if unknown:
        raise _Refused(400, f"query parameter {clip(unknown[0])!r} is not supported here")
    settings = load(SETTINGS)
    try:
        after = check_cursor(environ.get("HTTP_LAST_EVENT_ID"))
        ticket = wiring.tickets(settings).redeem(dict(params).get("ticket"))
    except RequestRejectedError as exc:
        raise _Refused(400, str(exc)) from exc
    except TicketError as exc:
        raise _Refused(401, str(exc)) from exc
    if ticket.target != target:
        raise _Refused(401, f"the stream ticket is for another {kind}: request the stream from the API")
    store = wiring.store(settings)
    read = session_events if kind == "session" else run_events
    limits = StreamLimits(settings.stream_poll_seconds, settings.stream_ping_seconds, settings.stream_max_seconds,
                          settings.stream_idle_seconds)  # fmt: skip
    key = RunKey(ticket.tenant, target)
    closing: threading.Event = environ.get(CLOSING) or threading.Event()

    def sleep(seconds: float) -> None:
        if closing.wait(seconds):
            raise _Closed

    try:
        follower = Follower(
            lambda: read(store, key), after=after, limits=limits, monotonic=time.monotonic, sleep=sleep,
            last=(lambda event: event["type"] == "session.status_idle") if kind == "run" else (lambda event: False),
            rests=session_idle if kind == "session" else (lambda events: False),
        )  # fmt: skip
    except NotFoundError as exc:  # deleted since the ticket was issued
        raise _Refused(404, str(exc)) from exc
    return follower, ticket


def _stream(follower: Follower, ticket: StreamTicket, kind: str, *, v1: bool, request_id: str) -> Iterator[bytes]:
    started = time.monotonic()
    obs.emit("StreamsOpened", kind=kind)
    logger.info("stream opened", tenant=ticket.tenant, target=ticket.target, after=follower.cursor,
                request_id=request_id)  # fmt: skip
    ended = "closed"
    try:
        yield OPENED
        for frame in follower.frames():
            yield encode(frame)
        ended = {"limit": "time limit", "last": "run ended", "idle": "session idle"}.get(follower.end or "", "done")
    except _Closed:
        ended = "server closing"
    except NotFoundError as exc:  # deleted while followed
        ended = "gone"
        yield _error_frame(404, str(exc), v1=v1, request_id=request_id)
    except Exception:  # an outage reading the table: the client reconnects with Last-Event-ID
        ended = "failed"
        logger.exception("stream failed", tenant=ticket.tenant, target=ticket.target, request_id=request_id)
        yield _error_frame(500, "reading the events failed: reconnect with Last-Event-ID", v1=v1,
                           request_id=request_id)  # fmt: skip
    finally:  # also when the client went away (the server closes this generator)
        seconds = time.monotonic() - started
        obs.emit("StreamDuration", seconds, kind=kind)
        logger.info("stream ended", tenant=ticket.tenant, target=ticket.target, events=follower.sent, ended=ended,
                    seconds=round(seconds, 3), last=follower.cursor, request_id=request_id)  # fmt: skip


def _error_frame(status: int, message: str, *, v1: bool, request_id: str) -> bytes:
    """An ``event: error`` frame (the SDK raises it as an API error)."""
    return f"event: error\ndata: {json.dumps(_error(status, message, v1=v1, request_id=request_id))}\n\n".encode()


def _json(start_response: StartResponse, status: int, body: dict[str, Any], request_id: str) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(STATUS[status], [("content-type", "application/json"), ("content-length", str(len(data))),
                                    ("request-id", request_id)])  # fmt: skip
    return [data]


# ------------------------------------------------------------------------------------------- the server


class _Server(ThreadingHTTPServer, WSGIServer):
    """wsgiref's WSGI server, one thread per connection (a stream holds its connection). ``close`` ends the streams
    still open (at their next poll) and waits for them."""

    # http.server's default backlog is 5: connections beyond it are reset (the local stack serves all its streams
    # from this one server; on Lambda the Web Adapter sends one request at a time)
    request_queue_size = 1024
    daemon_threads = False  # server_close joins them (block_on_close)

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler]) -> None:
        super().__init__(address, handler)
        self.closing = threading.Event()

    def close(self) -> None:
        self.closing.set()
        self.shutdown()
        self.server_close()


class _Handler(WSGIRequestHandler):
    timeout = 60  # a client that stops reading: the blocked write fails, and the stream ends

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ[CLOSING] = getattr(self.server, "closing", None)
        return environ

    def log_message(self, format: str, *args: Any) -> None:
        """The app logs each stream (JSON, through powertools); never the query string, which holds the ticket."""


def server(host: str, port: int) -> _Server:
    """The app on ``host:port`` (port 0: any free one), not yet serving (``serve_forever``)."""
    httpd = _Server((host, port), _Handler)
    httpd.set_app(app)
    return httpd


def main() -> None:
    """On Lambda: the Web Adapter's app, on 127.0.0.1 and the port it forwards to (AWS_LWA_PORT)."""
    load(SETTINGS)  # a misconfigured function fails at start, naming the setting
    server("127.0.0.1", int(os.environ.get("AWS_LWA_PORT", "8080"))).serve_forever()


if __name__ == "__main__":
    main()
