"""Per-tenant limits (functions/agent/tenants.py): an operator's daily budget and request rate over the
deployment's, validated, cached for a bounded time, and a rate that admits exactly its limit per minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from functions.agent.errors import NotFoundError, RequestRejectedError
from functions.agent.ledger import BudgetLimits
from functions.agent.tenants import LimitsCache, RateLimiter, TenantLimits, Tenants, budget_limits, request_limit
from tests.fakes.clock import FixedClock
from tests.fakes.tenants import MemoryTenants


@pytest.fixture
def tenants() -> Tenants:
    return Tenants(store=MemoryTenants(), clock=FixedClock())


def test_setting_one_limit_keeps_the_other_and_clearing_restores_the_defaults(tenants: Tenants) -> None:
    tenants.set("acme", daily_usd="12.5", requests_per_minute=100)
    updated = tenants.set("acme", requests_per_minute=20)

    assert updated.daily_usd == Decimal("12.5") and updated.requests_per_minute == 20
    assert tenants.get("acme") == updated and [t.tenant for t in tenants.list()] == ["acme"]
    assert tenants.clear("acme") == updated
    with pytest.raises(NotFoundError, match="deployment's"):
        tenants.get("acme")
    with pytest.raises(NotFoundError):
        tenants.clear("acme")


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"daily_usd": 0}, "daily_usd"),
        ({"daily_usd": "-1"}, "daily_usd"),
        ({"daily_usd": "1000001"}, "daily_usd"),
        ({"daily_usd": "0.0000001"}, "daily_usd"),
        ({"daily_usd": "lots"}, "daily_usd"),
        ({"daily_usd": "NaN"}, "daily_usd"),
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"requests_per_minute": True}, "requests_per_minute"),
        ({"requests_per_minute": 1.5}, "requests_per_minute"),
        ({"requests_per_minute": 10**7}, "requests_per_minute"),
        ({}, "daily_usd, requests_per_minute or both"),
    ],
)
def test_a_bad_limit_is_refused_naming_it_and_nothing_is_stored(
    tenants: Tenants, fields: dict[str, object], names: str
) -> None:
    with pytest.raises(RequestRejectedError, match=names):
        tenants.set("acme", **fields)  # type: ignore[arg-type]
    assert tenants.list() == []


@pytest.mark.parametrize("tenant", ["", "a" * 65, "acme corp", "T#x"])
def test_a_tenant_name_that_cannot_be_a_tenant_is_refused(tenants: Tenants, tenant: str) -> None:
    with pytest.raises(RequestRejectedError, match="letters, digits"):
        tenants.set(tenant, daily_usd=1)


def test_a_tenants_own_daily_budget_replaces_the_deployments_and_only_that() -> None:
    defaults = BudgetLimits(tenant_daily_usd=Decimal(20), global_daily_usd=Decimal(200))
    own = TenantLimits(tenant="acme", daily_usd=Decimal(5))

    assert budget_limits(defaults, own) == BudgetLimits(tenant_daily_usd=Decimal(5), global_daily_usd=Decimal(200))
    assert budget_limits(defaults, None) == defaults
    assert budget_limits(defaults, TenantLimits(tenant="acme", requests_per_minute=5)) == defaults
    assert request_limit(600, TenantLimits(tenant="acme", requests_per_minute=5)) == 5
    assert request_limit(600, TenantLimits(tenant="acme", daily_usd=Decimal(1))) == 600
    assert request_limit(None, None) is None


def test_limits_are_read_once_per_cache_time_per_tenant() -> None:
    store, now = MemoryTenants(), [0.0]
    cache = LimitsCache(store, ttl=30, monotonic=lambda: now[0])
    store.put_limits(TenantLimits(tenant="acme", daily_usd=Decimal(1)))

    assert cache.limits("acme") is not None and cache.limits("globex") is None
    store.put_limits(TenantLimits(tenant="acme", daily_usd=Decimal(2)))
    assert cache.limits("acme").daily_usd == 1 and store.reads == 2  # type: ignore[union-attr]
    now[0] = 30.5  # the change reaches the container once the cached answer is older than the cache time
    assert cache.limits("acme").daily_usd == 2 and store.reads == 3  # type: ignore[union-attr]


def test_the_rate_admits_exactly_its_limit_per_minute_and_says_when_to_retry() -> None:
    store = MemoryTenants()
    clock = FixedClock(start=datetime(2026, 12, 2, 9, 0, 15, tzinfo=UTC), tick=timedelta(0))
    limiter = RateLimiter(store=store, limits=LimitsCache(store), clock=clock, default=3)

    admitted = [limiter.admit("acme").admitted for _ in range(5)]

    assert admitted == [True, True, True, False, False]
    refused = limiter.admit("acme")
    assert refused.limit == 3 and refused.retry_after_seconds == 45 and "3 requests per minute" in refused.message
    assert limiter.admit("globex").admitted  # another tenant's window is its own
    clock.current = datetime(2026, 12, 2, 9, 1, 0, tzinfo=UTC)  # the next minute
    assert limiter.admit("acme").admitted


def test_a_tenants_own_rate_beats_the_default_and_no_limit_counts_nothing() -> None:
    store = MemoryTenants()
    store.put_limits(TenantLimits(tenant="acme", requests_per_minute=1))
    clock = FixedClock(tick=timedelta(0))

    limited = RateLimiter(store=store, limits=LimitsCache(store), clock=clock, default=100)
    assert [limited.admit("acme").admitted for _ in range(2)] == [True, False]
    unlimited = RateLimiter(store=store, limits=LimitsCache(store), clock=clock, default=None)
    assert all(unlimited.admit("globex").admitted for _ in range(200))
    assert not [key for key in store.counts if key[0] == "globex"]  # nothing counted, in any window
