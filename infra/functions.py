"""Every Lambda function of Stepwise, declared once: its handler, size, settings and what it may touch.

The stack builds the functions from these (infra/constructs/agent_functions.py), gives each exactly the
environment its settings model names (``environment``), and the constructs grant each what it declares:
the table actions (StateTable), sending to the intake queue (Intake, for functions whose settings include
the queue), execution actions (AgentWorkflow), the model API key and Bedrock (functions that call models).
The local stack and the test fixtures take the environment from the synthesised template, so none of them
can drift from this file.

To add a function: a handler module in functions/handlers (with its ``SETTINGS`` model), a settings model in
functions/adapters/settings.py, an entry here, and where it is invoked from (the workflow, a queue, a rule, a
function URL), always through its alias, ``AgentFunctions.alias(name)``: its version, alias and safe deploys follow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from functions.adapters.dynamodb_store import ACTIVE_INDEX
from functions.adapters.settings import (
    ApiSettings,
    AuthorizerSettings,
    EndSettings,
    GaugesSettings,
    IntakeSettings,
    ModelSettings,
    QueueSettings,
    Settings,
    StepSettings,
    StreamSettings,
    ToolSettings,
    WebhookSettings,
    WebhooksSettings,
    WorkflowEndedSettings,
)
from functions.agent.step_loop import worst_step_seconds
from functions.handlers.observability import NAMESPACE, service_name
from infra.constants import MODEL_TIMEOUT_SECONDS, STEP_LOOP_SECONDS


@dataclass(frozen=True, kw_only=True)
class FunctionSpec:
    name: str  # the construct id, and (as stepwise-<name>) the service of its logs and metrics
    handler: str
    settings: type[Settings]  # the model its handler validates on first use (the handler module's SETTINGS)
    memory_mb: int = 256
    timeout_seconds: int = 15
    # Least privilege on the table: exactly the calls its code makes (TransactWriteItems needs the
    # Put/Update/Delete of its parts, nothing more)
    table_actions: tuple[str, ...]
    execution_actions: tuple[str, ...] = ()  # on this stack's executions (named by run id)
    # the partition keys the function's table actions are limited to (dynamodb:LeadingKeys), when it reads only those
    leading_keys: tuple[str, ...] = ()
    # of those, the partitions it may only read (its writes there explicitly denied)
    read_only_keys: tuple[str, ...] = ()
    # run by the AWS Lambda Web Adapter: ``handler`` is the script (under the code's root) that starts the web app
    web_adapter: bool = False
    starts_executions: bool = False
    counts_requests: bool = False  # writes tenants' request counts (RATE#...): the api function alone
    # the table's indexes it may Query (the index of active work: the api's, to list it, and the gauges', to count it)
    index_queries: tuple[str, ...] = ()
    # registers webhook endpoints, so reads and writes their signing secrets (T#{tenant}#WEBHOOKS): the api alone
    # and the webhooks function (its leading_keys are those partitions); every other function is denied them
    webhook_secrets: bool = False

    @property
    def service(self) -> str:
        return service_name(self.name)

    def reads(self, group: type[Settings]) -> bool:
        """Whether the function's settings include a group (QueueSettings, ModelSettings, ...)."""
        return issubclass(self.settings, group)

    @property
    def sends_to_intake(self) -> bool:
        return self.reads(QueueSettings)

    @property
    def announces_webhooks(self) -> bool:
        """Sends to the webhooks queue: every function that ends runs, and the webhooks function (its fan-out)."""
        return self.reads(WebhookSettings)

    @property
    def calls_models(self) -> bool:
        return self.reads(ModelSettings)

    def environment(self, values: Mapping[str, str]) -> dict[str, str]:
        """The function's environment: every variable its settings name, from the stack's ``values``.

        Raises ValueError naming a setting the function reads that the stack does not give."""
        wanted = self.settings.variables()
        missing = [name for name in wanted if name not in values]
        if missing:
            raise ValueError(f"function {self.name} reads {', '.join(missing)}, which the stack does not give it")
        return {
            **{name: values[name] for name in wanted},
            "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
            "POWERTOOLS_SERVICE_NAME": self.service,
        }


# an end: reads the run and its last step, gives the tool calls it leaves their error results (PutItem, conditional:
# functions/agent/lifecycle.py settle_calls), then writes the status (UpdateItem)
_END = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
# a run's or a session's partition, of any tenant (functions/adapters/dynamodb_store.py run_pk; a tenant has no "#")
RUN_PARTITIONS = "T#*#R#*"
# The step function waits on the model for most of its time, billed by memory: 256 MB, the least the measurements
# support (bench/step_memory.py: peak RSS 121 MB after the SDK's imports and first call, 121 MB at step 20 of a run
# with 24,000-character answers, 128 MB at step 100 with 16,000; Python's own peak during a step ~1 MB). Memory also
# sets its CPU share (1,769 MB = 1 vCPU): a warm step's 20-45 ms of CPU take ~0.15-0.3 s at 256 MB (half that at
# 512 MB), well under a model call; a new container's SDK imports (~1.5 s of CPU) run in its init, which on demand
# has a full vCPU whatever the memory (README "Cold starts"). CDK context step_memory_mb sets another size (README
# "What a step costs"). It takes a run's next steps while their calls all run in it (functions/agent/step_loop.py),
# starting none after STEP_LOOP_SECONDS: its timeout covers that and one more step at its worst (a model call's
# MODEL_TIMEOUT_SECONDS, the fast tool calls it runs itself, IN_STEP_SECONDS, a margin).
STEP_MEMORY_MB = 256
MIN_MEMORY_MB, MAX_MEMORY_MB = 128, 10_240  # what Lambda allows a function
STEP_TIMEOUT_SECONDS = math.ceil(STEP_LOOP_SECONDS + worst_step_seconds(MODEL_TIMEOUT_SECONDS))
FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        FunctionSpec(
            name="api",
            handler="functions.handlers.api.handler",
            settings=ApiSettings,
            # BatchGetItem: listing sessions; DeleteItem: deleting one (its items)
            table_actions=(
                "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem",
                "dynamodb:BatchGetItem", "dynamodb:DeleteItem",
            ),
            execution_actions=("states:StopExecution",),
            # a long-poll of a session's events waits up to 20 s; API Gateway cuts every request at 30 s
            timeout_seconds=28,
            counts_requests=True,
            index_queries=(ACTIVE_INDEX,),  # GET /active, POST /active/cancel, sessions with statuses[]=running
            webhook_secrets=True,
        ),
        FunctionSpec(
            name="intake",
            handler="functions.handlers.intake.handler",
            settings=IntakeSettings,
            timeout_seconds=30,
            # fail a run it gives up on, end a stuck one (as every end does, _END), release a reservation
            table_actions=_END,
            # the run watchdog; a cancel's StopExecution that failed, retried
            execution_actions=("states:DescribeExecution", "states:StopExecution"),
            starts_executions=True,
        ),
        FunctionSpec(
            name="step",
            handler="functions.handlers.step.handler",
            settings=StepSettings,
            memory_mb=STEP_MEMORY_MB,
            timeout_seconds=STEP_TIMEOUT_SECONDS,
            # BatchGetItem: budget use; PutItem: step records, stored answers, the response cache, circuits;
            # DeleteItem: a stored answer once its step is settled (in the same transaction)
            table_actions=(
                "dynamodb:Query",
                "dynamodb:GetItem",
                "dynamodb:BatchGetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
            ),
        ),
        FunctionSpec(
            name="tool",
            handler="functions.handlers.tool.handler",
            settings=ToolSettings,
            timeout_seconds=60,
            table_actions=("dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem"),
        ),
        # the API's authorizer: reads API keys by their digest, and nothing else of the table
        FunctionSpec(name="authorizer", handler="functions.handlers.authorizer.handler", settings=AuthorizerSettings,
                     timeout_seconds=5, table_actions=("dynamodb:GetItem",), leading_keys=("APIKEY#*",)),
        # server-sent events behind a public function URL (Web Adapter, response streaming): reads runs' and
        # sessions' partitions (T#{tenant}#R#{id}: not a tenant's agents, spend or cached responses), takes stream
        # tickets (TICKET#...); a stream lasts up to STEPWISE_STREAM_MAX_SECONDS (840 s)
        FunctionSpec(name="stream", handler="functions/handlers/stream.sh", settings=StreamSettings, web_adapter=True,
                     timeout_seconds=900, table_actions=("dynamodb:Query", "dynamodb:DeleteItem"),
                     leading_keys=(RUN_PARTITIONS, "TICKET#*"), read_only_keys=(RUN_PARTITIONS,)),
        FunctionSpec(name="finalize", handler="functions.handlers.finalize.handler", settings=EndSettings,
                     table_actions=_END),
        FunctionSpec(name="mark_failed", handler="functions.handlers.mark_failed.handler", settings=EndSettings,
                     table_actions=_END),
        FunctionSpec(name="workflow_ended", handler="functions.handlers.workflow_ended.handler",
                     settings=WorkflowEndedSettings, table_actions=_END),
        # webhooks: reads a tenant's endpoints (their secrets included) and nothing else of the table; a batch of
        # deliveries, each cut at STEPWISE_WEBHOOK_TIMEOUT_SECONDS (10 s) to connect and 10 s to be answered, fits
        # in its timeout
        FunctionSpec(name="webhooks", handler="functions.handlers.webhooks.handler", settings=WebhooksSettings,
                     timeout_seconds=120, table_actions=("dynamodb:GetItem", "dynamodb:Query"),
                     leading_keys=("T#*#WEBHOOKS",), webhook_secrets=True),
        # gauges, every minute (an EventBridge schedule): Queries the index of active work, and nothing of the table.
        # It mostly waits on 16 Queries: the smallest size (more would be faster, not cheaper; 10,000 active runs
        # take about 6 s of its 30, bench/gauges.py)
        FunctionSpec(name="gauges", handler="functions.handlers.gauges.handler", settings=GaugesSettings,
                     memory_mb=128, timeout_seconds=30, table_actions=(), index_queries=(ACTIVE_INDEX,)),
    )
}  # fmt: skip
