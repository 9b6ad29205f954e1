"""The Standard workflow: Begin -> Step -> Route -> ((Tools Map ->)? Step)* -> Finalize; Catch -> MarkFailed.

A step runs the fast tool calls it asked for itself (the built-ins, the deployer's ``fast`` tools), and while none is
left for the Map the same Step invocation takes the run's next step, each saved and settled on its own, up to its caps
(functions/agent/step_loop.py): Step and Route, 2 state transitions, per invocation rather than per step. The Map runs
the other calls (MCP, Lambda and slow Python tools), and those of a replayed step that have no result yet.

A session's turn is one execution: it may begin with approved calls (Tools first), and a step whose calls wait
for the session's client runs the others, then finalizes the turn (IDLE)."""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, ArnFormat, Duration, RemovalPolicy, Stack, Token, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from functions.agent.errors import RETRIED_BY_WORKFLOW, StoreConflictError
from infra.constants import (
    MODEL_RETRY_INTERVAL_SECONDS,
    MODEL_RETRY_MAX_ATTEMPTS,
    MODEL_RETRY_MAX_DELAY_SECONDS,
    TOOLS_MAX_CONCURRENCY,
)
from infra.constructs.agent_functions import AgentFunctions
from infra.constructs.monitoring import messages_waiting_alarm

# every task also gets its execution's name: the turn of a session it belongs to (a task of an earlier turn's
# execution never writes into the next one)
RUN_REF = {"tenant.$": "$.tenant", "run_id.$": "$.run_id", "execution.$": "$$.Execution.Name"}
# AWS's names for a Lambda that died (timeout, out of memory, crash) and for a hung invocation
LAMBDA_DIED = ["Sandbox.Timedout", "Runtime.ExitError", "Lambda.Unknown", "States.Timeout"]
LAMBDA_SERVICE_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]


class AgentWorkflow(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: AgentFunctions,
        run_timeout: Duration,
        lambda_tools: list[str] | None = None,
        retry_interval_seconds: int = MODEL_RETRY_INTERVAL_SECONDS,
        retry_max_delay_seconds: int = MODEL_RETRY_MAX_DELAY_SECONDS,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
    ) -> None:
        super().__init__(scope, construct_id)
        self._functions = functions

        mark_failed = self._invoke("MarkFailed", "mark_failed", {**RUN_REF, "failure.$": "$.failure"}).next(
            sfn.Fail(self, "RunFailed", error="RunFailed", cause="see the run's error in GET /runs/{id}")
        )

        step = self._invoke(
            "Step",
            "step",
            # in_step: this definition routes a step whose calls all ran in it ("step", "idle"; see StepOutcome); the
            # invocation may take several steps: its output is the last one's state
            {**RUN_REF, "step.$": "$.step", "waits.$": "$.waits", "attempt.$": "$$.State.RetryCount", "in_step": True},
            retry_conflicts=False,
        )
        step.add_retry(  # StoreConflictError: the answer is stored; the retry settles it without a model call
            errors=[error.__name__ for error in RETRIED_BY_WORKFLOW],
            interval=Duration.seconds(retry_interval_seconds),
            backoff_rate=2,
            max_attempts=MODEL_RETRY_MAX_ATTEMPTS,
            max_delay=Duration.seconds(retry_max_delay_seconds),
            jitter_strategy=sfn.JitterType.FULL,
        )
        step.add_retry(  # the step Lambda died (timeout, out of memory): retried; an answer it got is stored
            errors=LAMBDA_DIED,
            interval=Duration.seconds(retry_interval_seconds),
            backoff_rate=2,
            max_attempts=2,
            jitter_strategy=sfn.JitterType.FULL,
        )
        step.add_catch(mark_failed, errors=["States.ALL"], result_path="$.failure")

        tools = sfn.Map(
            self,
            "Tools",
            items_path="$.tool_calls",
            max_concurrency=TOOLS_MAX_CONCURRENCY,
            item_selector={
                **RUN_REF,
                "step.$": "$.completed_step",
                "tool_use_id.$": "$$.Map.Item.Value.id",
                "call.$": "$$.Map.Item.Value",
            },
            result_path=sfn.JsonPath.DISCARD,
        )
        tools.item_processor(self._tool_call(lambda_tools))
        tools.add_catch(mark_failed, errors=["States.ALL"], result_path="$.failure")
        finalize = self._invoke("Finalize", "finalize", {**RUN_REF, "status.$": "$.status", "error.$": "$.error"})
        finalize.add_catch(mark_failed, errors=["States.ALL"], result_path="$.failure")
        finalize.next(sfn.Succeed(self, "Done"))

        # after the tools: the next step, or (a session's calls that wait for its client) the turn idles
        tools.next(
            sfn.Choice(self, "AfterTools")
            .when(sfn.Condition.string_equals("$.next", "action"), finalize)
            .otherwise(step)
        )
        route = (
            sfn.Choice(self, "Route")
            .when(sfn.Condition.string_equals("$.next", "step"), step)  # its calls ran in the step: the next one
            .when(sfn.Condition.string_equals("$.next", "tools"), tools)
            .when(sfn.Condition.string_equals("$.next", "action"), tools)
            .when(sfn.Condition.string_equals("$.next", "redo"), step)  # a superseded cheap answer
            .when(  # the provider's retry-after: wait here, zero compute, then take the step again
                sfn.Condition.string_equals("$.next", "wait"),
                sfn.Wait(self, "RetryAfter", time=sfn.WaitTime.seconds_path("$.wait_seconds")).next(step),
            )
            .otherwise(finalize)  # finish, and idle (a session's calls that all wait for its client)
        )
        step.next(route)
        # a session's turn may begin with the calls a person approved (their step is the last one), then steps
        definition = (
            sfn.Choice(self, "Begin")
            .when(sfn.Condition.is_not_present("$.next"), step)  # rules are tried in order: a run has no next
            .when(sfn.Condition.string_equals("$.next", "tools"), tools)
            .otherwise(step)
        )

        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            timeout=run_timeout,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        Validations.of(self.state_machine).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason="X-Ray and CloudWatch Logs delivery are account-level APIs.",
            )
        )
        # An execution-ended event the rule could not deliver in 6 hours (8 tries) is kept here, and alarms
        self.ended_dead_letters = sqs.Queue(
            self, "ExecutionEndedDeadLetters", retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
        )  # fmt: skip
        Validations.of(self.ended_dead_letters).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-SQS3", reason="It is the EventBridge target's dead-letter queue."
            )
        )
        self.ended_dead_letter_alarm = messages_waiting_alarm(
            self, "ExecutionEndedDeadLetterAlarm", self.ended_dead_letters, slug="execution-ended-dead-letters",
            what="An execution-ended event could not be delivered: a run may not have been ended.",
        )  # fmt: skip
        # Executions that end without reaching Finalize/MarkFailed (timeout, stop, crash) still end their run.
        events.Rule(
            self,
            "ExecutionEnded",
            description="Record a terminal run status when a Stepwise execution times out, fails or is stopped",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={
                    "stateMachineArn": [self.state_machine.state_machine_arn],
                    "status": ["TIMED_OUT", "FAILED", "ABORTED"],
                },
            ),
            targets=[
                targets.LambdaFunction(
                    functions.alias("workflow_ended"),
                    retry_attempts=8,
                    max_event_age=Duration.hours(6),
                    dead_letter_queue=self.ended_dead_letters,
                )
            ],
        )

    def grant_lambda_tools(self, functions: list[str]) -> list[str]:
        """The state machine may invoke exactly the Lambda tools the deployment allows (names or ARNs), and their
        versions. Returns the ARNs granted."""
        stack = Stack.of(self)
        region = "<AWS::Region>" if Token.is_unresolved(stack.region) else stack.region
        account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
        arns, findings = [], []
        for function in functions:
            if function.startswith("arn:"):
                arns.append(function)
                findings.append(function)
            else:
                arns.append(stack.format_arn(service="lambda", resource="function", resource_name=function,
                                             arn_format=ArnFormat.COLON_RESOURCE_NAME))  # fmt: skip
                findings.append(f"arn:<AWS::Partition>:lambda:{region}:{account}:function:{function}")
        if arns:
            self.state_machine.add_to_role_policy(
                iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[*arns, *(f"{a}:*" for a in arns)])
            )
        for finding in findings:
            Validations.of(self.state_machine).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{finding}:*]",
                    reason="A Lambda tool (CDK context lambda_tools): invoke of that function's versions.",
                )
            )
        return arns

    @property
    def settings(self) -> dict[str, str]:
        """What the workflow provides to the functions' settings."""
        return {"STEPWISE_STATE_MACHINE_ARN": self.state_machine.state_machine_arn}

    def grant(self, functions: AgentFunctions) -> None:
        """Each function the execution actions it declares, on this state machine's executions only."""
        machine = self.state_machine
        executions = Stack.of(self).format_arn(  # this state machine's executions (named by run id)
            service="states",
            resource="execution",
            resource_name=f"{machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        stack = Stack.of(self)
        region = "<AWS::Region>" if Token.is_unresolved(stack.region) else stack.region
        account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
        machine_ref = stack.resolve(stack.get_logical_id(machine.node.default_child))  # type: ignore[arg-type]
        finding = f"Resource::arn:<AWS::Partition>:states:{region}:{account}:execution:<{machine_ref}.Name>:*"
        for spec, function in functions:
            if spec.starts_executions:
                machine.grant_start_execution(function)
            if spec.execution_actions:
                function.add_to_role_policy(
                    iam.PolicyStatement(actions=list(spec.execution_actions), resources=[executions])
                )
                Validations.of(function).acknowledge(
                    Acknowledgment(
                        id=f"AwsSolutions::AwsSolutions-IAM5[{finding}]",
                        reason=f"{', '.join(spec.execution_actions)} on this stack's state machine's executions only.",
                    )
                )

    def _tool_call(self, lambda_tools: list[str] | None) -> sfn.IChainable:
        """One item of the Tools map: the call runs in the tool function, or (a Lambda tool) the map invokes the
        deployer's function directly and the tool function records what it returned. Any failure becomes the
        call's error result (RecordToolFailure), never a failed run: the model sees it and carries on."""
        call = {**RUN_REF, "step.$": "$.step", "tool_use_id.$": "$.tool_use_id"}
        lost = sfn.Pass(
            self,
            "ToolResultLost",
            comment="the model sees 'no result was recorded' for the call",
            parameters={"lost.$": "$.tool_use_id"},
        )  # (a small output: the map gathers every item's)
        record_failure = self._invoke("RecordToolFailure", "tool", {**call, "failure.$": "$.failure"})
        record_failure.add_catch(lost, errors=["States.ALL"], result_path="$.lost")

        def caught(state: sfn.TaskStateBase | sfn.CustomState) -> None:
            state.add_catch(record_failure, errors=["States.ALL"], result_path="$.failure")

        run_tool = self._invoke("RunTool", "tool", call)
        # the tool function died: retried; a call with side effects that had started is not run again (its claim)
        run_tool.add_retry(errors=LAMBDA_DIED, interval=Duration.seconds(2), backoff_rate=2, max_attempts=2,
                           jitter_strategy=sfn.JitterType.FULL)  # fmt: skip
        caught(run_tool)
        if not lambda_tools:
            return run_tool
        record = self._invoke("RecordLambdaTool", "tool", {**call, "ran": True, "result.$": "$.result.payload",
                                                             "started.$": "$.started.at"})  # fmt: skip
        record.add_retry(errors=LAMBDA_DIED, interval=Duration.seconds(2), backoff_rate=2, max_attempts=2,
                         jitter_strategy=sfn.JitterType.FULL)  # fmt: skip
        # the function ran but its result could not be recorded: of unknown outcome (never "failed")
        record_ran = self._invoke("RecordLambdaToolFailure", "tool", {**call, "ran": True, "failure.$": "$.failure"})
        record_ran.add_catch(lost, errors=["States.ALL"], result_path="$.lost")
        record.add_catch(record_ran, errors=["States.ALL"], result_path="$.failure")
        invoke_idempotent = self._lambda_tool("InvokeLambdaTool", LAMBDA_DIED + LAMBDA_SERVICE_ERRORS)
        # with side effects: invoked once; only a throttle (refused before it ran) is retried
        invoke_once = self._lambda_tool("InvokeLambdaToolOnce", ["Lambda.TooManyRequestsException"])
        for invoke in (invoke_idempotent, invoke_once):
            caught(invoke)
            invoke.next(record)
        # when the invocation began: the call's recorded duration (the function's time, retries included)
        started = sfn.Pass(self, "LambdaToolStarted", parameters={"at.$": "$$.State.EnteredTime"},
                           result_path="$.started")  # fmt: skip
        started.next(
            sfn.Choice(self, "LambdaToolKind")
            .when(sfn.Condition.string_equals("$.call.kind", "lambda"), invoke_idempotent)
            .otherwise(invoke_once)
        )
        return (
            sfn.Choice(self, "ToolKind")
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_present("$.call.kind"), sfn.Condition.string_matches("$.call.kind", "lambda*")
                ),
                started,
            )
            .otherwise(run_tool)
        )

    def _lambda_tool(self, name: str, retried: list[str]) -> sfn.CustomState:
        """Invoke the function a Lambda tool names (one the deployment allows: the role may invoke only those)."""
        state = sfn.CustomState(
            self,
            name,
            state_json={
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName.$": "$.call.function", "Payload.$": "$.call.input"},
                "TimeoutSecondsPath": "$.call.timeout_seconds",
                "ResultSelector": {"payload.$": "$.Payload"},
                "ResultPath": "$.result",
            },
        )
        state.add_retry(errors=retried, interval=Duration.seconds(2), backoff_rate=2, max_attempts=2,
                        jitter_strategy=sfn.JitterType.FULL)  # fmt: skip
        return state

    def _invoke(
        self, name: str, function: str, payload: dict[str, Any], *, retry_conflicts: bool = True
    ) -> tasks.LambdaInvoke:
        """Invoke of ``function``'s alias returning only its payload; transient Lambda errors retried with jitter.
        The state machine is granted invoke of the alias alone.

        A write that kept losing races (StoreConflictError) is retried too: every task is safe to repeat."""
        alias = self._functions.alias(function)
        timeout = self._functions[function].timeout
        assert timeout is not None  # every function has its spec's
        task = tasks.LambdaInvoke(
            self,
            name,
            lambda_function=alias,
            payload=sfn.TaskInput.from_object(payload),
            payload_response_only=False,
            retry_on_service_exceptions=False,
            output_path="$.Payload",
            # a hung invocation is cut (States.Timeout) a little after the function's own timeout
            task_timeout=sfn.Timeout.duration(timeout.plus(Duration.seconds(30))),
        )
        task.add_retry(
            errors=LAMBDA_SERVICE_ERRORS, interval=Duration.seconds(2), backoff_rate=2, max_attempts=4,
            jitter_strategy=sfn.JitterType.FULL,
        )  # fmt: skip
        if retry_conflicts:  # (the step retries them with its model errors)
            task.add_retry(
                errors=[StoreConflictError.__name__], interval=Duration.seconds(1), backoff_rate=2, max_attempts=4,
                jitter_strategy=sfn.JitterType.FULL,
            )  # fmt: skip
        return task
