"""Live events: the stream function behind a Lambda function URL in response-streaming mode.

API Gateway's HTTP API cannot stream (it buffers a whole answer, and cuts requests at 30 s), so the API answers
``GET .../events/stream`` with a 307 to this URL and a single-use ticket (functions/handlers/stream.py). The URL
itself is public (``AuthType: NONE``): the deployment's authorizer (API keys, JWTs or IAM) has vouched for the
caller at the API, and the ticket names the one session or run it may read, for 30 s. The number of streams open
at once is capped by the function's reserved concurrency: each holds one execution for as long as it lasts."""

from __future__ import annotations

from aws_cdk import CfnOutput
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from functions.adapters.settings import StreamSettings


class EventStream(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stream_fn: lambda_.Function,
        stream_alias: lambda_.Alias,
        max_streams: int,
    ) -> None:
        """The URL on the function's ``live`` alias (what a deploy shifts); ``max_streams``: the function's reserved
        concurrency (streams open at once, whichever version serves them); 0 for none (it then shares the account's
        unreserved concurrency with every other function)."""
        super().__init__(scope, construct_id)
        if max_streams < 0:
            raise ValueError(f"stream_max_concurrency {max_streams}: 0 (no reservation) or more")
        self.url = stream_alias.add_function_url(
            auth_type=lambda_.FunctionUrlAuthType.NONE, invoke_mode=lambda_.InvokeMode.RESPONSE_STREAM
        )
        if max_streams:
            cfn = stream_fn.node.default_child
            assert isinstance(cfn, lambda_.CfnFunction)
            cfn.reserved_concurrent_executions = max_streams
        CfnOutput(scope, "StreamUrl", value=self.url.url, description="The stream function's URL (the API redirects "
                  "GET .../events/stream there with a ticket)")  # fmt: skip

    @property
    def settings(self) -> dict[str, str]:
        """Where the api function redirects streams to, and the stream function's own settings (their defaults)."""
        own = {str(info.alias): str(info.default) for info in StreamSettings.model_fields.values()
               if info.alias != "STEPWISE_TABLE"}  # fmt: skip
        return {"STEPWISE_STREAM_URL": self.url.url, **own}
