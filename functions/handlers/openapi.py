"""The API's OpenAPI 3.1 document, served at ``GET /openapi.json``: every route, its parameters, and the request
bodies' schemas taken from the pydantic models the handlers parse them with (so the document cannot drift from what
they accept). ``ROUTES`` is also what the stack deploys (infra/constructs/api.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    body: str | None = None  # the request model's name (see _models)
    query: tuple[str, ...] = ()
    success: int = 200
    public: bool = False  # no API key (GET /health, GET /openapi.json)
    v1: bool = False  # the Managed Agents API's error shape
    stream: bool = False  # answers 307 to the stream function (text/event-stream there), takes Last-Event-ID
    extra: dict[str, Any] = field(default_factory=dict)


_LIST = ("limit", "page", "include_archived")
ROUTES: tuple[Operation, ...] = (
    Operation("POST", "/runs", "Submit a run", body="RunRequest", success=202),
    Operation("GET", "/runs/{run_id}", "A run"),
    Operation("GET", "/runs/{run_id}/steps", "A run's steps"),
    Operation("POST", "/runs/{run_id}/cancel", "Cancel a run"),
    Operation(
        "GET",
        "/runs/{run_id}/events/stream",
        "Stream a run's events until it ends: 307 to the stream function's URL with a single-use ticket",
        success=307,
        stream=True,
    ),
    Operation(
        "GET",
        "/runs/{run_id}/tool_results/{tool_use_id}",
        "A page of a tool call's whole result",
        query=("offset", "limit"),
    ),
    Operation("GET", "/costs", "The tenant's spend", query=("from", "to")),
    Operation("GET", "/active", "The tenant's active runs and sessions", query=("limit", "page")),
    Operation(
        "POST", "/active/cancel", "Stop the tenant's active runs and sessions (kill switch)", query=("limit", "page")
    ),
    Operation("POST", "/v1/agents", "Create an agent", body="AgentFields", v1=True),
    Operation("GET", "/v1/agents", "List agents", query=_LIST, v1=True),
    Operation("GET", "/v1/agents/{agent_id}", "An agent (a version)", query=("version",), v1=True),
    Operation("POST", "/v1/agents/{agent_id}", "Update an agent (its next version)", body="AgentUpdate", v1=True),
    Operation("POST", "/v1/agents/{agent_id}/archive", "Archive an agent", v1=True),
    Operation("GET", "/v1/agents/{agent_id}/versions", "An agent's versions", query=("limit", "page"), v1=True),
    Operation("POST", "/v1/sessions", "Create a session", body="CreateSession", v1=True),
    Operation("GET", "/v1/sessions", "List sessions", query=(*_LIST, "agent_id", "statuses[]", "statuses"), v1=True),
    Operation("GET", "/v1/sessions/{session_id}", "A session", v1=True),
    Operation("DELETE", "/v1/sessions/{session_id}", "Delete a session", v1=True),
    Operation("POST", "/v1/sessions/{session_id}", "Update a session (not supported: 400)", v1=True),
    Operation("POST", "/v1/sessions/{session_id}/archive", "Archive a session", v1=True),
    Operation("POST", "/v1/sessions/{session_id}/events", "Send events", body="SendEvents", v1=True),
    Operation(
        "GET",
        "/v1/sessions/{session_id}/events",
        "List (and follow) events",
        query=("limit", "page", "order", "types[]", "types", "wait"),
        v1=True,
    ),
    Operation(
        "GET",
        "/v1/sessions/{session_id}/events/stream",
        "Stream events: 307 to the stream function's URL with a single-use ticket; it answers text/event-stream",
        query=("event_deltas", "event_deltas[]"),  # refused by name (400)
        success=307,
        v1=True,
        stream=True,
    ),
    Operation(
        "GET",
        "/v1/sessions/{session_id}/tool_results/{tool_use_id}",
        "A page of a tool call's whole result",
        query=("offset", "limit"),
        v1=True,
    ),
    Operation(
        "POST",
        "/v1/webhooks",
        "Register a webhook endpoint (its secret is in this answer only)",
        body="CreateWebhook",
        v1=True,
    ),
    Operation("GET", "/v1/webhooks", "List webhook endpoints", v1=True),
    Operation("GET", "/v1/webhooks/{webhook_id}", "A webhook endpoint", v1=True),
    Operation("DELETE", "/v1/webhooks/{webhook_id}", "Delete a webhook endpoint", v1=True),
    Operation("GET", "/health", "Liveness", public=True),
    Operation("GET", "/openapi.json", "This document", public=True),
)

_QUERY: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1},
    "page": {"type": "string"},
    "include_archived": {"type": "boolean"},
    "agent_id": {"type": "string"},
    "version": {"type": "integer", "minimum": 1},
    "order": {"type": "string", "enum": ["asc", "desc"]},
    "types[]": {"type": "array", "items": {"type": "string"}},
    "types": {"type": "string", "description": "event types, comma-separated (as types[])"},
    "statuses[]": {"type": "array", "items": {"type": "string", "enum": ["running"]}},
    "statuses": {"type": "string", "description": "session statuses, comma-separated (as statuses[]): running"},
    "wait": {"type": "integer", "minimum": 0, "maximum": 20},
    "event_deltas": {"type": "string", "description": "not offered: refused with 400"},
    "event_deltas[]": {"type": "array", "items": {"type": "string"}, "description": "not offered: refused with 400"},
    "offset": {"type": "integer", "minimum": 0},
    "from": {"type": "string", "format": "date"},
    "to": {"type": "string", "format": "date"},
}
_OK = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
_LAST_EVENT_ID = "resume after this event (sevt_0000000000000: every event); without it the stream starts now"
_STREAM = {
    "description": "Redirect to the stream function's URL, with a ticket that opens one stream within 30 s (follow "
    "it without your credentials). There, 200 text/event-stream: each event as `event: <type>`, `id: <event id>`, "
    "`data: <the event as JSON>`; `event: ping` after 15 s of silence; `event: error` if the stream fails.",
    "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
}
_ERROR = {"type": "object", "properties": {"error": {"type": "object", "properties": {
    "code": {"type": "string"}, "message": {"type": "string"}}}}}  # fmt: skip
_V1_ERROR = {"type": "object", "properties": {"type": {"const": "error"}, "error": {"type": "object", "properties": {
    "type": {"type": "string"}, "message": {"type": "string"}}}}}  # fmt: skip


def _models() -> dict[str, type[BaseModel]]:
    from functions.agent.agents import AgentFields, AgentUpdate
    from functions.agent.models import RunRequest
    from functions.agent.sessions import CreateSession, SendEvents
    from functions.agent.webhooks import CreateWebhook

    return {"RunRequest": RunRequest, "AgentFields": AgentFields, "AgentUpdate": AgentUpdate,
            "CreateSession": CreateSession, "SendEvents": SendEvents, "CreateWebhook": CreateWebhook}  # fmt: skip


@cache
def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _ERROR, "V1Error": _V1_ERROR}
    for name, model in _models().items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    paths: dict[str, dict[str, Any]] = {}
    for op in ROUTES:
        parameters = [{"name": name[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
                      for name in op.path.split("/") if name.startswith("{")]  # fmt: skip
        parameters += [{"name": name, "in": "query", "required": False, "schema": _QUERY[name]} for name in op.query]
        if op.stream:
            parameters.append({"name": "Last-Event-ID", "in": "header", "required": False, "schema": {
                "type": "string", "pattern": "^sevt_[0-9]{13}$"}, "description": _LAST_EVENT_ID})  # fmt: skip
        error = {"$ref": "#/components/schemas/" + ("V1Error" if op.v1 else "Error")}
        operation: dict[str, Any] = {
            "summary": op.summary,
            "operationId": f"{op.method.lower()}{op.path.replace('/', '_').replace('{', '').replace('}', '')}",
            "parameters": parameters,
            "responses": {
                str(op.success): _STREAM if op.stream else _OK,
                "4XX": {
                    "description": "Refused, with a code or type and a message",
                    "content": {"application/json": {"schema": error}},
                },
            },
        }
        if op.body:
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{op.body}"}}}}  # fmt: skip
        if not op.public:
            operation["security"] = [{"apiKey": []}, {"bearer": []}]
        paths.setdefault(op.path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Stepwise",
            "version": "1",
            "description": "Durable, budgeted agent runs on AWS; the "
            "Managed Agents API of the anthropic SDK under /v1.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }
