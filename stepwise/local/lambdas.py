"""In-process Lambda: moto's Lambda invoke (used by the state machine interpreter) calls the real handlers."""

from __future__ import annotations

import importlib
import json
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stepwise.local.template import function_and_qualifier, function_arn, is_local_arn

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LocalContext:
    """The parts of the Lambda context object that handlers and powertools read."""

    function_name: str
    qualifier: str | None = None  # the alias it was invoked through
    memory_limit_in_mb: int = 256
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return function_arn(self.function_name, self.qualifier)

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


class LocalLambdas:
    """Function name -> handler. One invocation at a time per function, as in one Lambda container.

    There is one version of each function here, the code of this checkout: an invoke through any alias the
    template declares for the function runs it; one through an alias it does not declare is an error."""

    def __init__(self, handlers: dict[str, str], *, aliases: Mapping[str, frozenset[str]] | None = None) -> None:
        self._paths = handlers
        self._aliases = dict(aliases or {})
        self._registered: set[str] = set()  # Lambda tools: the deployer's functions, whatever their qualifiers
        self._handlers: dict[str, Handler] = {}
        self._locks = {name: threading.Lock() for name in handlers}
        self.invocations: dict[str, int] = dict.fromkeys(handlers, 0)
        self.current = threading.local()  # .name: the function running on this thread (for tracing AWS calls)

    def register(self, name: str, handler: str) -> None:
        """Run function ``name`` (a Lambda tool of the deployer's, which the local stack has no copy of) as the
        handler at ``handler`` ("package.module.function"), in this process."""
        self._paths[name] = handler
        self._registered.add(name)
        self._locks.setdefault(name, threading.Lock())
        self.invocations.setdefault(name, 0)

    def handler(self, name: str) -> Handler:
        if name not in self._handlers:
            module_path, attr = self._paths[name].rsplit(".", 1)
            self._handlers[name] = getattr(importlib.import_module(module_path), attr)
        return self._handlers[name]

    def invoke(self, name: str, event: dict[str, Any]) -> Any:
        """Run the function ``name`` (a name or an ARN, either with an alias) names on ``event``."""
        reference = name
        name, qualifier = function_and_qualifier(reference)
        if name not in self._paths:
            raise LookupError(f"function {name!r} is not a function of the local stack (a Lambda tool needs a local "
                              "handler: stepwise local --lambda-tool NAME=module.handler)")  # fmt: skip
        if not is_local_arn(reference) and name not in self._registered:
            raise LookupError(f"{reference!r} is another account's or region's function, not the local stack's "
                              f"{function_arn(name)}")  # fmt: skip
        known = self._aliases.get(name, frozenset())
        if qualifier not in (None, "$LATEST", *known) and name not in self._registered:
            raise LookupError(f"function {name!r} has no alias {qualifier!r} in the template (it has: "
                              f"{', '.join(sorted(known)) or 'none'})")  # fmt: skip
        with self._locks[name]:
            self.invocations[name] += 1
            self.current.name = name
            try:
                return self.handler(name)(event, LocalContext(function_name=name, qualifier=qualifier))
            finally:
                self.current.name = None

    def moto_invoke(self, function_name: str, body: Any, response_headers: dict[str, str]) -> bytes:
        """Drop-in for moto's LambdaSimpleBackend.invoke: errors come back as Lambda reports them."""
        event = json.loads(body) if body else {}
        try:
            result = self.invoke(function_name, event)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # reported to Step Functions as the function error, like Lambda does
            response_headers["x-amz-function-error"] = "Unhandled"
            default = type(exc).__name__ if isinstance(exc, Exception) else "Runtime.ExitError"  # it killed the runtime
            return json.dumps(
                {
                    # a test can make an exception look like a Lambda runtime failure (e.g. Sandbox.Timedout)
                    "errorType": getattr(exc, "lambda_error_type", default),
                    "errorMessage": str(exc),
                    "stackTrace": traceback.format_tb(exc.__traceback__)[-5:],
                }
            ).encode()
        return json.dumps(result).encode()
