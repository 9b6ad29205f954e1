"""JWTs decide the tenant (`stepwise local --jwt-issuer ... --jwt-jwks FILE`, as a deployment with auth=jwt):
the official anthropic SDK authenticates with an OIDC token (``auth_token``), each token's tenant claim scopes
what it sees, and a token API Gateway would refuse never reaches a function."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from stepwise import cli
from stepwise.local.jwt import LocalJwt
from stepwise.local.stack import LocalStack

pytestmark = pytest.mark.e2e
ISSUER = "https://issuer.example.com/tenants"
AUDIENCE = "stepwise-client"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    public = json.loads(RSAAlgorithm.to_jwk(KEY.public_key()))
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps({"keys": [{**public, "kid": "k1", "alg": "RS256", "use": "sig"}]}))
    return path


@pytest.fixture(scope="module")
def stack(template: dict[str, Any], jwks: Path) -> Iterator[LocalStack]:
    local_jwt = LocalJwt.from_file(jwks, issuer=ISSUER, audience=[AUDIENCE], tenant_claim="org")
    with LocalStack(port=0, template=template, jwt=local_jwt) as local:
        yield local


def token(key: Any = KEY, kid: str | None = "k1", null: tuple[str, ...] = (), **claims: Any) -> str:
    """A token of the issuer; a claim given as None is left out, one named in ``null`` is sent as JSON null."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "org": "acme", "iat": now, "exp": now + 600, **claims}
    body = {k: v for k, v in body.items() if v is not None} | dict.fromkeys(null)
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid} if kid else None)


def sdk(bearer: str, stack: LocalStack) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=None, auth_token=bearer, base_url=stack.url, max_retries=0)


def test_the_sdk_authenticates_with_a_jwt_and_its_tenant_claim_scopes_everything(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    acme, globex = sdk(token(), stack), sdk(token(org="globex", sub="bob"), stack)

    agent = acme.beta.agents.create(name="acme-agent", model="claude-haiku-4-5")
    session = acme.beta.sessions.create(agent=agent.id, environment_id="env")

    assert acme.beta.sessions.retrieve(session.id).model_extra["created_by"] == "alice"  # the token's sub
    for attempt in (lambda: globex.beta.agents.retrieve(agent.id), lambda: globex.beta.sessions.retrieve(session.id)):
        with pytest.raises(anthropic.NotFoundError):
            attempt()
    assert [a.id for a in globex.beta.agents.list().data] == [] and [a.id for a in acme.beta.agents.list().data]
    # Cognito's access tokens name the client as client_id instead of aud
    cognito = sdk(token(aud=None, client_id=AUDIENCE), stack)
    assert [a.id for a in cognito.beta.agents.list().data] == [agent.id]


@pytest.mark.parametrize(
    "bearer",
    [
        token(exp=int(time.time()) - 10),  # expired
        token(aud="someone-else"),
        token(iss="https://evil.example.com/"),
        token(key=OTHER_KEY),  # signed by a key the issuer does not publish
        token(kid="k2"),
        token(kid=None),  # API Gateway looks the key up by kid
        token()[:-4] + "AAAA",  # tampered
        "not-a-jwt",
    ],
    ids=["expired", "audience", "issuer", "other-key", "unknown-kid", "no-kid", "tampered", "garbage"],
)
def test_a_token_api_gateway_would_refuse_is_401_before_any_function(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, bearer: str
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        sdk(bearer, stack).beta.agents.list()
    assert refused.value.body == {"message": "Unauthorized"}


def test_a_valid_token_without_a_valid_tenant_claim_is_refused_by_stepwise(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    for claims in ({"org": None}, {"org": "acme corp"}, {"org": ["acme", "globex"]}):
        with pytest.raises(anthropic.AuthenticationError) as refused:
            sdk(token(**claims), stack).beta.agents.list()
        assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        assert "'org'" in refused.value.message
    with pytest.raises(anthropic.AuthenticationError, match="no 'org' claim"):  # a null claim is no claim
        sdk(token(null=("org",)), stack).beta.agents.list()


def test_the_cli_refuses_a_half_configured_local_jwt(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{}")
    assert cli.main(["local", "--port", "0", "--jwt-issuer", ISSUER, "--jwt-jwks", str(tmp_path / "bad.json")]) == 2
    assert "--jwt-audience" in capsys.readouterr().out
    argv = ["local", "--port", "0", "--jwt-issuer", ISSUER, "--jwt-audience", "a", "--jwt-jwks", str(tmp_path / "x")]
    assert cli.main(argv) == 2
    assert "not a readable JWKS" in capsys.readouterr().out.replace("\n", " ")
