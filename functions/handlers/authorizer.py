"""The HTTP API's Lambda authorizer (payload 2.0, simple responses): a request's API key decides its tenant.

Keys are sent as ``x-api-key`` or ``Authorization: Bearer`` (the anthropic SDK's way). API Gateway can cache an
authorizer's answers only when every identity source is present, and a request carries one header or the other, so
answers are cached here instead: per container, by the key's digest, for ``CACHE_SECONDS`` (a revoked key stops
working within that time)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.adapters.settings import AuthorizerSettings, load
from functions.agent.keys import KEY, digest, presented_key
from functions.handlers import warmup
from functions.handlers.observability import observability

SETTINGS = AuthorizerSettings
CACHE_SECONDS = 60.0
MAX_CACHED = 10_000
obs = observability("authorizer")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer
# key digest -> (until, context or None), oldest first; only well-formed keys (a malformed one costs no read)
_answers: OrderedDict[str, tuple[float, dict[str, str] | None]] = OrderedDict()


@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # no run content in traces
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    key = presented_key(event.get("headers") or {})
    caller = _caller(key) if key and KEY.fullmatch(key) else None
    if caller is None:
        obs.emit("AuthRefused")
        logger.info("refused", has_key=key is not None, route=event.get("routeKey"))  # never the key
        return {"isAuthorized": False}
    obs.annotate(tenant=caller["tenant"])
    return {"isAuthorized": True, "context": caller}


def _caller(key: str) -> dict[str, str] | None:
    """The authorizer context of a key: its tenant and its id (who created a run or session)."""
    now = time.monotonic()
    found = _answers.get(digest(key))
    if found is not None and found[0] > now:
        return found[1]
    record = wiring.api_keys(load(SETTINGS)).authenticate(key)
    caller = {"tenant": record.tenant, "key_id": record.key_id} if record is not None else None
    while len(_answers) >= MAX_CACHED:
        _answers.popitem(last=False)  # the oldest answer goes first
    _answers[digest(key)] = (now + CACHE_SECONDS, caller)
    return caller


def forget() -> None:
    """Drop the cached answers (tests; a revocation the local stack must see at once)."""
    _answers.clear()


warmup.prepare(lambda: wiring.api_keys(load(SETTINGS)), logger)  # the key store its first request reads
