"""Hard budgets: worst-case cost of a call, the limits that apply to it, and readable refusals."""

from __future__ import annotations

import json
import math
from decimal import Decimal

from pydantic import BaseModel

from functions.agent.models import ModelRequest, Reservation

__all__ = ["BudgetLimits", "Reservation", "estimate_prompt_tokens", "usd"]

# A deliberate over-estimate: English runs ~4 bytes per token, code and CJK fewer. Reserving too much only
# narrows concurrency near a limit; reserving too little could let concurrent calls overspend it.
BYTES_PER_TOKEN_ESTIMATE = 3
TOOL_USE_OVERHEAD_TOKENS = 500  # the tool-use system prompt the API adds when tools are given (a few hundred)
PER_MESSAGE_OVERHEAD_TOKENS = 10


class BudgetLimits(BaseModel):
    """Deploy-time daily limits in USD (None: no limit). Days are UTC."""

    tenant_daily_usd: Decimal | None = None
    global_daily_usd: Decimal | None = None


def estimate_prompt_tokens(request: ModelRequest) -> int:
    prompt = {"system": request.system, "tools": request.tools, "messages": request.messages}
    text = math.ceil(len(json.dumps(prompt, ensure_ascii=False).encode()) / BYTES_PER_TOKEN_ESTIMATE)
    overhead = (TOOL_USE_OVERHEAD_TOKENS if request.tools else 0) + PER_MESSAGE_OVERHEAD_TOKENS * len(request.messages)
    return text + overhead


def usd(value: Decimal) -> str:
    return f"${value:.6f}".rstrip("0").rstrip(".") if value else "$0"
