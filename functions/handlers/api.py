"""HTTP API (API Gateway HTTP API, payload v2): the contract in the README's "HTTP API" section.

Each route parses and validates its input, calls one use case of the core, and maps the core's errors to
statuses; to add a route, add it here and to ROUTES in infra/constructs/api.py (the local stack serves what
the template declares)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from functions.adapters import wiring
from functions.adapters.settings import ApiSettings, load
from functions.agent.active import BY_TENANT, MAX_PAGE
from functions.agent.errors import (
    MAX_MESSAGE,
    EnqueueError,
    IdempotencyConflictError,
    NotFoundError,
    RequestRejectedError,
    RunConflictError,
    RunNotFoundError,
    StoreConflictError,
    clip,
)
from functions.agent.models import Run, RunKey, RunRequest
from functions.agent.requests import problems
from functions.agent.results import MAX_RESULT_CHARS, PAGE_CHARS, whole_result
from functions.agent.routing import default_routing
from functions.agent.spend import build_report, period
from functions.agent.tenants import budget_limits
from functions.handlers import openapi, warmup, webhook_routes
from functions.handlers.managed_agents import V1Error, router, stream_redirect
from functions.handlers.observability import observability
from functions.handlers.tenancy import Auth, UnauthenticatedError, deployment_auth, request_caller, request_tenant
from functions.handlers.views import steps_view

SETTINGS = ApiSettings
obs = observability("api")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer
app = APIGatewayHttpResolver()
app.include_router(router)  # /v1/agents, /v1/sessions: the Managed Agents API
app.include_router(webhook_routes.router)  # /v1/webhooks

RUN_ID = re.compile(r"^run_[0-9a-f]{26}$")
TRACED_ID = re.compile(r"(run|sesn)_[0-9a-f]{26}")  # a run's or a session's id, as the functions make them
PUBLIC_PATHS = frozenset(op.path for op in openapi.ROUTES if op.public)
QUERY = {f"{op.method} {op.path}": frozenset(op.query) for op in openapi.ROUTES}  # what each route reads
MAX_IDEMPOTENCY_KEY = 128


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body), headers=headers
    )


@app.exception_handler(ApiError)  # type: ignore[untyped-decorator]
def _api_error(exc: ApiError) -> Response[str]:
    error = {"code": exc.code, "message": clip(exc.message, MAX_MESSAGE)}
    return _json(exc.status, {"error": error, "request_id": _request_id()}, exc.headers)


@app.exception_handler(V1Error)  # type: ignore[untyped-decorator]
def _v1_error(exc: V1Error) -> Response[str]:
    return exc.response(_request_id())


@app.exception_handler(StoreConflictError)  # type: ignore[untyped-decorator]
def _busy(exc: StoreConflictError) -> Response[str]:
    """A write that kept losing to the run's own (a cancel or an interrupt while its steps settle, each try read
    again): nothing the request did is wrong to do again, and it is likely to succeed a moment later."""
    logger.warning("a write kept losing races", error=str(exc))
    message = "the run or session changed while this request was applied (its steps go on): send it again"
    retry = {"retry-after": "1"}
    if app.current_event.path.startswith("/v1/"):
        return V1Error(503, "api_error", message, retry).response(_request_id())
    return _json(503, {"error": {"code": "RUN_BUSY", "message": message}, "request_id": _request_id()}, retry)


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def _unexpected(exc: Exception) -> Response[str]:
    """A bug or an outage: logged whole (redacted) under the request id, which the client gets and nothing else."""
    logger.exception("unhandled error", error_type=type(exc).__name__)
    obs.emit("ApiErrors")
    message = "internal error: quote the request id when you report it"
    if app.current_event.path.startswith("/v1/"):
        return V1Error(500, "api_error", message).response(_request_id())
    return _json(500, {"error": {"code": "INTERNAL", "message": message}, "request_id": _request_id()})


def _request_id() -> str:
    """API Gateway's id of the request (in its access log, the function's log lines and the request-id header)."""
    return str(app.current_event.raw_event.get("requestContext", {}).get("requestId", ""))


@app.not_found
def _not_found(_: Exception) -> Response[str]:
    return _json(
        404, {"error": {"code": "NOT_FOUND", "message": f"no route {app.current_event.raw_event.get('routeKey', '')}"}}
    )


def _auth() -> Auth:
    return deployment_auth(load(SETTINGS))


def _tenant() -> str:
    settings = load(SETTINGS)
    try:
        return request_tenant(app.current_event.raw_event, settings.default_tenant, auth=deployment_auth(settings))
    except UnauthenticatedError as exc:
        raise ApiError(401, "UNAUTHENTICATED", str(exc)) from exc


def _refuse(resolver: APIGatewayHttpResolver, status: int, code: str, kind: str, message: str,
            headers: dict[str, str] | None = None) -> Exception:  # fmt: skip
    """The error in the shape of the route's API (``/v1``: the Anthropic shape)."""
    if resolver.current_event.path.startswith("/v1/"):
        return V1Error(status, kind, message, headers)
    return ApiError(status, code, message, headers)


def _before_route(resolver: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[str]:
    """What every route does first: count the request against its tenant's requests per minute (over it, 429 with
    Retry-After, which the anthropic SDK waits on; a request without a tenant goes on to its 401), then refuse a
    query parameter the route does not take (400, never ignored)."""
    route = (
        f"{resolver.request.method.upper()} {resolver.request.route}"  # the route matched, as openapi.ROUTES names it
    )
    obs.annotate(route=route)
    named = resolver.request.path_parameters.get("run_id") or resolver.request.path_parameters.get("session_id") or ""
    if TRACED_ID.fullmatch(named):  # a well-formed run or session id, never a caller's text
        obs.annotate_run(None, named)
    if resolver.current_event.path not in PUBLIC_PATHS:
        _admit(resolver)
    unknown = sorted(set(resolver.current_event.query_string_parameters or {}) - QUERY.get(route, frozenset()))
    if unknown:
        message = f"query parameter {clip(unknown[0])!r} is not supported here"
        raise _refuse(resolver, 400, "VALIDATION_ERROR", "invalid_request_error", message)
    return next_middleware(resolver)


def _admit(resolver: APIGatewayHttpResolver) -> None:
    settings = load(SETTINGS)
    try:
        tenant = request_tenant(
            resolver.current_event.raw_event, settings.default_tenant, auth=deployment_auth(settings)
        )
    except UnauthenticatedError:
        return
    obs.annotate(tenant=tenant)
    try:
        admission = wiring.rate_limiter(settings).admit(tenant)
    except Exception:  # the table cannot count now: the API stays up (API Gateway's throttle still caps everyone)
        logger.exception("request rate not counted", tenant=tenant)
        obs.emit("RateLimiterErrors")
        return
    if not admission.admitted:
        obs.emit("RequestsRateLimited")
        logger.info("rate limited", tenant=tenant, limit=admission.limit)
        retry = {"retry-after": str(admission.retry_after_seconds)}
        raise _refuse(resolver, 429, "RATE_LIMITED", "rate_limit_error", admission.message, retry)


app.use(middlewares=[_before_route])


def _parse_run_request() -> RunRequest:
    try:
        raw = app.current_event.decoded_body
    except ValueError as exc:  # includes UnicodeDecodeError
        raise ApiError(400, "INVALID_REQUEST", "request body is not UTF-8 text") from exc
    if not raw:
        raise ApiError(400, "INVALID_REQUEST", 'request body is required: {"input": "..."}')
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "INVALID_JSON", f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ApiError(400, "INVALID_JSON", "request body is nested too deeply") from exc
    if not isinstance(payload, dict):
        raise ApiError(400, "INVALID_REQUEST", "request body must be a JSON object")
    try:
        return RunRequest.model_validate(payload)
    except ValidationError as exc:
        raise ApiError(400, "VALIDATION_ERROR", problems(exc)) from exc


def _run_key(run_id: str) -> RunKey:
    """The caller's run: an id that cannot be a run's is not found, like another tenant's."""
    if not RUN_ID.match(run_id):
        raise ApiError(404, "RUN_NOT_FOUND", f"run {clip(run_id)} not found")
    return RunKey(_tenant(), run_id)


@app.get("/health")
def health() -> Response[str]:
    return _json(200, {"status": "ok"})


@app.get("/openapi.json")
def openapi_document() -> Response[str]:
    return _json(200, openapi.document())


@app.post("/runs")
def create_run() -> Response[str]:
    request = _parse_run_request()
    key = app.current_event.headers.get("idempotency-key") or app.current_event.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY):
        raise ApiError(400, "INVALID_IDEMPOTENCY_KEY", f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    try:
        accepted = wiring.submitter(load(SETTINGS)).submit(
            _tenant(), request, idempotency_key=key, created_by=request_caller(app.current_event.raw_event, _auth())
        )
    except RequestRejectedError as exc:
        raise ApiError(400, "VALIDATION_ERROR", str(exc)) from exc
    except IdempotencyConflictError as exc:
        raise ApiError(422, "IDEMPOTENCY_CONFLICT", str(exc)) from exc
    except EnqueueError as exc:
        advice = "retry with the same Idempotency-Key" if exc.retry_with_key else "the run was marked FAILED; retry"
        raise ApiError(503, "ENQUEUE_FAILED", f"{exc}; {advice}") from exc
    run = accepted.run
    obs.annotate(run_id=run.run_id)
    logger.info("run accepted", run_id=run.run_id, tenant=run.tenant, replayed=accepted.replayed)
    if not accepted.replayed:
        obs.emit("RunsAccepted")
    body = run.public()
    return _json(
        202, body, headers={"Location": f"/runs/{run.run_id}", "Idempotent-Replayed": str(accepted.replayed).lower()}
    )


@app.get("/runs/<run_id>")
def get_run(run_id: str) -> Response[str]:
    run = wiring.store(load(SETTINGS)).get_run(_run_key(run_id))
    if run is None:
        raise ApiError(404, "RUN_NOT_FOUND", f"run {clip(run_id)} not found")
    return _json(200, run.public())


@app.get("/runs/<run_id>/steps")
def get_steps(run_id: str) -> Response[str]:
    try:
        history = wiring.store(load(SETTINGS)).load_history(_run_key(run_id))
    except RunNotFoundError as exc:
        raise ApiError(404, "RUN_NOT_FOUND", f"run {clip(run_id)} not found") from exc
    return _json(200, {"run_id": run_id, "status": history.run.status.value, "steps": steps_view(history)})


@app.get("/runs/<run_id>/tool_results/<tool_use_id>")
def get_tool_result(run_id: str, tool_use_id: str) -> Response[str]:
    """The whole result of one tool call (the model saw a view of a large one)."""
    settings = load(SETTINGS)
    offset, limit = _page_of(app.current_event.query_string_parameters or {})
    try:
        history = wiring.store(settings).load_history(_run_key(run_id))
        return _json(200, whole_result(history, wiring.results(settings), tool_use_id, offset=offset, limit=limit))
    except RunNotFoundError as exc:
        raise ApiError(404, "RUN_NOT_FOUND", f"run {clip(run_id)} not found") from exc
    except NotFoundError as exc:
        raise ApiError(404, "TOOL_RESULT_NOT_FOUND", str(exc)) from exc


def _page_of(params: dict[str, str]) -> tuple[int, int]:
    """``offset`` and ``limit`` (characters) of a whole tool result: 400 for anything but whole numbers in range
    (any other parameter was refused before the route ran)."""
    values = []
    for name, default, high in (("offset", 0, 10 * MAX_RESULT_CHARS), ("limit", PAGE_CHARS, PAGE_CHARS)):
        raw = params.get(name, str(default))
        if not raw.isdigit() or not (name == "offset" or int(raw) >= 1) or int(raw) > high:
            raise ApiError(400, "VALIDATION_ERROR", f"{name} must be a whole number up to {high}" +
                           (" and at least 1" if name == "limit" else ""))  # fmt: skip
        values.append(int(raw))
    return values[0], values[1]


@app.get("/runs/<run_id>/events/stream")
def stream_run(run_id: str) -> Response[str]:
    """307 to the stream function, with a ticket for this run: its events as server-sent events until it ends."""
    key = _run_key(run_id)
    try:
        return stream_redirect(load(SETTINGS), key, "run")
    except RequestRejectedError as exc:
        raise ApiError(400, "VALIDATION_ERROR", str(exc)) from exc
    except NotFoundError as exc:
        raise ApiError(404, "RUN_NOT_FOUND", str(exc)) from exc


@app.post("/runs/<run_id>/cancel")
def cancel(run_id: str) -> Response[str]:
    settings = load(SETTINGS)
    try:
        run = wiring.lifecycle_with_queue(settings).cancel(_run_key(run_id), wiring.workflow(settings))
    except RunNotFoundError as exc:
        raise ApiError(404, "RUN_NOT_FOUND", f"run {clip(run_id)} not found") from exc
    except RunConflictError as exc:
        raise ApiError(409, "RUN_ALREADY_ENDED", str(exc)) from exc
    logger.info("run cancelled", run_id=run_id)
    obs.emit("RunsCancelled")
    return _json(200, run.public())


ACTIVE_LIMIT = 50  # entries a page of GET /active has, or runs and sessions one POST /active/cancel stops, by default
CANCEL_SECONDS = 20  # POST /active/cancel takes no new one after this: it answers inside the api function's 28 s


@app.get("/active")
def active() -> Response[str]:
    """The caller's active runs and sessions (the index of active work: one Query), oldest first."""
    limit, page = _active_page()
    try:
        entries, next_page = wiring.kill_switch(load(SETTINGS)).list(_tenant(), limit=limit, page=page)
    except RequestRejectedError as exc:
        raise ApiError(400, "VALIDATION_ERROR", str(exc)) from exc
    return _json(200, {"data": [entry.public() for entry in entries], "next_page": next_page})


@app.post("/active/cancel")
def cancel_active() -> Response[str]:
    """The kill switch of the caller's tenant: stops its active runs (cancelled) and sessions (their turns interrupted),
    as many as one request can in its time; ``next_page`` set: call again (with it) for the rest."""
    if (app.current_event.body or "").strip() not in ("", "{}"):
        raise ApiError(400, "VALIDATION_ERROR", "this route takes no body: limit and page are query parameters")
    limit, page = _active_page()
    tenant = _tenant()
    try:
        report = wiring.kill_switch(load(SETTINGS)).stop_all(
            tenant, reason=BY_TENANT, limit=limit, page=page, seconds=CANCEL_SECONDS
        )
    except RequestRejectedError as exc:
        raise ApiError(400, "VALIDATION_ERROR", str(exc)) from exc
    body = report.public()
    logger.warning("kill switch", tenant=tenant, stopped=body["stopped"], more=report.next_page is not None)
    if body["stopped"]:
        obs.emit("RunsCancelled", body["stopped"])
    return _json(200, body)


def _active_page() -> tuple[int, str | None]:
    params = app.current_event.query_string_parameters or {}
    raw = params.get("limit", str(ACTIVE_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(400, "VALIDATION_ERROR", f"limit must be a whole number from 1 to {MAX_PAGE}")
    return int(raw), params.get("page")


@app.get("/costs")
def costs() -> Response[str]:
    params = app.current_event.query_string_parameters or {}
    today = wiring.CLOCK.now().date()
    try:
        first, last = period(params.get("from"), params.get("to"), today)
    except ValueError as exc:
        raise ApiError(400, "VALIDATION_ERROR", f"from/to must be YYYY-MM-DD days: {clip(exc)}") from exc
    tenant, settings = _tenant(), load(SETTINGS)
    rows = wiring.store(settings).spend_rows(tenant, first.isoformat(), last.isoformat())
    report = build_report(
        tenant=tenant,
        first=first,
        last=last,
        rows=rows,
        tenant_daily_usd=budget_limits(
            wiring.limits(settings), wiring.tenant_limits(settings).limits(tenant)
        ).tenant_daily_usd,
        today=today,
        routing=default_routing(),
    )
    return _json(200, report)


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # no run content in traces
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    started = time.perf_counter()
    response = app.resolve(event, context)
    if unannounced := obs.unannounced(wiring.notifier(load(SETTINGS))):  # a cancel's, an interrupt's end
        obs.emit("WebhookAnnounceFailures", unannounced)
    obs.emit("Requests", status_class=f"{int(response.get('statusCode', 500)) // 100}xx")
    obs.emit("RequestLatency", (time.perf_counter() - started) * 1000)
    request_id = (event.get("requestContext") or {}).get("requestId")
    if request_id:  # every answer names its request (the anthropic SDK reads it as request_id)
        response.setdefault("headers", {})["request-id"] = str(request_id)
    return response


def _prepare() -> None:
    """What a first request builds, built in the init on Lambda (functions/handlers/warmup.py): the settings, the
    clients and use cases of the routes (/runs, /v1), and the models every request validates."""
    settings = load(SETTINGS)
    deployment_auth(settings)
    for build in (wiring.rate_limiter, wiring.submitter, wiring.store, wiring.notifier, wiring.sessions):
        build(settings)
    for model in (RunRequest, Run):
        model.model_rebuild()


warmup.prepare(_prepare, logger)
