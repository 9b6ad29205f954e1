"""Lambda tools of a deployer's, as the local stack runs them (``LocalStack(lambda_tools=...)``): each records its
invocations, and can be made to die mid-call the way a Lambda does (the error type Step Functions sees)."""

from __future__ import annotations

from typing import Any

invocations: dict[str, list[dict[str, Any]]] = {"refund_order": [], "exchange_rate": []}
die_after_work: set[str] = set()  # tools whose next invocation dies after doing its work


class Died(BaseException):
    """The function's runtime died (a timeout): Step Functions sees Sandbox.Timedout."""

    lambda_error_type = "Sandbox.Timedout"


def refund_order(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Side effects: refunds money (not idempotent)."""
    invocations["refund_order"].append(event)
    if "refund_order" in die_after_work:
        die_after_work.discard("refund_order")
        raise Died("the refund was made, then the function timed out")
    return {"refund_id": f"RF-{len(invocations['refund_order'])}", "order_id": event["order_id"]}


def exchange_rate(event: dict[str, Any], context: Any) -> str:
    """Read-only (idempotent)."""
    invocations["exchange_rate"].append(event)
    if "exchange_rate" in die_after_work:
        die_after_work.discard("exchange_rate")
        raise Died("looked the rate up, then the function timed out")
    return f"1 {event['from']} = 1.08 {event['to']}"
