"""HTTP client of the Stepwise API: the local stack or a deployed endpoint, with a tenant's API key."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "http://127.0.0.1:8787"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "BUDGET_EXCEEDED", "TIMED_OUT"}
STREAM_READ_TIMEOUT = 60.0  # a stream pings every 15 s: this long without a byte, the connection is gone
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})  # the local stack: its stream function is plain http


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class StreamUnavailable(Exception):
    """The deployment cannot stream this (an older one without the route, a stream function refusing or out of
    reach after retries): follow by polling instead."""


class _Refuse(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is answered as the error it is; the API key is never sent elsewhere


_NO_REDIRECTS = urllib.request.build_opener(_Refuse)


class StepwiseClient:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 30.0, api_key: str | None = None) -> None:
        """``api_key`` (default: env STEPWISE_API_KEY): a tenant's key, sent as ``Authorization: Bearer``."""
        self.endpoint = endpoint.rstrip("/")
        if urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        self.timeout = timeout
        self.api_key = api_key if api_key is not None else os.environ.get("STEPWISE_API_KEY") or None

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        request = self._prepared(method, path, body, headers)
        try:
            with _NO_REDIRECTS.open(request, timeout=self.timeout) as response:  # the key never follows a redirect
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None

    def _prepared(
        self, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str] | None
    ) -> urllib.request.Request:
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"content-type": "application/json", **(headers or {})}
        if self.api_key:
            all_headers["authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(self.endpoint + path, data=data, method=method, headers=all_headers)  # noqa: S310

    def stream(self, path: str, *, after: str | None = None, timeout: float = STREAM_READ_TIMEOUT) -> Iterator[
            dict[str, Any]]:  # fmt: skip
        """One connection to a stream (``GET {path}``, e.g. /v1/sessions/{id}/events/stream): each event as the
        stream sends it (``{"type": "ping"}`` too, so a reader can keep time), until the server ends it. The API
        answers with a redirect to the stream function and a ticket; it is followed without the key (the ticket is
        the credential), only to https or to this machine. ``after``: the Last-Event-ID to resume after.

        Raises ApiError (an `event: error` frame, a refusal such as 404), StreamUnavailable (this deployment does not
        stream), OSError (the connection failed or dropped, the API or the stream function answered 429 or 5xx:
        reconnect with the last id)."""
        headers = {"accept": "text/event-stream", **({"last-event-id": after} if after else {})}
        location = self._stream_location(path, headers)
        request = urllib.request.Request(location, headers=headers)  # noqa: S310 - https, or this machine
        try:
            response = _NO_REDIRECTS.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:  # the stream function's concurrency cap, an outage: retried
                raise ConnectionError(f"the stream function answered {exc.code}") from None
            raise _api_error(exc) from None
        with response:
            for kind, data in read_sse(response):
                if kind == "error":
                    error = json.loads(data).get("error") or {}
                    raise ApiError(200, error.get("type") or error.get("code") or "error", error.get("message", data))
                yield {"type": "ping"} if kind == "ping" else json.loads(data)

    def _stream_location(self, path: str, headers: dict[str, str]) -> str:
        """Where the API sends a stream request (its 307), checked."""
        try:
            with _NO_REDIRECTS.open(self._prepared("GET", path, None, headers), timeout=self.timeout) as response:
                raise StreamUnavailable(f"GET {path} answered {response.status}, not a redirect to a stream")
        except urllib.error.HTTPError as exc:
            if exc.code not in (301, 302, 303, 307, 308):
                error = _api_error(exc)
                if exc.code in (400, 405) or (exc.code == 404 and error.code == "NOT_FOUND"):  # no such route here
                    raise StreamUnavailable(f"{error.code}: {error.message}") from None
                if exc.code == 429 or exc.code >= 500:  # the tenant's rate, an outage: retried like a dropped stream
                    raise ConnectionError(f"the API answered {exc.code} ({error.code}: {error.message})") from None
                raise error from None
            location = str(exc.headers.get("location") or "")
        target = urlsplit(location)
        if target.scheme != "https" and not (target.scheme == "http" and target.hostname in LOOPBACK):
            raise StreamUnavailable(f"the API redirected the stream to {target.scheme}://{target.hostname}: not https")
        return location

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Any route (the /v1 Managed Agents API)."""
        return self._request(method, path, body)

    def health(self) -> dict[str, Any]:
        return dict(self._request("GET", "/health"))

    def create_run(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return dict(self._request("POST", "/runs", body, headers))

    def get_run(self, run_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/runs/{run_id}"))

    def get_steps(self, run_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/runs/{run_id}/steps"))

    def costs(self, first: str | None = None, last: str | None = None) -> dict[str, Any]:
        query = "&".join(f"{key}={value}" for key, value in (("from", first), ("to", last)) if value)
        return dict(self._request("GET", "/costs" + (f"?{query}" if query else "")))

    def cancel(self, run_id: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/runs/{run_id}/cancel"))


def _api_error(exc: urllib.error.HTTPError) -> ApiError:
    payload = exc.read()
    try:
        error = json.loads(payload).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    code = error.get("code") or error.get("type") or "HTTP_ERROR"  # /runs or /v1 (Anthropic-shaped) errors
    return ApiError(exc.code, code, error.get("message", payload.decode(errors="replace")[:500]))


def read_sse(lines: Iterable[bytes]) -> Iterator[tuple[str, str]]:
    """Server-sent events as (event name, data); comments and frames without a name are skipped."""
    kind, data = "", list[str]()
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if kind:
                yield kind, "\n".join(data)
            kind, data = "", []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)


def follow_events(
    client: StepwiseClient,
    path: str,
    *,
    after: str | None,
    attempts: int = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> Generator[dict[str, Any]]:
    """A stream followed across connections: when one ends (its time limit) or drops, the next resumes after the
    last event seen (Last-Event-ID), so each event comes once. Raises StreamUnavailable when the deployment does not
    stream, or when ``attempts`` connections in a row failed (then poll instead), and ApiError."""
    failures = 0
    while True:
        received = False
        try:
            for event in client.stream(path, after=after):
                received, failures = True, 0
                if event["type"] != "ping":
                    after = str(event["id"])
                yield event
            if received:
                continue  # it ended at its time limit: the next connection at once
            problem = "it ended at once, with nothing"
        except OSError as exc:  # refused, dropped, timed out, the function's 429 or 5xx
            problem = str(exc)
        failures += 1
        if failures >= attempts:
            raise StreamUnavailable(f"the stream failed {failures} times in a row ({problem})")
        sleep(min(2.0**failures, 10.0))


def deployment_table(args: Any) -> tuple[str, Any, Any] | None:
    """An operator command's ``--table`` (the deployment's, written with your AWS credentials): its name, a
    DynamoDB client and the clock; None for the local stack (its operator routes)."""
    if not getattr(args, "table", None):
        return None
    import boto3

    from functions.adapters.aws import SystemClock

    return args.table, boto3.client("dynamodb"), SystemClock()
