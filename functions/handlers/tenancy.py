"""Which tenant an API request belongs to (every route of both APIs asks this one place).

Deployed, the stack's Lambda authorizer has checked the request's API key and put its tenant in the request's
authorizer context: a request without a valid tenant there is refused (401), never given a default. The local
stack without ``--require-keys`` (``STEPWISE_AUTH=none``) serves everyone as its default tenant."""

from __future__ import annotations

from typing import Any

from functions.agent.keys import KEY_ID, TENANT


class UnauthenticatedError(Exception):
    """The request carries no tenant the authorizer vouched for."""


def request_key_id(raw_event: dict[str, Any]) -> str | None:
    """The id of the API key the authorizer accepted (who is calling), if any."""
    authorizer = raw_event.get("requestContext", {}).get("authorizer") or {}
    key_id = (authorizer.get("lambda") or {}).get("key_id")
    return key_id if isinstance(key_id, str) and KEY_ID.fullmatch(key_id) else None


def request_tenant(raw_event: dict[str, Any], default: str, *, auth: str = "api_key") -> str:
    """The authorizer's ``tenant`` (validated); with ``auth="none"``, the deployment's default when there is none."""
    authorizer = raw_event.get("requestContext", {}).get("authorizer") or {}
    claimed = (authorizer.get("lambda") or {}).get("tenant")
    if claimed is not None:
        if not isinstance(claimed, str) or not TENANT.fullmatch(claimed):
            raise UnauthenticatedError("the request's tenant is not valid")
        return claimed
    if auth == "none":
        return default
    raise UnauthenticatedError("no API key: send x-api-key or Authorization: Bearer <key>")
