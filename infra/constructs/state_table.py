"""The DynamoDB table holding runs, steps and tool results (key layout: functions/adapters/dynamodb_store.py), and its
one index: the sparse index of active work (functions/agent/active.py), which only functions that declare it may
Query."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from functions.adapters.dynamodb_store import ACTIVE_INDEX, ACTIVE_PK, ACTIVE_PROJECTION, ACTIVE_SK
from infra.constructs.agent_functions import AgentFunctions

KEY_PARTITIONS = ("APIKEY#*", "KEYS")  # functions/adapters/dynamodb_keys.py
LIMITS_PARTITION = "TENANTS"  # tenants' own limits (functions/adapters/dynamodb_tenants.py): an operator's to write
RATE_PARTITIONS = "RATE#*"  # tenants' request counts: the api function's alone to write
WEBHOOK_PARTITIONS = "T#*#WEBHOOKS"  # webhook endpoints and their secrets (functions/adapters/dynamodb_webhooks.py)
WRITES = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem")


class StateTable(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.TableV2(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute="expires_at",
            removal_policy=removal_policy,
            # sparse: only active runs and sessions have its keys; it carries the few attributes a listing shows,
            # so the steps' writes to a run (usage, cost) never write the index
            global_secondary_indexes=[
                dynamodb.GlobalSecondaryIndexPropsV2(
                    index_name=ACTIVE_INDEX,
                    partition_key=dynamodb.Attribute(name=ACTIVE_PK, type=dynamodb.AttributeType.STRING),
                    sort_key=dynamodb.Attribute(name=ACTIVE_SK, type=dynamodb.AttributeType.STRING),
                    projection_type=dynamodb.ProjectionType.INCLUDE,
                    non_key_attributes=list(ACTIVE_PROJECTION),
                )
            ],
        )

    @property
    def settings(self) -> dict[str, str]:
        return {"STEPWISE_TABLE": self.table.table_name}

    def grant(self, functions: AgentFunctions) -> None:
        """Each function exactly the table actions it declares (infra/functions.py)."""
        for spec, function in functions:
            if spec.leading_keys:  # only items whose partition key matches (IAM's dynamodb:LeadingKeys)
                function.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=list(spec.table_actions),
                        resources=[self.table.table_arn],
                        conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": list(spec.leading_keys)}},
                    )
                )
                if not spec.webhook_secrets and any(key.startswith("T#") for key in spec.leading_keys):
                    # tenants' partitions include their webhook endpoints' signing secrets: not this function's
                    function.add_to_role_policy(
                        iam.PolicyStatement(
                            effect=iam.Effect.DENY,
                            actions=["dynamodb:*"],
                            resources=[self.table.table_arn],
                            conditions={"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": [WEBHOOK_PARTITIONS]}},
                        )
                    )
                if spec.read_only_keys:  # of those, partitions it only reads
                    function.add_to_role_policy(
                        iam.PolicyStatement(
                            effect=iam.Effect.DENY,
                            actions=list(WRITES),
                            resources=[self.table.table_arn],
                            conditions={"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": list(spec.read_only_keys)}},
                        )
                    )
                continue
            # on the table alone (``Table.grant`` would add every index): an index is Queried only by the functions
            # that declare it
            if spec.table_actions:  # (a function may Query an index and touch nothing of the table: the gauges)
                function.add_to_role_policy(
                    iam.PolicyStatement(actions=list(spec.table_actions), resources=[self.table.table_arn])
                )
            if spec.index_queries:
                function.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=["dynamodb:Query"],
                        resources=[f"{self.table.table_arn}/index/{index}" for index in spec.index_queries],
                    )
                )
            # API keys are the authorizer's to read and an operator's to write: no function may touch them (a tool
            # with code execution must not mint itself a key); webhook secrets are the api's and the webhooks
            # function's (a tool must not read the key that signs a tenant's webhooks)
            denied = [*KEY_PARTITIONS, *([] if spec.webhook_secrets else [WEBHOOK_PARTITIONS])]
            function.add_to_role_policy(
                iam.PolicyStatement(
                    effect=iam.Effect.DENY,
                    actions=["dynamodb:*"],
                    resources=[self.table.table_arn],
                    conditions={"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": denied}},
                )
            )
            # the api and step functions read tenants' limits; none may raise its own tenant's, and none but the api
            # (which counts requests) may fill another tenant's request window
            function.add_to_role_policy(
                iam.PolicyStatement(
                    effect=iam.Effect.DENY,
                    actions=list(WRITES),
                    resources=[self.table.table_arn],
                    conditions={"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": [
                        LIMITS_PARTITION, *([] if spec.counts_requests else [RATE_PARTITIONS])]}},
                )
            )  # fmt: skip
