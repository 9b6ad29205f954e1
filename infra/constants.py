"""Names, sizes and limits of the deployed stack, in one place. The functions themselves: infra/functions.py."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = ROOT / "functions"
DEPLOYER_TOOLS_DIR = ROOT / "tools"  # the deployer's own tools (functions/tools/registry.py, deployer_tools)
REQUIREMENTS = ROOT / "requirements.txt"
BUILD_DIR = ROOT / ".build"

LAMBDA_PYTHON_VERSION = "3.13"
LAMBDA_PLATFORM = "manylinux2014_aarch64"

MODEL_TIMEOUT_SECONDS = 150  # one model call; the step function's timeout is above it
# A cancelled or timed-out run's reservation is released after this long: more than a step call can run
RELEASE_AFTER_STEP_TIMEOUT_SECONDS = 60
WATCH_DELAY_SECONDS = 900  # the run watchdog's period (an SQS delay: at most 900 s)

# Step Functions retry of a throttled/overloaded model call: 5 s, 10 s, 20 s, ... capped at 120 s, full jitter.
MODEL_RETRY_INTERVAL_SECONDS = 5  # CDK context model_retry_interval_seconds / model_retry_max_delay_seconds
MODEL_RETRY_MAX_ATTEMPTS = 6
MODEL_RETRY_MAX_DELAY_SECONDS = 120
TOOLS_MAX_CONCURRENCY = 8

INTAKE_MAX_RECEIVE_COUNT = 5

# The retention periods CloudWatch Logs offers, in days (CDK context log_retention_days; 0: never expire)
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
                      3288, 3653, 0)  # fmt: skip
