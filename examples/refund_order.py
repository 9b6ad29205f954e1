"""A Lambda tool: an ordinary Lambda handler whose event is the model's tool input and whose return value (text,
or any JSON value) is the tool's result. Deployed as your own function; allowed with CDK context lambda_tools;
run in process by the local stack (`stepwise local --lambda-tool refund-order=examples.refund_order.handler`)."""

from __future__ import annotations

from typing import Any

REFUNDS: list[dict[str, Any]] = []


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    order_id = str(event.get("order_id") or "")
    if not order_id:
        raise ValueError("order_id is required")  # the model sees: refund_order failed (ValueError): ...
    REFUNDS.append({"order_id": order_id})
    return {"refund_id": f"RF-{len(REFUNDS):04d}", "order_id": order_id, "status": "refunded"}
