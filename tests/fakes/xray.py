"""X-Ray in memory: what the functions' tracers would send to the X-Ray daemon, kept as the JSON documents the
daemon would get (no UDP, no daemon), with the AWS SDK patched as on Lambda. The tests run with tracing off
(POWERTOOLS_TRACE_DISABLED); ``recording`` switches it on for a block and puts everything back after it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import botocore.client
import botocore.endpoint
import pytest
from aws_xray_sdk import global_sdk_config
from aws_xray_sdk.core import patch, patcher, xray_recorder
from aws_xray_sdk.core.context import Context

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer


@dataclass
class Trace:
    """The documents of one invocation's trace: its segment and the subsegments streamed out before it ended."""

    documents: list[dict[str, Any]] = field(default_factory=list)

    def send_entity(self, entity: Any) -> None:  # the emitter's interface (aws_xray_sdk's UDPEmitter)
        self.documents.append(json.loads(entity.serialize()))

    def set_daemon_address(self, address: str | None) -> None:
        """Nothing to send to."""

    def entities(self) -> list[dict[str, Any]]:
        """Every segment and subsegment, nested ones included."""
        found: list[dict[str, Any]] = []
        pending = list(self.documents)
        while pending:
            entity = pending.pop(0)
            found.append(entity)
            pending.extend(entity.get("subsegments", []))
        return found

    def named(self, name: str) -> list[dict[str, Any]]:
        return [entity for entity in self.entities() if entity.get("name") == name]

    def text(self) -> str:
        """The whole trace as it would be sent (to check what it must not hold)."""
        return json.dumps(self.documents)


@dataclass
class XRay:
    traces: list[Trace] = field(default_factory=list)

    def invoke(self, handler: Callable[[dict[str, Any], Any], Any], event: dict[str, Any], context: Any) -> Any:
        """The handler's answer, its trace recorded (``last``) under a segment as Lambda's would be: sampled."""
        trace = Trace()
        self.traces.append(trace)
        xray_recorder.emitter = trace
        xray_recorder.begin_segment("lambda", sampling=1)
        try:
            return handler(event, context)
        finally:
            xray_recorder.end_segment()

    @property
    def last(self) -> Trace:
        return self.traces[-1]


@contextmanager
def recording(monkeypatch: pytest.MonkeyPatch, *tracers: Tracer) -> Iterator[XRay]:
    """X-Ray on for the block, as on Lambda with active tracing: the SDK enabled, these tracers on, botocore patched,
    every subsegment streamed out as it closes (powertools' setting on Lambda); a missing segment raises."""
    saved = (xray_recorder.context, xray_recorder.emitter, xray_recorder.sampling, xray_recorder.streaming_threshold)
    enabled = global_sdk_config.sdk_enabled()
    unpatched = {
        (botocore.client.BaseClient, "_make_api_call"): botocore.client.BaseClient.__dict__["_make_api_call"],
        (botocore.endpoint.Endpoint, "prepare_request"): botocore.endpoint.Endpoint.__dict__["prepare_request"],
    }
    xray = XRay()
    global_sdk_config.set_sdk_enabled(True)
    xray_recorder.configure(context=Context(), sampling=False, streaming_threshold=0, context_missing="RUNTIME_ERROR")
    for tracer in tracers:
        monkeypatch.setattr(tracer, "disabled", False)
    patch(["botocore"])
    try:
        yield xray
    finally:
        for (owner, name), original in unpatched.items():
            setattr(owner, name, original)
        if hasattr(botocore.client, "_xray_enabled"):
            delattr(botocore.client, "_xray_enabled")
        patcher._PATCHED_MODULES.discard("botocore")
        xray_recorder.context, xray_recorder.emitter, xray_recorder.sampling = saved[:3]
        xray_recorder.streaming_threshold = saved[3]
        global_sdk_config.set_sdk_enabled(enabled)
