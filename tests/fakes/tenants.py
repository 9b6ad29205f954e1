"""TenantStore in memory: what the DynamoDB adapter stores, no rules (those are functions/agent/tenants.py's)."""

from __future__ import annotations

from functions.agent.tenants import TenantLimits


class MemoryTenants:
    def __init__(self) -> None:
        self.limits: dict[str, TenantLimits] = {}
        self.counts: dict[tuple[str, str], int] = {}
        self.reads = 0

    def get_limits(self, tenant: str) -> TenantLimits | None:
        self.reads += 1
        return self.limits.get(tenant)

    def put_limits(self, limits: TenantLimits) -> None:
        self.limits[limits.tenant] = limits

    def delete_limits(self, tenant: str) -> None:
        self.limits.pop(tenant, None)

    def list_limits(self) -> list[TenantLimits]:
        return list(self.limits.values())

    def count_request(self, tenant: str, window: str, limit: int, expires_at: int) -> bool:
        counted = self.counts.get((tenant, window), 0)
        if counted >= limit:
            return False
        self.counts[tenant, window] = counted + 1
        return True
