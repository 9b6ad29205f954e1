"""Which tenant an API request belongs to, and who sent it (every route of both APIs asks this one place).

The deployment chooses how callers authenticate (CDK context ``auth``), and API Gateway checks them before the
api function runs; the tenant comes from what it vouched for, never from anything the client wrote itself:

* ``api_key`` (the default): the stack's Lambda authorizer put the key's tenant and id in the request context;
* ``jwt``: API Gateway's JWT authorizer validated the token of an OIDC issuer; the tenant is its claim
  ``tenant_claim`` (Cognito's ``custom:tenant``, say), the caller its ``sub``;
* ``iam``: SigV4-signed by an IAM principal named in the deployment's allow-list, which maps it to its tenant
  (an assumed role by its role's ARN, a user by its own); a principal not in the list has no tenant.

A request without a valid tenant is refused (401), never given a default. The local stack without
``--require-keys`` (``none``) serves everyone as its default tenant."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from functions.agent.keys import KEY_ID, TENANT, AuthMode

if TYPE_CHECKING:
    from functions.adapters.settings import ApiSettings

# arn:aws:iam::<account>:role/<path/>name or :user/<path/>name (what the allow-list names)
PRINCIPAL = re.compile(r"arn:(aws[a-z-]*):iam::(\d{12}):(role|user)/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})", re.ASCII)
# what IAM reports for a signed request by an assumed role: arn:aws:sts::<account>:assumed-role/<name>/<session>
ASSUMED_ROLE = re.compile(r"arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([\w+=,.@-]{1,64})/[\w+=,.@-]{1,64}", re.ASCII)
CLAIM = re.compile(r"[A-Za-z0-9_:.\-/]{1,128}")
CALLER = re.compile(r"[\x21-\x7e]{1,256}")  # a JWT's sub as recorded in created_by: printable ASCII, bounded


class UnauthenticatedError(Exception):
    """The request carries no tenant the deployment's authorizer vouched for."""


class Auth(BaseModel):
    """How the deployment authenticates its callers (CDK context; validated at synth and in each function)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    mode: AuthMode = "api_key"
    tenant_claim: str = Field(default="tenant", pattern=f"^{CLAIM.pattern}$")
    iam_tenants: Mapping[str, str] = Field(default_factory=dict)  # principal ARN -> tenant

    @field_validator("iam_tenants")
    @classmethod
    def _principals(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        for principal, tenant in value.items():
            if not PRINCIPAL.fullmatch(principal):
                raise ValueError(
                    f"{principal[:120]!r} is not an IAM role or user ARN (arn:aws:iam::<account>:role/<name>)"
                )
            if not isinstance(tenant, str) or not TENANT.fullmatch(tenant):
                raise ValueError(f"the tenant of {principal}: 1 to 64 letters, digits, '_', '.' or '-'")
        return dict(value)

    def principal_tenant(self, user_arn: str) -> str | None:
        """The tenant an IAM caller is mapped to: an assumed role by its role, a user by its ARN; else None."""
        assumed = ASSUMED_ROLE.fullmatch(user_arn)
        for principal, tenant in self.iam_tenants.items():
            listed = PRINCIPAL.fullmatch(principal)
            assert listed is not None  # validated
            partition, account, kind, name = listed.groups()
            if assumed is not None and kind == "role" and assumed.groups() == (partition, account, name):
                return tenant
            if assumed is None and kind == "user" and principal == user_arn:
                return tenant
        return None


@cache
def deployment_auth(settings: ApiSettings) -> Auth:
    """The function's ``Auth``, from the settings the stack gave it (validated at synth too)."""
    tenants = json.loads(settings.iam_tenants) if settings.iam_tenants else {}
    return Auth(mode=settings.auth, tenant_claim=settings.tenant_claim, iam_tenants=tenants)


def _authorizer(raw_event: dict[str, Any]) -> dict[str, Any]:
    found = raw_event.get("requestContext", {}).get("authorizer") or {}
    return found if isinstance(found, dict) else {}


def _jwt_claims(raw_event: dict[str, Any]) -> dict[str, Any]:
    claims = (_authorizer(raw_event).get("jwt") or {}).get("claims") or {}
    return claims if isinstance(claims, dict) else {}


def _iam_arn(raw_event: dict[str, Any]) -> str | None:
    arn = (_authorizer(raw_event).get("iam") or {}).get("userArn")
    return arn if isinstance(arn, str) else None


def request_caller(raw_event: dict[str, Any], auth: Auth | None = None) -> str | None:
    """Who is calling, as runs and sessions record it (``created_by``): the API key's id, the JWT's ``sub``, or
    the IAM principal's ARN; None when the request says nothing valid."""
    mode = (auth or Auth()).mode
    if mode == "jwt":
        sub = _jwt_claims(raw_event).get("sub")
        return sub if isinstance(sub, str) and CALLER.fullmatch(sub) else None
    if mode == "iam":
        arn = _iam_arn(raw_event)
        return arn if arn is not None and CALLER.fullmatch(arn) else None
    key_id = (_authorizer(raw_event).get("lambda") or {}).get("key_id")
    return key_id if isinstance(key_id, str) and KEY_ID.fullmatch(key_id) else None


def request_tenant(raw_event: dict[str, Any], default: str, *, auth: Auth | AuthMode = "api_key") -> str:
    """The tenant the deployment's authorizer vouched for (validated); with ``none``, the default when there is
    none. Raises UnauthenticatedError."""
    auth = auth if isinstance(auth, Auth) else Auth(mode=auth)
    if auth.mode == "jwt":
        claims = _jwt_claims(raw_event)
        if auth.tenant_claim not in claims:
            raise UnauthenticatedError(f"the token has no {auth.tenant_claim!r} claim naming its tenant")
        return _valid(claims[auth.tenant_claim], f"the token's {auth.tenant_claim!r} claim")
    if auth.mode == "iam":
        arn = _iam_arn(raw_event)
        tenant = auth.principal_tenant(arn) if arn is not None else None
        if tenant is None:
            raise UnauthenticatedError("this IAM principal is not mapped to a tenant (CDK context iam_tenants)")
        return tenant
    claimed = (_authorizer(raw_event).get("lambda") or {}).get("tenant")
    if claimed is not None:
        return _valid(claimed, "the request's tenant")
    if auth.mode == "none":
        return default
    raise UnauthenticatedError("no API key: send x-api-key or Authorization: Bearer <key>")


def _valid(claimed: object, what: str) -> str:
    if not isinstance(claimed, str) or not TENANT.fullmatch(claimed):
        raise UnauthenticatedError(f"{what} is not a valid tenant (1 to 64 letters, digits, '_', '.' or '-')")
    return claimed
