"""``/v1/webhooks``: a tenant registers, lists and deletes its webhook endpoints (functions/agent/webhooks.py), with
the errors of the Managed Agents API (functions/handlers/managed_agents.py). The secret is in the answer to the
registration only."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from functions.adapters import wiring
from functions.adapters.settings import ApiSettings, load
from functions.handlers.managed_agents import _body, _core, _json, _page, _tenant

router = APIGatewayHttpRouter()  # type: ignore[no-untyped-call]


@router.post("/v1/webhooks")
def create_webhook() -> Response[str]:
    body = _body()
    return _json(200, _core(lambda: wiring.webhooks(load(ApiSettings)).create(_tenant(), body)))


@router.get("/v1/webhooks")
def list_webhooks() -> Response[str]:
    return _page([webhook.public() for webhook in wiring.webhooks(load(ApiSettings)).list(_tenant())], None)


@router.get("/v1/webhooks/<webhook_id>")
def get_webhook(webhook_id: str) -> Response[str]:
    return _json(200, _core(lambda: wiring.webhooks(load(ApiSettings)).get(_tenant(), webhook_id)).public())


@router.delete("/v1/webhooks/<webhook_id>")
def delete_webhook(webhook_id: str) -> Response[str]:
    return _json(200, _core(lambda: wiring.webhooks(load(ApiSettings)).delete(_tenant(), webhook_id)))
