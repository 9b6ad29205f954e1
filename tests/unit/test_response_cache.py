"""Exact-match response cache: the key, and a hit served at no cost without a model call."""

from __future__ import annotations

from functions.agent.caching import place_cache_breakpoints
from functions.agent.models import ModelRequest, ModelResponse, RunKey, RunRequest, StepRef, Usage
from functions.agent.pricing import default_price_book
from functions.agent.response_cache import PROVIDER, cache_key, cacheable
from functions.agent.step import StepOutcome
from tests.fakes import core
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.model import ScriptedModel, text_response

PRICES = default_price_book()
REQUEST = ModelRequest(
    model="claude-haiku-4-5",
    system="be brief",
    messages=[{"role": "user", "content": "What is 6 * 7?"}],
    tools=[{"name": "calculator", "description": "d", "input_schema": {"type": "object"}}],
    max_tokens=1024,
)


class MemoryCache:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], ModelResponse] = {}

    def get(self, tenant: str, key: str) -> ModelResponse | None:
        return self.items.get((tenant, key))

    def put(self, tenant: str, key: str, response: ModelResponse) -> None:
        self.items[(tenant, key)] = response


def test_the_key_ignores_prompt_cache_markers_but_not_the_request() -> None:
    assert cache_key(REQUEST) == cache_key(place_cache_breakpoints(REQUEST, ttl="1h"))
    for change in (
        {"model": "claude-sonnet-4-5"},
        {"system": "be verbose"},
        {"max_tokens": 512},
        {"tools": []},
        {"messages": [{"role": "user", "content": "What is 6 * 8?"}]},
    ):
        assert cache_key(REQUEST.model_copy(update=change)) != cache_key(REQUEST), change


def test_only_finished_answers_and_tool_requests_are_cached() -> None:
    assert cacheable(text_response("x"))
    assert not cacheable(text_response("x", stop_reason="max_tokens"))
    assert not cacheable(text_response("x", stop_reason="refusal"))


def run_with_cache(
    store: InMemoryRunStore, cache: MemoryCache, model: ScriptedModel, tenant: str, opt_in: bool | None
) -> StepOutcome:
    submitter = core.submitter(store, new_id=lambda: f"run_{len(store.runs):026d}")
    run = submitter.submit(tenant, RunRequest(input="Say hello.", response_cache=opt_in)).run
    return core.runner(store, model, response_cache=cache).run(StepRef(run.key, 0))


def test_a_hit_is_served_without_a_model_call_and_recorded_at_no_cost() -> None:
    store, cache = InMemoryRunStore(), MemoryCache()
    model = ScriptedModel(text_response("hello", usage=Usage(input_tokens=500, output_tokens=5)))
    first = run_with_cache(store, cache, model, "acme", True)
    second = run_with_cache(store, cache, model, "acme", True)
    assert len(model.requests) == 1
    assert first.record is not None and first.record.cost_usd > 0
    assert second.record is not None and second.record.provider == PROVIDER
    assert second.record.cost_usd == 0 and second.record.usage == Usage()
    assert store.get_run(RunKey("acme", second.ref.key.run_id)).output == "hello"  # type: ignore[union-attr]


def test_the_cache_is_per_tenant_and_opt_in() -> None:
    store, cache = InMemoryRunStore(), MemoryCache()
    model = ScriptedModel(*[text_response("hello") for _ in range(3)])
    run_with_cache(store, cache, model, "acme", True)
    run_with_cache(store, cache, model, "globex", True)  # another tenant never sees acme's answers
    run_with_cache(store, cache, model, "acme", None)  # not opted in (deployment default: off)
    assert len(model.requests) == 3
