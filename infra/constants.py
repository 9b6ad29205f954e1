"""Names, sizes and limits of the deployed stack, in one place. The functions themselves: infra/functions.py."""

from pathlib import Path

from aws_cdk import aws_logs as logs

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
# A step invocation takes a run's next steps while their calls run in it (functions/agent/step_loop.py): at most
# this many, starting none after this long (the step function's timeout covers that and one more step at its worst)
STEP_LOOP_STEPS = 10
STEP_LOOP_SECONDS = 120
WATCH_DELAY_SECONDS = 900  # the run watchdog's period (an SQS delay: at most 900 s)

# Step Functions retry of a throttled/overloaded model call: 5 s, 10 s, 20 s, ... capped at 120 s, full jitter.
MODEL_RETRY_INTERVAL_SECONDS = 5  # CDK context model_retry_interval_seconds / model_retry_max_delay_seconds
MODEL_RETRY_MAX_ATTEMPTS = 6
MODEL_RETRY_MAX_DELAY_SECONDS = 120
TOOLS_MAX_CONCURRENCY = 8

INTAKE_MAX_RECEIVE_COUNT = 5
WEBHOOKS_MAX_CONCURRENCY = 5  # webhooks function invocations at a time
WEBHOOKS_BATCH_SIZE = 5  # messages per invocation: each delivery may wait 10 s to connect and 10 s for its answer

# Safe deploys (CDK context deploy_strategy): while CodeDeploy shifts a function's alias, its new version is rolled
# back when, in ROLLBACK_MINUTES consecutive minutes, at least ROLLBACK_MIN_ERRORS of its invocations failed and
# they were at least ROLLBACK_ERROR_PERCENT of them (infra/constructs/deploys.py)
ROLLBACK_ERROR_PERCENT = 5
ROLLBACK_MIN_ERRORS = 3
ROLLBACK_MINUTES = 2

# The retention periods CloudWatch Logs offers, by days (CDK context log_retention_days; 0: never expire)
_R = logs.RetentionDays
LOG_RETENTION: dict[int, logs.RetentionDays] = {
    1: _R.ONE_DAY, 3: _R.THREE_DAYS, 5: _R.FIVE_DAYS, 7: _R.ONE_WEEK, 14: _R.TWO_WEEKS, 30: _R.ONE_MONTH,
    60: _R.TWO_MONTHS, 90: _R.THREE_MONTHS, 120: _R.FOUR_MONTHS, 150: _R.FIVE_MONTHS, 180: _R.SIX_MONTHS,
    365: _R.ONE_YEAR, 400: _R.THIRTEEN_MONTHS, 545: _R.EIGHTEEN_MONTHS, 731: _R.TWO_YEARS, 1096: _R.THREE_YEARS,
    1827: _R.FIVE_YEARS, 2192: _R.SIX_YEARS, 2557: _R.SEVEN_YEARS, 2922: _R.EIGHT_YEARS, 3288: _R.NINE_YEARS,
    3653: _R.TEN_YEARS, 0: _R.INFINITE,
}  # fmt: skip
