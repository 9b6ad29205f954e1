"""Submitting a run: validate, persist as QUEUED, enqueue. Bad input is refused before anything is written."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from functions.agent.errors import (
    EnqueueError,
    IdempotencyConflictError,
    RequestRejectedError,
    RunAlreadyExistsError,
    clip,
)
from functions.agent.lifecycle import Lifecycle
from functions.agent.models import Run, RunError, RunRequest, RunStatus
from functions.agent.ports import Clock, RunQueue, RunStore, Toolbox
from functions.agent.pricing import PriceBook
from functions.agent.routing import RoutingConfig, default_routing

if TYPE_CHECKING:
    from functions.agent.webhooks import WebhookNotifier


def request_hash(request: RunRequest) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_id_for_key(tenant: str, idempotency_key: str) -> str:
    """A run id derived from the tenant and the client's Idempotency-Key: the same key names the same run."""
    return "run_" + hashlib.sha256(f"{tenant}\x00{idempotency_key}".encode()).hexdigest()[:26]


@dataclass(frozen=True)
class Accepted:
    run: Run
    replayed: bool


@dataclass(frozen=True)
class SubmitConfig:
    default_model: str
    routing: RoutingConfig = field(default_factory=default_routing)
    providers: frozenset[str] | None = None  # the model providers the deployment calls (None: any)


class Submitter:
    def __init__(
        self,
        *,
        store: RunStore,
        queue: RunQueue,
        toolbox: Toolbox,
        prices: PriceBook,
        clock: Clock,
        new_id: Callable[[], str],
        config: SubmitConfig,
        notifier: WebhookNotifier | None = None,
    ) -> None:
        self.store, self.queue, self.toolbox, self.prices = store, queue, toolbox, prices
        self.clock, self.new_id, self.config = clock, new_id, config
        self.lifecycle = Lifecycle(store=store, clock=clock, notifier=notifier)  # a run it cannot queue ends there

    def submit(
        self, tenant: str, request: RunRequest, idempotency_key: str | None = None, *, created_by: str | None = None
    ) -> Accepted:
        """Validate, persist as QUEUED and enqueue. ``model`` may name a routing policy instead of a model.

        Raises:
            RequestRejectedError: an unknown, retired or unserved model, or an unknown tool (UnknownToolError).
            IdempotencyConflictError: the key was used with another body.
            EnqueueError: the queue refused the run.
        """
        model = request.model or self.config.default_model
        self._check_models(model, request.fallbacks or [])
        tools = self.toolbox.check(request.tools if request.tools is not None else self.toolbox.names)
        now = self.clock.now().isoformat(timespec="milliseconds")
        run = Run(
            run_id=run_id_for_key(tenant, idempotency_key) if idempotency_key else self.new_id(),
            tenant=tenant,
            status=RunStatus.QUEUED,
            input=request.input,
            model=model,
            tools=tools,
            budget=request.budget,
            metadata=request.metadata,
            max_tokens_per_call=request.max_tokens_per_call,
            cache_responses=request.response_cache,
            fallbacks=request.fallbacks,
            request_hash=request_hash(request),
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
        try:
            self.store.create_run(run)
        except RunAlreadyExistsError:
            return self._replay(run)
        try:
            self.queue.enqueue(run.key)
        except Exception as exc:
            if idempotency_key is None:  # nobody can resume it: end it with the reason
                reason = RunError(code="ENQUEUE_FAILED", message=str(exc)[:500])
                self.lifecycle.end(run.key, RunStatus.FAILED, reason)
            # With a key the run stays QUEUED: retrying the request with the same key enqueues it again.
            retry = idempotency_key is not None
            raise EnqueueError(f"the run could not be queued: {exc}", retry_with_key=retry) from exc
        return Accepted(run, replayed=False)

    def check_model(self, model: str) -> None:
        """Raises RequestRejectedError unless ``model`` (or a routing policy's models) may be used."""
        self._check_models(model, [])

    def _check_models(self, model: str, fallbacks: list[str]) -> None:
        """Every model the run may use (itself or a policy's, their downgrades and fallbacks) must be priced,
        served by this deployment and, for the models the request names (its own and its fallbacks), not past
        their end of life."""
        prices = self.prices
        usable = self.config.routing.models_of(model) + fallbacks
        unpriced = [m for m in usable if not prices.knows(m)]
        priced = [m for m in usable if m not in unpriced]
        today = self.clock.now().date().isoformat()
        for named in [model, *fallbacks]:
            if named in priced and (eol := prices.price(named).end_of_life) and eol < today:
                what = "model" if named == model else "fallback model"
                raise RequestRejectedError(f"{what} {clip(named)!r} reached end-of-life on {eol}")
        providers = self.config.providers
        unserved = [m for m in priced if providers is not None and prices.price(m).provider not in providers]
        if unserved:
            raise RequestRejectedError(
                f"model {clip(unserved[0])!r} is served by {prices.price(unserved[0]).provider}, which this deployment "
                "does not call (deploy with -c bedrock_fallback=true)"
            )
        if unpriced:
            what = "model" if unpriced == [model] else f"routing policy {clip(model)!r} uses model"
            raise RequestRejectedError(
                f"unknown {what} {', '.join(map(repr, unpriced))}: no price is configured for it"
            )

    def _replay(self, run: Run) -> Accepted:
        """The same Idempotency-Key again: the same run, re-enqueued while it is still QUEUED."""
        existing = self.store.get_run(run.key)
        if existing is None:  # pragma: no cover - a put that failed on existence cannot read nothing back
            raise RunAlreadyExistsError(run.run_id)
        if existing.request_hash != run.request_hash:
            raise IdempotencyConflictError("Idempotency-Key was already used with a different request body")
        if existing.status is RunStatus.QUEUED:
            # The first attempt may have died between the write and the send; intake is idempotent.
            try:
                self.queue.enqueue(existing.key)
            except Exception as exc:
                raise EnqueueError(f"the run could not be queued: {exc}", retry_with_key=True) from exc
        return Accepted(existing, replayed=True)
