"""ModelClient on the Anthropic Messages API through the official SDK.

The SDK reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL itself. Its own retries are switched off:
Step Functions owns retries (with backoff and jitter), so the two never multiply.
"""

from __future__ import annotations

from typing import Any

import anthropic

from functions.agent.errors import FatalModelError, RetryableModelError
from functions.agent.models import ModelRequest, ModelResponse, Usage

_RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}
_STATUS_KINDS = {429: "throttled", 529: "overloaded"}  # the rest: server_error


class AnthropicModel:
    provider = "anthropic"

    def __init__(self, client: anthropic.Anthropic) -> None:
        self.client = client

    @classmethod
    def create_client(cls, *, api_key: str | None, timeout_seconds: float) -> AnthropicModel:
        return cls(anthropic.Anthropic(api_key=api_key, max_retries=0, timeout=timeout_seconds))

    def create(self, request: ModelRequest) -> ModelResponse:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": request.messages,
        }
        if request.system:
            kwargs["system"] = request.system
        if request.tools:
            kwargs["tools"] = request.tools
        try:
            message = self.client.messages.create(**kwargs)
        except anthropic.APIConnectionError as exc:  # includes timeouts
            raise RetryableModelError(f"connection to the Anthropic API failed: {exc}", kind="connection") from exc
        except anthropic.APIStatusError as exc:
            raise translate_status_error(exc) from exc
        except (anthropic.APIResponseValidationError, ValueError) as exc:  # an unreadable body
            raise RetryableModelError(
                f"the Anthropic API returned an unreadable response: {exc}", kind="malformed"
            ) from exc
        try:  # the SDK does not validate bodies: a malformed one must not become a crash or a bogus answer
            blocks = [block.model_dump(mode="json", exclude_none=True) for block in message.content]
            if not isinstance(message.model, str) or message.usage is None:
                raise TypeError("no model or usage")
            return ModelResponse(
                content=blocks,
                stop_reason=message.stop_reason,
                usage=usage_of(message.usage),
                model=message.model,
                provider=self.provider,
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise RetryableModelError(
                f"the Anthropic API returned a malformed response: {exc}", kind="malformed"
            ) from exc


def usage_of(usage: Any) -> Usage:
    cache_creation = getattr(usage, "cache_creation", None)
    return Usage(
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
        cache_read_input_tokens=usage.cache_read_input_tokens or 0,
        cache_creation_1h_input_tokens=(cache_creation.ephemeral_1h_input_tokens if cache_creation else 0) or 0,
    )


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
    """The provider's retry-after header in seconds (the HTTP-date form is not used by the API)."""
    try:
        value = exc.response.headers.get("retry-after")
        return max(0.0, float(value)) if value is not None else None
    except (AttributeError, ValueError):
        return None


def translate_status_error(exc: anthropic.APIStatusError) -> Exception:
    """Retryable: 408/409/429/5xx/529. Fatal: everything else, and a 429 that reports a spend limit."""
    body: dict[str, Any] = exc.body if isinstance(exc.body, dict) else {}
    error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
    kind = str(error.get("type") or type(exc).__name__)
    message = str(error.get("message") or exc.message)
    if exc.status_code == 429 and "spend" in message.lower():
        return FatalModelError("SPEND_LIMIT", f"Anthropic API spend limit reached: {message}")
    if exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500:
        return RetryableModelError(
            f"Anthropic API {exc.status_code} {kind}: {message}",
            retry_after=_retry_after(exc),
            kind=_STATUS_KINDS.get(exc.status_code, "server_error"),
        )
    return FatalModelError(f"MODEL_{exc.status_code}", f"Anthropic API {exc.status_code} {kind}: {message}")
