"""What the deployment lets agents' tools reach (CDK context), and the grants that follow from it:

* ``mcp_servers``: ``[{"url": "https://mcp.example.com/mcp", "secret": "stepwise/mcp/example"}]`` (optional
  ``header``, default ``Authorization``; ``prefix``, default ``"Bearer "``): the servers agents may name, each one's
  credential a Secrets Manager secret (name or ARN) that only the api function (listing a server's tools) and
  the tool function (calling them) may read;
* ``lambda_tools``: ``[{"function": "refund-order", "idempotent": false, "timeout_seconds": 30}]``: the functions
  agents may use as tools; the state machine may invoke exactly those (AgentWorkflow.grant_lambda_tools);
* ``egress_allow_addresses``: addresses or CIDR ranges tools may reach though not public (none by default);
* ``http_fetch_allowed_domains``: the hosts the ``http_fetch`` tool may fetch from (none by default).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from functions.adapters.mcp_tools import parse_servers
from functions.adapters.settings import ToolAccessSettings
from functions.agent.agents import LAMBDA_FUNCTIONS
from functions.tools.egress import Egress
from infra.constructs.agent_functions import AgentFunctions

HOST = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*$"
)


class ToolAccess(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        mcp_servers: list[dict[str, Any]],
        lambda_tools: list[dict[str, Any]],
        egress_allow_addresses: list[str],
        http_fetch_allowed_domains: list[str],
    ) -> None:
        super().__init__(scope, construct_id)
        # validated as the functions will read them: a typo fails `cdk synth`, not the first tool call
        self.servers = parse_servers(json.dumps(mcp_servers))
        self.lambda_tools = LAMBDA_FUNCTIONS.validate_python(lambda_tools)
        Egress.parse(",".join(egress_allow_addresses))  # raises naming an address or range that is not one
        for domain in http_fetch_allowed_domains:
            if not HOST.match(domain):
                raise ValueError(f"http_fetch_allowed_domains: {domain!r} is not a host name (e.g. docs.example.com, "
                                 "*.example.com; no scheme, port or path)")  # fmt: skip
        self.egress, self.domains = egress_allow_addresses, http_fetch_allowed_domains
        self.secrets: list[secretsmanager.ISecret] = []
        for index, server in enumerate(self.servers):
            if server.secret is None:
                continue
            secret = (
                secretsmanager.Secret.from_secret_complete_arn(self, f"McpSecret{index}", server.secret)
                if server.secret.startswith("arn:")
                else secretsmanager.Secret.from_secret_name_v2(self, f"McpSecret{index}", server.secret)
            )
            self.secrets.append(secret)

    @property
    def lambda_functions(self) -> list[str]:
        return [tool.function for tool in self.lambda_tools]

    @property
    def settings(self) -> dict[str, str]:
        return {
            "STEPWISE_MCP_SERVERS": json.dumps([s.model_dump() for s in self.servers]) if self.servers else "",
            "STEPWISE_LAMBDA_TOOLS": json.dumps([t.model_dump() for t in self.lambda_tools])
            if self.lambda_tools
            else "",
            "STEPWISE_EGRESS_ALLOW_ADDRESSES": ",".join(self.egress),
            "STEPWISE_HTTP_FETCH_DOMAINS": ",".join(self.domains),
        }

    def grant(self, functions: AgentFunctions) -> None:
        """The functions that reach MCP servers (the api lists their tools, the tool function calls them) may read
        exactly the configured credentials."""
        for spec, function in functions:
            if not spec.reads(ToolAccessSettings):
                continue
            for secret in self.secrets:
                secret.grant_read(function)
            if self.secrets:
                Validations.of(function).acknowledge(
                    Acknowledgment(
                        id="AwsSolutions::AwsSolutions-SMG4",
                        reason="MCP credentials are issued by the servers' owners; Stepwise only reads them.",
                    )
                )
