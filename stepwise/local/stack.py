"""Start the whole Stepwise stack in this process, on 127.0.0.1, with no AWS account and no Docker.

* moto serves DynamoDB, SQS and Step Functions in-process (``mock_aws``), with its ASL interpreter switched on;
* the state machine is the one ``cdk synth`` produces (see template.py), its Lambda invokes dispatched to the
  project's real handlers (lambdas.py);
* pollers stand in for the SQS event source mappings of the intake and webhooks functions (batches of 10, partial
  failures, messages' visibility and redrive as SQS keeps them);
* an HTTP server turns requests into API Gateway HTTP API (payload v2) events for the real api handler,
  for the routes the template declares;
* a second one serves the stream function's app (server-sent events), as its function URL does when deployed.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from stepwise.local import moto_dynamodb, moto_stepfunctions
from stepwise.local.lambdas import LocalLambdas
from stepwise.local.template import ACCOUNT, REGION, Topology, synthesize, topology

if TYPE_CHECKING:
    from stepwise.local.jwt import LocalJwt

TABLE_NAME = "stepwise-local"
QUEUE_NAME = "stepwise-intake"
WEBHOOKS_QUEUE_NAME = "stepwise-webhooks"
STATE_MACHINE_NAME = "stepwise-local"
LOCAL_TENANT = "local"
RESULTS_BUCKET = "stepwise-local-results"
LOCAL_OPERATOR = "/_local/"  # an operator's routes, on the local stack only (deployed: the CLI writes the table)
LOCAL_KEYS = "/_local/keys"
LOCAL_TENANTS = "/_local/tenants"
LOCAL_ACTIVE = "/_local/active"  # the kill switch, for every tenant (stepwise active / stepwise kill)
LOCAL_DOCTOR = "/_local/doctor"  # `stepwise doctor`: the checks run in this process, on its moto resources
# connections the kernel holds until a server accepts them (http.server's default is 5: under a burst of
# concurrent clients the rest are reset); Linux caps it at net.core.somaxconn (4096 by default)
BACKLOG = 1024
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
# tools may reach 127.0.0.1 locally (MCP servers and pages served on this machine); nothing else that is not public
LOCAL_DEFAULTS = {
    "STEPWISE_MODEL_PROVIDER": "auto",
    "STEPWISE_DEFAULT_MODEL": "claude-haiku-4-5",
    "STEPWISE_EGRESS_ALLOW_ADDRESSES": "127.0.0.1",
    "STEPWISE_WEBHOOK_HTTP_HOSTS": "127.0.0.1",  # webhook endpoints on this machine, by plain http too
}


_AST_LOCK = threading.RLock()


def _serialize_ast() -> None:
    """CPython before 3.12 keeps the AST constructor's recursion depth in shared state: two threads parsing at
    once (the calculator, moto's interpreter's literal_eval) can fail with "AST constructor recursion depth
    mismatch". The local stack runs every function on threads of one process, so parsing is serialized here
    (on Lambda each function is its own process on 3.13)."""
    import ast
    import sys

    if sys.version_info >= (3, 12) or getattr(ast.parse, "_serialized", False):
        return
    parse = ast.parse

    def serialized(*args: Any, **kwargs: Any) -> Any:
        with _AST_LOCK:
            return parse(*args, **kwargs)

    serialized._serialized = True  # type: ignore[attr-defined]
    ast.parse = serialized


class LocalStack(AbstractContextManager["LocalStack"]):
    def __init__(
        self,
        *,
        port: int = 8787,
        host: str = "127.0.0.1",
        template: dict[str, Any] | None = None,
        lambda_tools: dict[str, str] | None = None,
        require_keys: bool = False,
        jwt: LocalJwt | None = None,
        intake: bool = True,
        histories: int = moto_stepfunctions.DEFAULT_HISTORIES,
    ) -> None:
        """``lambda_tools``: function name -> local handler ("module.function") of each Lambda tool, which the
        local stack runs in process (there is no Lambda service here). ``require_keys``: every route but /health
        and /openapi.json runs the stack's authorizer, as deployed (API keys per tenant, made with ``stepwise keys
        create``);
        ``jwt``: instead, API Gateway's JWT authorizer, emulated (stepwise/local/jwt.py); without either,
        requests are the local tenant's. ``histories``: the finished executions whose Step Functions event histories
        are kept, the latest (stepwise/local/moto_stepfunctions.py: an older one's GetExecutionHistory fails with
        ExecutionHistoryPruned; its record stays)."""
        if require_keys and jwt is not None:
            raise ValueError("a deployment has one way in: API keys or JWTs, not both")
        if histories < 0:
            raise ValueError("histories: the number of finished executions' histories kept, 0 or more")
        self.host = host
        self.port = port
        self.require_keys = require_keys
        self.jwt = jwt
        self.intake = intake  # False: accepted runs and turns stay queued (the API alone, e.g. to fuzz it)
        self.histories = histories
        self.topology: Topology = topology(template or synthesize())
        self.lambdas = LocalLambdas(self.topology.handlers, aliases=self.topology.aliases)
        for name, handler in (lambda_tools or {}).items():
            self.lambdas.register(name, handler)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> LocalStack:
        self._saved_environ = dict(os.environ)
        for key, value in {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_SESSION_TOKEN": "local",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "true",  # X-Ray is not emulated: no segments, no daemon to send them to
        }.items():
            os.environ[key] = value
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("AWS_ENDPOINT_URL", None)

        from moto import mock_aws
        from moto.awslambda_simple.models import LambdaSimpleBackend

        self._mock = mock_aws(
            config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
        )
        self._mock.start()
        moto_dynamodb.install()
        moto_stepfunctions.install()
        _serialize_ast()
        lambdas = self.lambdas

        def invoke(
            _backend: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any
        ) -> bytes:
            return lambdas.moto_invoke(function_name, body, response_headers)

        self._original_invoke = LambdaSimpleBackend.invoke
        LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign,assignment]
        self._create_resources()
        self._serve_streams()
        self._configure_functions()
        if self.intake:
            self._spawn(lambda: self._poll(self.queue_url, self.queue_arn, self.topology.intake_function),
                        "intake-poller")  # fmt: skip
        self._spawn(self._janitor, "janitor")
        self._spawn(lambda: self._poll(self.webhooks_queue_url, self.webhooks_queue_arn,
                                       self.topology.webhooks_function), "webhooks-poller")  # fmt: skip
        self._server = _ApiServer((self.host, self.port), _make_http_handler(self))
        self.port = self._server.server_address[1]
        self._spawn(self._server.serve_forever, "http")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._streams.close()  # the streams still open end (before moto goes: they read the table)
        for thread in self._threads:
            thread.join(timeout=5)
        from moto.awslambda_simple.models import LambdaSimpleBackend

        LambdaSimpleBackend.invoke = self._original_invoke  # type: ignore[method-assign]
        self._mock.stop()
        os.environ.clear()
        os.environ.update(self._saved_environ)
        from functions.adapters import wiring

        wiring.reset()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def put_secret(self, name: str, value: str) -> None:
        """A secret in the local (moto) Secrets Manager, e.g. an MCP server's credential."""
        import boto3

        boto3.client("secretsmanager", region_name=REGION).create_secret(Name=name, SecretString=value)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=f"stepwise-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    # ------------------------------------------------------------------------------------------ resources
    def _create_resources(self) -> None:
        import boto3

        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.s3 = boto3.client("s3", region_name=REGION)
        self.s3.create_bucket(Bucket=RESULTS_BUCKET)
        self.dynamodb.create_table(
            TableName=TABLE_NAME,
            KeySchema=self.topology.table_key_schema,
            AttributeDefinitions=self.topology.table_attributes,
            BillingMode="PAY_PER_REQUEST",
            **({"GlobalSecondaryIndexes": self.topology.table_indexes} if self.topology.table_indexes else {}),
        )
        self.queue_url, self.queue_arn, self.dead_letter_queue_url = self._queue(QUEUE_NAME, "STEPWISE_QUEUE_URL")
        self.webhooks_queue_url, self.webhooks_queue_arn, self.webhooks_dead_letter_queue_url = self._queue(
            WEBHOOKS_QUEUE_NAME, "STEPWISE_WEBHOOKS_QUEUE_URL"
        )
        self.state_machine_arn = self.sfn.create_state_machine(
            name=STATE_MACHINE_NAME,
            definition=self.topology.definition,
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/stepwise-local",
            type="STANDARD",
        )["stateMachineArn"]

    def _queue(self, name: str, variable: str) -> tuple[str, str, str]:
        """A queue with its dead-letter queue, redriven after as many receives as the template's (the queue the
        functions' ``variable`` names): its URL, ARN and its dead-letter queue's URL."""
        dlq_url = self.sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = self._arn(dlq_url)
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": self.topology.queue_receive_counts[variable]}
        url = self.sqs.create_queue(
            QueueName=name, Attributes={"VisibilityTimeout": "30", "RedrivePolicy": json.dumps(redrive)}
        )["QueueUrl"]
        return url, self._arn(url), dlq_url

    def _arn(self, queue_url: str) -> str:
        return str(self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
                   ["QueueArn"])  # fmt: skip

    def _serve_streams(self) -> None:
        """The stream function's app (functions/handlers/stream.py) on its own port: the local function URL, to which
        the api function redirects GET .../events/stream (one thread per stream, as one Lambda per stream)."""
        from functions.handlers import stream

        self._streams = stream.server(self.host, 0)
        self.stream_url = f"http://{self.host}:{self._streams.server_address[1]}/"
        self._spawn(self._streams.serve_forever, "streams")

    def _configure_functions(self) -> None:
        """The environment the template gives the functions, its resources replaced by the local ones.

        Local differences: the tenant is ``local``; the model provider is ``auto`` (the labelled offline
        stub without ANTHROPIC_API_KEY) and the default model claude-haiku-4-5, unless set; and any STEPWISE_*
        setting already set in this process's environment (but the resources and the tenant) wins over the
        template's."""
        environment = self.topology.environment(
            {
                "AWS::DynamoDB::GlobalTable": TABLE_NAME,
                "STEPWISE_QUEUE_URL": self.queue_url,
                "STEPWISE_WEBHOOKS_QUEUE_URL": self.webhooks_queue_url,
                "AWS::StepFunctions::StateMachine": self.state_machine_arn,
                "AWS::S3::Bucket": RESULTS_BUCKET,
                "AWS::SecretsManager::Secret": None,  # locally the key is ANTHROPIC_API_KEY, if set
                "AWS::Lambda::Url": self.stream_url,
            }
        )
        chosen = {k: v for k, v in self._saved_environ.items() if k.startswith("STEPWISE_")}
        auth = {"STEPWISE_AUTH": "api_key" if self.require_keys else "none"}
        if self.jwt is not None:
            auth = {"STEPWISE_AUTH": "jwt", "STEPWISE_TENANT_CLAIM": self.jwt.tenant_claim}
        local = {**LOCAL_DEFAULTS, **chosen, "STEPWISE_DEFAULT_TENANT": LOCAL_TENANT, **auth}
        resources = self.topology.references
        os.environ.update({**environment, **{k: v for k, v in local.items() if k not in resources}})
        from functions.adapters import wiring

        wiring.reset()

    def _janitor(self) -> None:
        """What a long-lived local stack would otherwise keep of every run, dropped every few seconds:

        * moto's Step Functions interpreter appends every thread it starts (~16 per run: an execution's, each Task
          state's, each Map iteration's) to a module-level list it never reads nor prunes (``TMP_THREADS``): the
          finished ones are dropped from it;
        * the event histories of finished executions but the last ``histories`` (moto_stepfunctions.prune)."""
        from moto.stepfunctions.parser.utils import TMP_THREADS

        while not self._stop.wait(2):
            TMP_THREADS[:] = [thread for thread in list(TMP_THREADS) if thread.is_alive()]
            moto_stepfunctions.prune(self.histories)

    # ------------------------------------------------------------------------------------------ queues
    def _poll(self, queue_url: str, queue_arn: str, function: str) -> None:
        """Stands in for an SQS event source mapping: batches to ``function``, partial failures kept (left on the
        queue as they are: visible again after the queue's visibility timeout, or the one the function set)."""
        while not self._stop.is_set():
            try:
                messages = self.sqs.receive_message(
                    QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
                ).get("Messages", [])
            except Exception:  # moto torn down while stopping
                if self._stop.is_set():
                    return
                raise
            if not messages:
                self._stop.wait(0.05)
                continue
            event = {"Records": [self._sqs_record(m, queue_arn) for m in messages]}
            try:
                result = self.lambdas.invoke(function, event)
                failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
            except Exception:
                failed = {m["MessageId"] for m in messages}
            for message in messages:
                if message["MessageId"] not in failed:
                    self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _sqs_record(self, message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": {},
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": REGION,
        }

    # ------------------------------------------------------------------------------------------ http
    def api_event(self, method: str, raw_path: str, headers: dict[str, str], body: str) -> dict[str, Any]:
        """An API Gateway HTTP API (payload format 2.0) event, as the api function receives it."""
        parts = urlsplit(raw_path)
        now = datetime.now(UTC)
        route = next((r for r in self.topology.routes if r.match(method, parts.path)), None)
        route_key = f"{method} {route.path}" if route else "$default"
        return {
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": parts.path,
            "rawQueryString": parts.query,
            "headers": {k.lower(): v for k, v in headers.items()},
            "queryStringParameters": _query_parameters(parts.query),
            "requestContext": {
                "accountId": ACCOUNT,
                "apiId": "local",
                "domainName": f"{self.host}:{self.port}",
                "domainPrefix": "local",
                "http": {
                    "method": method,
                    "path": parts.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1",
                    "userAgent": headers.get("User-Agent", ""),
                },
                "requestId": str(uuid.uuid4()),
                "routeKey": route_key,
                "stage": "$default",
                "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "timeEpoch": int(now.timestamp() * 1000),
            },
            "body": body or None,
            "isBase64Encoded": False,
        }

    def handle_http(
        self, method: str, raw_path: str, headers: dict[str, str], body: str, *, client: str = "127.0.0.1"
    ) -> tuple[int, dict[str, str], str]:
        path = urlsplit(raw_path).path
        if path.startswith(LOCAL_OPERATOR):
            # the operator's routes answer this machine only, however the stack is bound, and only to a JSON
            # request addressed to a loopback name (no cross-site form post, no DNS rebinding)
            host = {k.lower(): v for k, v in headers.items()}.get("host", "").rsplit(":", 1)[0].strip("[]")
            json_body = {k.lower(): v for k, v in headers.items()}.get("content-type", "").startswith(
                "application/json"
            )
            if client not in LOOPBACK or host not in LOOPBACK_NAMES or (method == "POST" and not json_body):
                return 403, {"content-type": "application/json"}, json.dumps({"message": "Forbidden"})
            if path.startswith(LOCAL_TENANTS):
                return self._tenants(method, path, body)
            if path.startswith(LOCAL_ACTIVE):
                return self._active(method, path, urlsplit(raw_path).query, body)
            if path == LOCAL_DOCTOR and method == "GET":
                from stepwise.local import doctor

                return 200, {"content-type": "application/json"}, json.dumps(doctor.report(self))
            return self._keys(method, path, body)
        route = next((r for r in self.topology.routes if r.match(method, path)), None)
        if route is None:
            return 404, {"content-type": "application/json"}, json.dumps({"message": "Not Found"})
        event = self.api_event(method, raw_path, headers, body)
        if self.jwt is not None and route.authorized:  # as API Gateway's JWT authorizer: 401 before any function
            claims = self.jwt.claims(headers)
            if claims is None:
                return 401, {"content-type": "application/json"}, json.dumps({"message": "Unauthorized"})
            event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
        if self.require_keys and route.authorized:  # as API Gateway does: the authorizer first, its context passed on
            answer = self.lambdas.invoke(self.topology.authorizer_function, self._authorizer_event(event))
            if not answer.get("isAuthorized"):
                return 403, {"content-type": "application/json"}, json.dumps({"message": "Forbidden"})
            event["requestContext"]["authorizer"] = {"lambda": answer.get("context") or {}}
        result = self.lambdas.invoke(self.topology.api_function, event)
        return int(result["statusCode"]), dict(result.get("headers") or {}), result.get("body") or ""

    @staticmethod
    def _authorizer_event(event: dict[str, Any]) -> dict[str, Any]:
        """An HTTP API Lambda authorizer event (payload 2.0) for a request."""
        return {
            "version": "2.0",
            "type": "REQUEST",
            "routeArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT}:local/$default/{event['routeKey'].replace(' ', '')}",
            "identitySource": [],
            "routeKey": event["routeKey"],
            "rawPath": event["rawPath"],
            "rawQueryString": event["rawQueryString"],
            "headers": event["headers"],
            "queryStringParameters": event["queryStringParameters"],
            "requestContext": event["requestContext"],
        }

    def _keys(self, method: str, path: str, body: str) -> tuple[int, dict[str, str], str]:
        """The local operator's key routes (the local stack only; deployed, `stepwise keys --table` writes the
        table with your AWS credentials): POST /_local/keys {tenant, name}, GET /_local/keys, POST
        /_local/keys/{key_id}/revoke."""
        from functions.adapters import wiring
        from functions.adapters.settings import Settings, load
        from functions.handlers import authorizer

        keys = wiring.api_keys(load(Settings))

        def answer() -> tuple[int, Any] | None:
            if method == "POST" and path == LOCAL_KEYS:
                request = json.loads(body or "{}")
                key, record = keys.create(str(request.get("tenant", "")), str(request.get("name") or ""))
                return 201, {"key": key, **record.public()}
            if method == "GET" and path == LOCAL_KEYS:
                return 200, {"data": [record.public() for record in keys.list()]}
            if method == "POST" and path.endswith("/revoke"):
                record = keys.revoke(path.removeprefix(LOCAL_KEYS + "/").removesuffix("/revoke"))
                authorizer.forget()  # at once here (deployed: within the authorizer's cache time)
                return 200, record.public()
            return None

        return _operator_answer(answer, not_found="KEY_NOT_FOUND")

    def _tenants(self, method: str, path: str, body: str) -> tuple[int, dict[str, str], str]:
        """The local operator's tenant limit routes (deployed, `stepwise tenants --table` writes the table): GET
        /_local/tenants, GET|POST|DELETE /_local/tenants/{tenant} (POST {daily_usd, requests_per_minute})."""
        from functions.adapters import wiring
        from functions.adapters.settings import Settings, load
        from functions.agent.errors import RequestRejectedError

        tenants = wiring.tenants(load(Settings))
        tenant = unquote(path.removeprefix(LOCAL_TENANTS).removeprefix("/"))

        def answer() -> tuple[int, Any] | None:
            if method == "GET":
                return 200, tenants.get(tenant).public() if tenant else {"data": [t.public() for t in tenants.list()]}
            if method not in ("POST", "DELETE") or not tenant:
                return None
            if method == "POST":
                request = json.loads(body or "{}")
                if not isinstance(request, dict) or set(request) - {"daily_usd", "requests_per_minute"}:
                    raise RequestRejectedError("the body is {daily_usd?, requests_per_minute?}")
                changed = tenants.set(tenant, **request)
            else:
                changed = tenants.clear(tenant)
            wiring.forget_tenant_limits()  # at once here (deployed: within LIMITS_CACHE_SECONDS)
            return 200, changed.public()

        return _operator_answer(answer, not_found="TENANT_NOT_FOUND")

    def _active(self, method: str, path: str, query: str, body: str) -> tuple[int, dict[str, str], str]:
        """The local operator's kill switch (deployed, `stepwise kill --table` runs the same use case with your AWS
        credentials): GET /_local/active?tenant=&limit=&page=; POST /_local/active/cancel {tenant?, id?, all?,
        limit?, page?} (an id: that run or session; a tenant: its active work; all: true, everyone's)."""
        from functions.adapters import wiring
        from functions.adapters.settings import ApiSettings, load
        from functions.agent.active import BY_OPERATOR, MAX_PAGE
        from functions.agent.errors import RequestRejectedError
        from functions.agent.models import RunKey

        switch = wiring.kill_switch(load(ApiSettings))

        def answer() -> tuple[int, Any] | None:
            if method == "GET" and path == LOCAL_ACTIVE:
                params = dict(parse_qsl(query))
                entries, next_page = switch.list(params.get("tenant"), limit=_limit(params.get("limit")),
                                                 page=params.get("page"))  # fmt: skip
                return 200, {"data": [entry.public() for entry in entries], "next_page": next_page}
            if method != "POST" or path != f"{LOCAL_ACTIVE}/cancel":
                return None
            request = json.loads(body or "{}")
            if not isinstance(request, dict) or set(request) - {"tenant", "id", "all", "limit", "page"}:
                raise RequestRejectedError("the body is {tenant?, id?, all?, limit?, page?}")
            tenant, run_id = request.get("tenant"), request.get("id")
            if run_id is not None:
                if tenant is None:
                    raise RequestRejectedError("id needs its tenant")
                return 200, {"data": [switch.stop(RunKey(str(tenant), str(run_id)), reason=BY_OPERATOR).public()],
                             "next_page": None}  # fmt: skip
            if (tenant is None) != (request.get("all") is True):
                raise RequestRejectedError("name a tenant, or all: true for every tenant's active work")
            report = switch.stop_all(tenant, reason=BY_OPERATOR, limit=_limit(request.get("limit")),
                                     page=request.get("page"))  # fmt: skip
            return 200, report.public()

        def _limit(raw: object) -> int:
            limit = MAX_PAGE if raw is None else int(str(raw))
            if not 1 <= limit <= MAX_PAGE:
                raise RequestRejectedError(f"limit: 1 to {MAX_PAGE}")
            return limit

        return _operator_answer(answer, not_found="RUN_NOT_FOUND")


def _operator_answer(
    answer: Callable[[], tuple[int, Any] | None], *, not_found: str
) -> tuple[int, dict[str, str], str]:
    """An operator route's answer as JSON, the core's refusals as 400 and 404 (``None``: no such route)."""
    from functions.agent.errors import NotFoundError, RequestRejectedError

    json_type = {"content-type": "application/json"}
    try:
        answered = answer()
    except RequestRejectedError as exc:
        return 400, json_type, json.dumps({"error": {"code": "VALIDATION_ERROR", "message": str(exc)}})
    except NotFoundError as exc:
        return 404, json_type, json.dumps({"error": {"code": not_found, "message": str(exc)}})
    except ValueError as exc:
        return 400, json_type, json.dumps({"error": {"code": "INVALID_JSON", "message": str(exc)}})
    if answered is None:
        return 404, json_type, json.dumps({"message": "Not Found"})
    status, body = answered
    return status, json_type, json.dumps(body)


def _query_parameters(query: str) -> dict[str, str] | None:
    """As API Gateway (payload 2.0) gives them: a repeated parameter's values joined with commas."""
    joined: dict[str, str] = {}
    for name, value in parse_qsl(query):
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return joined or None


class _ApiServer(ThreadingHTTPServer):
    """API Gateway, locally: a thread per connection, and a backlog that holds a burst of them."""

    request_queue_size = BACKLOG


def _make_http_handler(stack: LocalStack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "stepwise-local"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
            try:
                status, headers, payload = stack.handle_http(
                    self.command, self.path, dict(self.headers.items()), body, client=self.client_address[0]
                )
            except Exception as exc:  # the api function crashed: API Gateway answers 500
                status, headers, payload = (
                    500,
                    {"content-type": "application/json"},
                    json.dumps({"message": "Internal Server Error", "detail": f"{type(exc).__name__}: {exc}"}),
                )
            data = payload.encode()
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def __getattr__(self, name: str) -> Any:
            """Any other method (TRACE, QUERY, ...) reaches the routes too: one no route has is a 404, as deployed."""
            if name.startswith("do_"):
                return self._serve
            raise AttributeError(name)

        def log_message(self, format: str, *args: Any) -> None:
            if os.environ.get("STEPWISE_LOCAL_ACCESS_LOG"):
                super().log_message(format, *args)

    return Handler
