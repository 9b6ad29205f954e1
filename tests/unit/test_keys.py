"""API keys (functions/agent/keys.py): shown once, kept as digests, a revoked or malformed key authenticates
nothing, and a tenant's name is checked."""

from __future__ import annotations

import pytest

from functions.agent.errors import NotFoundError, RequestRejectedError
from functions.agent.keys import KEY, ApiKey, ApiKeys, digest, presented_key
from tests.fakes.clock import FixedClock


class MemoryKeys:
    def __init__(self) -> None:
        self.by_digest: dict[str, ApiKey] = {}
        self.by_id: dict[str, ApiKey] = {}

    def put_key(self, key: ApiKey) -> None:
        self.by_digest[key.digest], self.by_id[key.key_id] = key, key

    def key_by_digest(self, digest: str) -> ApiKey | None:
        return self.by_digest.get(digest)

    def get_key(self, key_id: str) -> ApiKey | None:
        return self.by_id.get(key_id)

    def list_keys(self, tenant: str | None) -> list[ApiKey]:
        return [key for key in self.by_id.values() if tenant in (None, key.tenant)]


@pytest.fixture
def keys() -> ApiKeys:
    return ApiKeys(store=MemoryKeys(), clock=FixedClock())


def test_a_new_key_is_shown_once_and_only_its_digest_is_kept(keys: ApiKeys) -> None:
    key, record = keys.create("acme", "ci")

    assert KEY.fullmatch(key) and record.digest == digest(key) and record.tenant == "acme"
    stored = keys.store.by_id[record.key_id]  # type: ignore[attr-defined]
    assert key not in stored.model_dump_json()
    assert keys.authenticate(key) == record


def test_a_revoked_malformed_or_unknown_key_authenticates_nothing(keys: ApiKeys) -> None:
    key, record = keys.create("acme")
    other, _ = keys.create("globex")

    keys.revoke(record.key_id)

    assert keys.authenticate(key) is None
    assert keys.authenticate(other) is not None and keys.authenticate(other).tenant == "globex"  # type: ignore[union-attr]
    for presented in (None, "", "sk-ant-api03-x", key[:-1], key + "x", f"swk_{'0' * 12}_{'a' * 43}"):
        assert keys.authenticate(presented) is None
    again = keys.revoke(record.key_id)  # revoking again changes nothing
    assert again.revoked_at is not None and again == keys.store.by_id[record.key_id]  # type: ignore[attr-defined]


@pytest.mark.parametrize("tenant", ["", "a" * 65, "acme corp", "acme/eu", "ächme", "T#x"])
def test_a_tenant_name_that_could_not_start_a_key_is_refused(keys: ApiKeys, tenant: str) -> None:
    with pytest.raises(RequestRejectedError, match="1 to 64 letters"):
        keys.create(tenant)
    assert keys.store.by_id == {}  # type: ignore[attr-defined]


def test_revoking_an_unknown_key_is_not_found(keys: ApiKeys) -> None:
    with pytest.raises(NotFoundError):
        keys.revoke("0123456789ab")
    with pytest.raises(NotFoundError):
        keys.revoke("../../x")


def test_keys_are_listed_per_tenant_without_the_keys(keys: ApiKeys) -> None:
    keys.create("acme", "one")
    keys.create("globex", "two")
    assert [(k.tenant, k.name) for k in keys.list("acme")] == [("acme", "one")]
    assert len(keys.list()) == 2
    assert all("digest" not in k.public() for k in keys.list())


@pytest.mark.parametrize(
    ("headers", "presented"),
    [
        ({"x-api-key": "swk_k"}, "swk_k"),
        ({"X-Api-Key": " swk_k "}, "swk_k"),
        ({"authorization": "Bearer swk_k"}, "swk_k"),  # what the anthropic SDK sends
        ({"Authorization": "bearer swk_k"}, "swk_k"),
        ({"authorization": "Basic abc"}, None),
        ({"authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_the_key_a_request_carries(headers: dict[str, str], presented: str | None) -> None:
    assert presented_key(headers) == presented
