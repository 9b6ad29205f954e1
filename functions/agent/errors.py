"""Errors of the agent core. Ports raise these; adapters translate provider errors into them."""


class StepwiseError(Exception):
    """Base of every error Stepwise raises on purpose."""


class ModelError(StepwiseError):
    """The model call failed."""


class RetryableModelError(ModelError):
    """Throttling, overload, 5xx, timeouts: Step Functions retries the step with backoff and jitter.

    ``retry_after``: the seconds the provider asked for (its retry-after header); the step then waits in a
    Wait state instead. The class name is the Step Functions error name the workflow's Retry matches, so do
    not rename it.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalModelError(ModelError):
    """Bad request, auth, spend limit: retrying cannot help; the run fails with this reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UnknownModelError(StepwiseError):
    """No price is known for the model, so a run on it cannot be accounted and is refused."""


class BudgetRefusedError(StepwiseError):
    """A reservation would cross a budget: the run ends BUDGET_EXCEEDED with this code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StoreConflictError(StepwiseError):
    """Concurrent writes kept winning the run's or a budget counter's item. Step Functions retries the step;
    the model's answer is already stored, so the retry settles it without calling the model again.

    The class name is the Step Functions error name the workflow's Retry matches, so do not rename it.
    """


class RunNotFoundError(StepwiseError):
    pass


class RunAlreadyExistsError(StepwiseError):
    pass


class StepAlreadySavedError(StepwiseError):
    """The step record exists: a retried or duplicated step Lambda must not call the model again."""


class RunNotActiveError(StepwiseError):
    """The run reached a terminal status (cancelled, finished) while the step was working."""
