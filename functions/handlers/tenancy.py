"""Which tenant an API request belongs to (every route of both APIs asks this one place)."""

from __future__ import annotations

from typing import Any


def request_tenant(raw_event: dict[str, Any], default: str) -> str:
    """A Lambda authorizer's ``tenant`` claim, else the deployment's default tenant."""
    authorizer = raw_event.get("requestContext", {}).get("authorizer") or {}
    claimed = (authorizer.get("lambda") or {}).get("tenant")
    return str(claimed) if claimed else default
