"""Names, sizes and limits of the deployed stack, in one place."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = ROOT / "functions"
REQUIREMENTS = ROOT / "requirements.txt"
BUILD_DIR = ROOT / ".build"

LAMBDA_PYTHON_VERSION = "3.13"
LAMBDA_PLATFORM = "manylinux2014_aarch64"
METRICS_NAMESPACE = "Stepwise"


def service_name(function: str) -> str:
    """POWERTOOLS_SERVICE_NAME of a function: the `service` dimension of every metric it emits."""
    return f"stepwise-{function}"


# handler path -> (memory MB, timeout seconds). The step function imports the anthropic SDK (~650 ms cold)
# and waits on the model: more memory buys CPU for the import, the timeout covers MODEL_TIMEOUT_SECONDS.
FUNCTIONS = {
    "api": ("functions.handlers.api.handler", 256, 15),
    "intake": ("functions.handlers.intake.handler", 256, 30),
    "step": ("functions.handlers.step.handler", 1024, 180),
    "tool": ("functions.handlers.tool.handler", 256, 60),
    "finalize": ("functions.handlers.finalize.handler", 256, 15),
    "mark_failed": ("functions.handlers.mark_failed.handler", 256, 15),
    "workflow_ended": ("functions.handlers.workflow_ended.handler", 256, 15),
}
MODEL_TIMEOUT_SECONDS = 150

# Least privilege on the table: exactly the calls each function's code makes (TransactWriteItems needs the
# Put/Update of its parts, nothing more).
_FINISH = ("dynamodb:GetItem", "dynamodb:UpdateItem")
TABLE_ACCESS = {
    "api": ("dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"),
    "intake": ("dynamodb:GetItem", "dynamodb:UpdateItem"),  # UpdateItem: fail a run it gives up on
    # BatchGetItem: budget usage; PutItem: step records, stored answers, the response cache; DeleteItem: a
    # stored answer once its step is settled (in the same transaction)
    "step": (
        "dynamodb:Query",
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    ),
    "tool": ("dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem"),
    "finalize": _FINISH,
    "mark_failed": _FINISH,
    "workflow_ended": _FINISH,
}

# Step Functions retry of a throttled/overloaded model call: 5 s, 10 s, 20 s, ... capped at 120 s, full jitter.
MODEL_RETRY_INTERVAL_SECONDS = 5  # CDK context model_retry_interval_seconds / model_retry_max_delay_seconds
MODEL_RETRY_MAX_ATTEMPTS = 6
MODEL_RETRY_MAX_DELAY_SECONDS = 120
TOOLS_MAX_CONCURRENCY = 8

INTAKE_MAX_RECEIVE_COUNT = 5
BUDGET_ALARM_THRESHOLDS = (50, 80, 90, 100)
