"""API Gateway's JWT authorizer, emulated for the local stack (`stepwise local --jwt-issuer ... --jwt-jwks FILE`).

As deployed: the token comes from ``Authorization`` (a ``Bearer`` prefix is dropped), its signature must verify
with a key of the issuer's JWKS (by ``kid``), ``iss`` must be the issuer, ``aud`` (or, as in Cognito's access
tokens, ``client_id``) one of the audiences, and ``exp``/``nbf`` must hold; a request that fails is 401
``{"message": "Unauthorized"}`` before any function runs. The claims reach the api function as API Gateway
passes them: strings, a list as ``[a b]``. Locally the JWKS is a file (nothing is fetched from the issuer)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

ALGORITHMS = ("RS256", "RS384", "RS512")  # API Gateway's JWT authorizer supports RSA-based algorithms only


@dataclass(frozen=True)
class LocalJwt:
    issuer: str
    audience: tuple[str, ...]
    jwks: dict[str, Any] = field(repr=False)
    tenant_claim: str = "tenant"

    @classmethod
    def from_file(cls, jwks: str | Path, *, issuer: str, audience: list[str], tenant_claim: str = "tenant") -> LocalJwt:
        """Raises ValueError naming what is wrong with the settings or the JWKS file."""
        if not issuer or not audience:
            raise ValueError("the local JWT authorizer needs --jwt-issuer and at least one --jwt-audience")
        try:
            keys = json.loads(Path(jwks).read_text())
            jwt.PyJWKSet.from_dict(keys)
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ValueError(f"--jwt-jwks {jwks}: not a readable JWKS ({exc})") from exc
        return cls(issuer=issuer, audience=tuple(audience), jwks=keys, tenant_claim=tenant_claim)

    def claims(self, headers: dict[str, str]) -> dict[str, str] | None:
        """The token's claims as API Gateway passes them on, or None: the request is refused (401)."""
        presented = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        token = presented[7:] if presented[:7].lower() == "bearer " else presented
        if not token:
            return None
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            if not kid:  # API Gateway finds the key by the token's kid: a token without one is refused
                return None
            found = [key for key in jwt.PyJWKSet.from_dict(self.jwks).keys if key.key_id == kid]
            if len(found) != 1:
                return None
            decoded = jwt.decode(
                token,
                found[0].key,
                algorithms=list(ALGORITHMS),
                issuer=self.issuer,
                options={"require": ["exp", "iss"], "verify_aud": False},
                leeway=0,
            )
        except jwt.PyJWTError:
            return None
        audiences = decoded.get("aud", decoded.get("client_id"))
        audiences = audiences if isinstance(audiences, list) else [audiences]
        if not any(aud in self.audience for aud in audiences):
            return None
        return {name: _as_api_gateway_does(value) for name, value in decoded.items() if value is not None}


def _as_api_gateway_does(value: Any) -> str:
    if isinstance(value, list):
        return "[" + " ".join(str(item) for item in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict) else str(value)
