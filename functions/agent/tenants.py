"""Per-tenant limits an operator sets (a daily budget, a request rate) over the deployment's defaults. Pure.

An operator sets them at run time (`stepwise tenants set`); a tenant without its own takes the deployment's
(CDK context ``tenant_daily_budget_usd``, ``tenant_requests_per_minute``). Functions read a tenant's limits
through ``LimitsCache``: a change reaches every warm container within ``LIMITS_CACHE_SECONDS``.

The request rate is a fixed window of one UTC minute per tenant, counted in the table by a conditional
increment: at most ``requests_per_minute`` requests are admitted in a minute (a client can fit twice that
into the two seconds around a minute's boundary, as with any fixed window)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions.agent.errors import NotFoundError, RequestRejectedError
from functions.agent.keys import check_tenant
from functions.agent.ledger import BudgetLimits
from functions.agent.ports import Clock, TenantStore
from functions.agent.requests import problems

MAX_DAILY_USD = Decimal(1_000_000)  # what the run budgets allow too: a number DynamoDB stores exactly
MAX_REQUESTS_PER_MINUTE = 1_000_000
LIMITS_CACHE_SECONDS = 30.0
WINDOW_SECONDS = 60


class TenantLimits(BaseModel):
    """What an operator set for one tenant; a limit left None is the deployment's."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    tenant: str
    daily_usd: Decimal | None = Field(default=None, gt=0, le=MAX_DAILY_USD, decimal_places=6)
    requests_per_minute: int | None = Field(default=None, ge=1, le=MAX_REQUESTS_PER_MINUTE, strict=True)
    updated_at: str = ""

    def public(self) -> dict[str, object]:
        return {
            "tenant": self.tenant,
            "daily_usd": float(self.daily_usd) if self.daily_usd is not None else None,
            "requests_per_minute": self.requests_per_minute,
            "updated_at": self.updated_at,
        }


def budget_limits(defaults: BudgetLimits, own: TenantLimits | None) -> BudgetLimits:
    """The budgets a tenant's run reserves against: its own daily budget over the deployment's."""
    if own is None or own.daily_usd is None:
        return defaults
    return defaults.model_copy(update={"tenant_daily_usd": own.daily_usd})


def request_limit(default: int | None, own: TenantLimits | None) -> int | None:
    return own.requests_per_minute if own is not None and own.requests_per_minute is not None else default


class Tenants:
    """An operator's use case: set, show, list and clear tenants' limits."""

    def __init__(self, *, store: TenantStore, clock: Clock) -> None:
        self.store, self.clock = store, clock

    def set(self, tenant: str, *, daily_usd: object = None, requests_per_minute: object = None) -> TenantLimits:
        """Set the limits given (the others stay as they were). Raises RequestRejectedError naming a bad one."""
        check_tenant(tenant)
        if daily_usd is None and requests_per_minute is None:
            raise RequestRejectedError("give daily_usd, requests_per_minute or both")
        current = self.store.get_limits(tenant)
        values: dict[str, object] = {
            "daily_usd": current.daily_usd if current else None,
            "requests_per_minute": current.requests_per_minute if current else None,
        }
        if daily_usd is not None:
            values["daily_usd"] = daily_usd
        if requests_per_minute is not None:
            values["requests_per_minute"] = requests_per_minute
        try:
            limits = TenantLimits.model_validate({"tenant": tenant, **values, "updated_at": self._now()})
        except ValidationError as exc:
            raise RequestRejectedError(problems(exc)) from exc
        self.store.put_limits(limits)
        return limits

    def get(self, tenant: str) -> TenantLimits:
        found = self.store.get_limits(check_tenant(tenant))
        if found is None:
            raise NotFoundError(f"tenant {tenant} has no limits of its own (it has the deployment's)")
        return found

    def list(self) -> list[TenantLimits]:
        return sorted(self.store.list_limits(), key=lambda limits: limits.tenant)

    def clear(self, tenant: str) -> TenantLimits:
        """Remove a tenant's own limits (it gets the deployment's again)."""
        found = self.get(tenant)
        self.store.delete_limits(tenant)
        return found

    def _now(self) -> str:
        return self.clock.now().isoformat(timespec="seconds")


class LimitsCache:
    """A tenant's limits, read at most once per ``ttl`` seconds per container (``None``: it has none)."""

    def __init__(
        self, store: TenantStore, *, ttl: float = LIMITS_CACHE_SECONDS, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.store, self.ttl, self.monotonic = store, ttl, monotonic
        self._found: dict[str, tuple[float, TenantLimits | None]] = {}

    def limits(self, tenant: str) -> TenantLimits | None:
        now = self.monotonic()
        cached = self._found.get(tenant)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = self.store.get_limits(tenant)
        if len(self._found) > 10_000:
            self._found.clear()
        self._found[tenant] = (now + self.ttl, found)
        return found


@dataclass(frozen=True)
class Admission:
    admitted: bool
    limit: int | None = None
    retry_after_seconds: int = 0

    @property
    def message(self) -> str:
        return (
            f"this tenant's limit of {self.limit} requests per minute is reached; "
            f"retry after {self.retry_after_seconds} s"
        )


class RateLimiter:
    """A tenant's requests per minute: its own limit, else the deployment's, else none."""

    def __init__(self, *, store: TenantStore, limits: LimitsCache, clock: Clock, default: int | None) -> None:
        self.store, self.limits, self.clock, self.default = store, limits, clock, default

    def admit(self, tenant: str) -> Admission:
        limit = request_limit(self.default, self.limits.limits(tenant))
        if limit is None:
            return Admission(True)
        now = self.clock.now()
        window = now.replace(second=0, microsecond=0)
        expires = window + timedelta(seconds=2 * WINDOW_SECONDS)
        if self.store.count_request(tenant, window.strftime("%Y-%m-%dT%H:%M"), limit, math.ceil(expires.timestamp())):
            return Admission(True, limit)
        return Admission(False, limit, _until_next_window(now, window))


def _until_next_window(now: datetime, window: datetime) -> int:
    return max(1, math.ceil((window + timedelta(seconds=WINDOW_SECONDS) - now).total_seconds()))
