"""The Managed Agents API (``/v1/agents``, ``/v1/sessions``): the routes the ``anthropic`` SDK's
``client.beta.agents`` / ``client.beta.sessions`` call, in its shapes, errors included
(``{"type": "error", "error": {"type", "message"}}``). Each route parses its query, calls one use case of
functions/agent/agents.py or sessions.py, and maps the core's errors to statuses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from functions.adapters import wiring
from functions.adapters.settings import ApiSettings, load
from functions.agent.errors import (
    MAX_MESSAGE,
    ConflictError,
    EnqueueError,
    NotFoundError,
    RequestRejectedError,
    ToolServerUnavailableError,
    clip,
)
from functions.agent.models import RunKey
from functions.agent.results import MAX_RESULT_CHARS, PAGE_CHARS, whole_result
from functions.handlers.tenancy import UnauthenticatedError, deployment_auth, request_caller, request_tenant

router = APIGatewayHttpRouter()  # type: ignore[no-untyped-call]
STREAM_PATHS = {"session": "/v1/sessions/{}/events/stream", "run": "/runs/{}/events/stream"}  # the stream function's
T = TypeVar("T")
MAX_LIMIT = 100


class V1Error(Exception):
    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers

    def response(self, request_id: str = "") -> Response[str]:
        body = {"type": "error", "error": {"type": self.kind, "message": clip(self.message, MAX_MESSAGE)},
                "request_id": request_id}  # fmt: skip
        return _json(self.status, body, self.headers)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body), headers=headers
    )


def _core(call: Callable[[], T]) -> T:
    """The core's errors as the API's: 400, 404, 409, 503."""
    try:
        return call()
    except RequestRejectedError as exc:
        raise V1Error(400, "invalid_request_error", str(exc)) from exc
    except NotFoundError as exc:
        raise V1Error(404, "not_found_error", str(exc)) from exc
    except ConflictError as exc:
        raise V1Error(409, "conflict_error", str(exc)) from exc
    except (EnqueueError, ToolServerUnavailableError) as exc:
        raise V1Error(503, "api_error", str(exc)) from exc


def _tenant() -> str:
    settings = load(ApiSettings)
    try:
        return request_tenant(router.current_event.raw_event, settings.default_tenant, auth=deployment_auth(settings))
    except UnauthenticatedError as exc:
        raise V1Error(401, "authentication_error", str(exc)) from exc


def _body() -> Any:
    try:
        raw = router.current_event.decoded_body
    except ValueError as exc:
        raise V1Error(400, "invalid_request_error", "request body is not UTF-8 text") from exc
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise V1Error(400, "invalid_request_error", f"request body is not valid JSON: {exc}") from exc


def _query() -> dict[str, str]:
    """The route's query parameters (one it does not take was refused before it ran: api.py ``_before_route``)."""
    return dict(router.current_event.query_string_parameters or {})


def _int(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise V1Error(400, "invalid_request_error", f"{name} must be an integer from {low} to {high}")
    return int(value)


def _flag(params: dict[str, str], name: str) -> bool:
    value = params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise V1Error(400, "invalid_request_error", f"{name} must be true or false")
    return value == "true"


def _cursor(params: dict[str, str], prefix: str) -> str | None:
    """``page``: a next_page this API gave (anything else is refused, not read as the first page)."""
    page = params.get("page")
    if page is not None and not page.startswith(prefix):
        raise V1Error(400, "invalid_request_error", f"page {page[:80]!r} is not a next_page of this list")
    return page


def _page(data: list[Any], next_page: str | None) -> Response[str]:
    return _json(200, {"data": data, "next_page": next_page})


def _settings() -> ApiSettings:
    return load(ApiSettings)


# ------------------------------------------------------------------------------------------- agents


@router.post("/v1/agents")
def create_agent() -> Response[str]:
    body = _body()
    agent = _core(lambda: wiring.agents(_settings()).create(_tenant(), body))
    return _json(200, agent.public())


@router.get("/v1/agents")
def list_agents() -> Response[str]:
    params = _query()
    limit = _int(params, "limit", 20, 1, MAX_LIMIT)
    agents, next_page = wiring.session_store(_settings()).list_agents(
        _tenant(), limit=limit, after=_cursor(params, "HEAD#"), include_archived=_flag(params, "include_archived")
    )
    return _page([agent.public() for agent in agents], next_page)


@router.get("/v1/agents/<agent_id>")
def get_agent(agent_id: str) -> Response[str]:
    params = _query()
    version = _int(params, "version", 0, 1, 10**9) or None
    agent = _core(lambda: wiring.agents(_settings()).get(_tenant(), agent_id, version))
    return _json(200, agent.public())


@router.post("/v1/agents/<agent_id>")
def update_agent(agent_id: str) -> Response[str]:
    body = _body()
    agent = _core(lambda: wiring.agents(_settings()).update(_tenant(), agent_id, body))
    return _json(200, agent.public())


@router.post("/v1/agents/<agent_id>/archive")
def archive_agent(agent_id: str) -> Response[str]:
    agent = _core(lambda: wiring.agents(_settings()).archive(_tenant(), agent_id))
    return _json(200, agent.public())


@router.get("/v1/agents/<agent_id>/versions")
def agent_versions(agent_id: str) -> Response[str]:
    params = _query()
    limit = _int(params, "limit", 20, 1, MAX_LIMIT)
    tenant = _tenant()
    _core(lambda: wiring.agents(_settings()).get(tenant, agent_id))
    versions, next_page = wiring.session_store(_settings()).list_versions(
        tenant, agent_id, limit=limit, after=_cursor(params, f"VER#{agent_id}#")
    )
    return _page([agent.public() for agent in versions], next_page)


# ------------------------------------------------------------------------------------------- sessions


def _session(session_id: str) -> RunKey:
    return RunKey(_tenant(), session_id)


@router.post("/v1/sessions")
def create_session() -> Response[str]:
    body = _body()
    caller = request_caller(router.current_event.raw_event, deployment_auth(load(ApiSettings)))
    view = _core(lambda: wiring.sessions(_settings()).create(_tenant(), body, created_by=caller))
    return _json(200, view.public())


@router.get("/v1/sessions")
def list_sessions() -> Response[str]:
    params = _query()
    limit = _int(params, "limit", 20, 1, MAX_LIMIT)
    if _running_only(params):  # read off the index of active work (the kill switch's), never a scan
        _flag(params, "include_archived")  # checked; it changes nothing here: an archived session never runs
        views, next_page = _core(lambda: wiring.sessions(_settings()).running_page(
            _tenant(), limit=limit, page=params.get("page"), agent_id=params.get("agent_id")))  # fmt: skip
        return _page([view.public() for view in views], next_page)
    views, next_page = wiring.sessions(_settings()).list_page(
        _tenant(), limit=limit, page=_cursor(params, "S#"), agent_id=params.get("agent_id"),
        include_archived=_flag(params, "include_archived"),
    )  # fmt: skip
    return _page([view.public() for view in views], next_page)


def _running_only(params: dict[str, str]) -> bool:
    """``statuses[]`` (the SDK's ``statuses``; API Gateway joins repeated values with commas): Stepwise lists by
    ``running`` only, as every other session is ``idle`` (list without it)."""
    given = [params[name] for name in ("statuses[]", "statuses") if name in params]
    wanted = {status for value in given for status in value.split(",")}
    if given and wanted != {"running"}:
        message = f"statuses: {clip(','.join(sorted(wanted)))!r} is not supported (Stepwise filters by 'running' only)"
        raise V1Error(400, "invalid_request_error", message)
    return bool(given)


@router.get("/v1/sessions/<session_id>")
def get_session(session_id: str) -> Response[str]:
    view = _core(lambda: wiring.sessions(_settings()).view(_session(session_id)))
    return _json(200, view.public())


@router.get("/v1/sessions/<session_id>/tool_results/<tool_use_id>")
def get_tool_result(session_id: str, tool_use_id: str) -> Response[str]:
    """Stepwise: the whole result of one tool call (its ``agent.tool_result`` event carries a view of a large one)."""
    settings = _settings()
    params = _query()
    offset, limit = (
        _int(params, "offset", 0, 0, 10 * MAX_RESULT_CHARS),
        _int(params, "limit", PAGE_CHARS, 1, PAGE_CHARS),
    )
    view = _core(lambda: wiring.sessions(settings).view(_session(session_id)))
    return _json(200, _core(lambda: whole_result(view.history, wiring.results(settings), tool_use_id, offset=offset,
                                                 limit=limit)))  # fmt: skip


@router.delete("/v1/sessions/<session_id>")
def delete_session(session_id: str) -> Response[str]:
    return _json(200, _core(lambda: wiring.sessions(_settings()).delete(_session(session_id))))


@router.post("/v1/sessions/<session_id>/archive")
def archive_session(session_id: str) -> Response[str]:
    view = _core(lambda: wiring.sessions(_settings()).archive(_session(session_id)))
    return _json(200, view.public())


@router.post("/v1/sessions/<session_id>/events")
def send_events(session_id: str) -> Response[str]:
    body = _body()
    sent = _core(lambda: wiring.sessions(_settings()).send(_session(session_id), body))
    return _json(200, {"data": sent})


@router.get("/v1/sessions/<session_id>/events")
def list_events(session_id: str) -> Response[str]:
    params = _query()
    limit = _int(params, "limit", 100, 1, 1000)
    order = params.get("order", "asc")
    if order not in ("asc", "desc"):
        raise V1Error(400, "invalid_request_error", "order must be asc or desc")
    raw_types = params.get("types[]") or params.get("types")
    types = [t for t in raw_types.split(",") if t] if raw_types else None
    wait = _int(params, "wait", 0, 0, 20)
    events, next_page = _core(
        lambda: wiring.sessions(_settings()).events(
            _session(session_id), page=_cursor(params, "sevt_"), limit=limit, order=order,  # type: ignore[arg-type]
            types=types, wait_seconds=wait,
        )
    )  # fmt: skip
    return _page(events, next_page)


@router.post("/v1/sessions/<session_id>")
def update_session(session_id: str) -> Response[str]:
    raise V1Error(400, "invalid_request_error", "updating a session is not supported: its title and metadata are set "
                  "when it is created")  # fmt: skip


@router.get("/v1/sessions/<session_id>/events/stream")
def stream_events(session_id: str) -> Response[str]:
    """307 to the stream function, with a ticket for this session (see functions/handlers/stream.py)."""
    params = _query()
    if "event_deltas" in params or "event_deltas[]" in params:
        raise V1Error(400, "invalid_request_error", "event_deltas: previews of events being produced are not "
                      "offered; the stream sends each event whole once it has happened")  # fmt: skip
    return _core(lambda: stream_redirect(_settings(), _session(session_id), "session"))


def stream_redirect(settings: ApiSettings, key: RunKey, kind: Literal["session", "run"]) -> Response[str]:
    """The answer that opens a stream of ``key`` (a session, or a /runs run): ``307`` to the stream function's URL
    with a single-use ticket for it, once the caller's tenant is known to have it. A client follows it without its
    credentials (httpx and curl drop ``Authorization`` on a redirect to another origin): the ticket is the
    credential. Raises the core's errors: NotFoundError (not the tenant's), RequestRejectedError (a bad
    Last-Event-ID, or no stream function in this deployment)."""
    from functions.agent.sessions import check_target  # sessions and streams: imported by the requests that use them
    from functions.agent.streams import check_cursor

    check_cursor(router.current_event.headers.get("last-event-id"))
    if settings.stream_url is None:
        raise RequestRejectedError("event streaming is not offered by this deployment (it has no stream function)")
    check_target(wiring.store(settings), key, kind)
    ticket = wiring.tickets(settings).issue(key)
    path = STREAM_PATHS[kind].format(key.run_id)
    location = f"{settings.stream_url.rstrip('/')}{path}?ticket={ticket}"
    return _json(307, {"location": location}, {"location": location, "cache-control": "no-store"})
