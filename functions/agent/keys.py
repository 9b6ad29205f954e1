"""API keys per tenant: created, listed and revoked by an operator; each request's key decides its tenant. Pure.

A key is ``swk_<key id>_<secret>``, shown once when created. Only its SHA-256 is stored, with the tenant, so a
leaked table holds no key. A revoked key authenticates nothing."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from functions.agent.errors import NotFoundError, RequestRejectedError
from functions.agent.ports import Clock, KeyStore

AuthMode = Literal["api_key", "jwt", "iam", "none"]  # how a deployment's callers authenticate (none: the local stack)
TENANT = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # what a tenant may be called: it starts every key of the table
KEY = re.compile(r"swk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
KEY_ID = re.compile(r"[0-9a-f]{12}")
MAX_NAME = 128


class ApiKey(BaseModel):
    """A key as stored: never the key itself."""

    model_config = ConfigDict(defer_build=True)

    key_id: str
    tenant: str
    name: str = ""
    digest: str  # SHA-256 of the whole key, hex
    created_at: str
    revoked_at: str | None = None

    def public(self) -> dict[str, str | None]:
        return {"key_id": self.key_id, "tenant": self.tenant, "name": self.name, "created_at": self.created_at,
                "revoked_at": self.revoked_at}  # fmt: skip


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT.fullmatch(tenant):
        raise RequestRejectedError(f"tenant {tenant[:80]!r}: 1 to 64 letters, digits, '_', '.' or '-'")
    return tenant


class ApiKeys:
    def __init__(self, *, store: KeyStore, clock: Clock, token: Callable[[int], str] = secrets.token_urlsafe) -> None:
        self.store, self.clock, self.token = store, clock, token

    def create(self, tenant: str, name: str = "") -> tuple[str, ApiKey]:
        """The new key (to show once) and what is stored of it."""
        check_tenant(tenant)
        if len(name) > MAX_NAME:
            raise RequestRejectedError(f"name: at most {MAX_NAME} characters")
        key_id = secrets.token_hex(6)
        key = f"swk_{key_id}_{self.token(32)[:43].ljust(43, '0')}"
        record = ApiKey(key_id=key_id, tenant=tenant, name=name, digest=digest(key), created_at=self._now())
        self.store.put_key(record)
        return key, record

    def authenticate(self, presented: str | None) -> ApiKey | None:
        """The valid, unrevoked key presented (its tenant and id); None for anything else."""
        if not presented or not KEY.fullmatch(presented):
            return None
        record = self.store.key_by_digest(digest(presented))
        if record is None or record.revoked_at is not None or not TENANT.fullmatch(record.tenant):
            return None
        return record

    def list(self, tenant: str | None = None) -> list[ApiKey]:
        return self.store.list_keys(check_tenant(tenant) if tenant is not None else None)

    def revoke(self, key_id: str) -> ApiKey:
        record = self.store.get_key(key_id) if KEY_ID.fullmatch(key_id) else None
        if record is None:
            raise NotFoundError(f"key {key_id[:40]} not found")
        if record.revoked_at is not None:
            return record
        revoked = record.model_copy(update={"revoked_at": self._now()})
        self.store.put_key(revoked)
        return revoked

    def _now(self) -> str:
        return self.clock.now().isoformat(timespec="seconds")


def presented_key(headers: dict[str, str]) -> str | None:
    """The key a request carries: ``x-api-key``, or ``Authorization: Bearer`` (what the anthropic SDK sends)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    scheme, _, value = (lowered.get("authorization") or "").partition(" ")
    bearer = value.strip() if scheme.lower() == "bearer" and value.strip() else None
    api_key = (lowered.get("x-api-key") or "").strip() or None
    if api_key and bearer and not KEY.fullmatch(api_key):  # a stray provider key beside a Stepwise one
        return bearer
    return api_key or bearer
