"""Every error Stepwise raises on purpose, in one place. Ports raise these; adapters translate provider and
AWS errors into them; handlers turn them into HTTP statuses or workflow outcomes."""

from __future__ import annotations

MAX_ECHO = 80  # characters of a client's own string an error message repeats
MAX_MESSAGE = 2_000  # characters of any error message a client is sent


def clip(value: object, limit: int = MAX_ECHO) -> str:
    """A client-supplied string as an error message may repeat it: at most ``limit`` characters, marked if cut."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class StepwiseError(Exception):
    """Base of every error Stepwise raises on purpose."""


# ------------------------------------------------------------------------------------------- submitting


class RequestRejectedError(StepwiseError):
    """The request is well-formed JSON but cannot be accepted (unknown or retired model, unserved provider)."""


class UnknownToolError(RequestRejectedError):
    """The request names a tool the deployment does not have."""


class ToolServerError(StepwiseError):
    """A tool's server or destination was refused (host, address), unreachable, timed out or failed."""

    def __init__(self, message: str, *, timed_out: bool = False, before_sending: bool = False) -> None:
        """``before_sending``: refused before anything was sent (host, address, credential): nothing can have run."""
        super().__init__(message)
        self.timed_out, self.before_sending = timed_out, before_sending


class ToolServerUnavailableError(StepwiseError):
    """A session cannot be created now: a server its agent's tools come from cannot be listed (HTTP 503)."""


class IdempotencyConflictError(StepwiseError):
    """The Idempotency-Key was used before with a different request body."""


class EnqueueError(StepwiseError):
    """The intake queue refused the run."""

    def __init__(self, message: str, *, retry_with_key: bool) -> None:
        super().__init__(message)
        self.retry_with_key = retry_with_key


class ConflictError(StepwiseError):
    """The resource is not in a state that allows the request (a running session, a stale agent version)."""


class RunConflictError(ConflictError):
    """The run is not in a state that allows the operation (e.g. cancelling a finished run)."""


class NotFoundError(StepwiseError):
    """An agent, an agent version or a session the caller's tenant does not have."""


class TicketError(StepwiseError):
    """A stream ticket that was never issued, was used already or has expired."""


# ------------------------------------------------------------------------------------------- the model


class ModelError(StepwiseError):
    """The model call failed."""


class RetryableModelError(ModelError):
    """Throttling, overload, 5xx, timeouts: Step Functions retries the step with backoff and jitter.

    ``retry_after``: the seconds the provider asked for (its retry-after header); the step then waits in a
    Wait state instead. ``kind``: what went wrong, one of ``RETRYABLE_KINDS`` (a bounded set: the step function's
    metrics count by it; ``throttled`` and ``overloaded`` are the provider's 429 and 529).
    """

    def __init__(self, message: str, *, retry_after: float | None = None, kind: str = "server_error") -> None:
        super().__init__(message)
        if kind not in RETRYABLE_KINDS:
            raise ValueError(f"retryable error kind {kind!r}: one of {', '.join(RETRYABLE_KINDS)}")
        self.retry_after = retry_after
        self.kind = kind

    @property
    def throttled(self) -> bool:
        """The provider refused for load (429 rate limit, 529 overloaded, Bedrock's ThrottlingException)."""
        return self.kind in ("throttled", "overloaded")


# throttled: 429 / ThrottlingException; overloaded: 529 / ServiceUnavailable; server_error: 408/409/5xx;
# connection: no answer (refused, timed out); malformed: an answer that could not be read; circuits_open: every
# model's circuit is open (no call was made)
RETRYABLE_KINDS = ("throttled", "overloaded", "server_error", "connection", "malformed", "circuits_open")


class FatalModelError(ModelError):
    """Bad request, auth, spend limit: retrying cannot help; the run fails with this reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UnknownModelError(StepwiseError):
    """No price is known for the model, so a run on it cannot be accounted and is refused."""


# ------------------------------------------------------------------------------------------- the store


class BudgetRefusedError(StepwiseError):
    """A reservation would cross a budget: the run ends BUDGET_EXCEEDED with this code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NoTimeForCallError(StepwiseError):
    """A later step of a step loop was not taken: its invocation has too little time left for a model call
    (functions/agent/step_loop.py); the workflow's next Task takes it."""


class StoreConflictError(StepwiseError):
    """Concurrent writes kept winning the run's or a budget counter's item. Step Functions retries the step;
    the model's answer is already stored, so the retry settles it without calling the model again."""


class RunNotFoundError(StepwiseError):
    pass


class RunAlreadyExistsError(StepwiseError):
    pass


class StepAlreadySavedError(StepwiseError):
    """The step record exists: a retried or duplicated step Lambda must not call the model again."""


class RunNotActiveError(StepwiseError):
    """The run reached a terminal status (cancelled, finished) while the step was working."""


# ------------------------------------------------------------------------------------------- webhooks


class WebhookDeliveryError(StepwiseError):
    """An endpoint did not take a delivery: refused, timed out, answered other than 2xx, or resolved to an address
    the deployment does not allow. The delivery is tried again later."""


class DeliveryFailedError(StepwiseError):
    """An attempt to deliver a webhook failed: the next is scheduled, unless this was the last (``last_attempt``:
    the message goes to the dead-letter queue)."""

    def __init__(self, message: str, *, last_attempt: bool) -> None:
        super().__init__(message)
        self.last_attempt = last_attempt


# Raised by a workflow task's function and retried by the workflow's Retry (with backoff and jitter). Lambda
# reports an exception's class name as its error type, which is what a Retry matches: the workflow construct
# takes the names from here, so a rename cannot silently stop the retries.
RETRIED_BY_WORKFLOW: tuple[type[StepwiseError], ...] = (RetryableModelError, StoreConflictError)
