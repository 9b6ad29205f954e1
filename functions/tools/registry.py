"""Tool registry: a tool is a Python function with a pydantic input model.

The JSON schema the model sees is derived from the input model; input that fails validation
becomes an error result the model sees, never a crash. Each tool has a timeout and says whether it is
idempotent (safe to run again after a crash); a tool with side effects runs at most once (functions/agent/tool.py).

The deployer's own tools are functions decorated with ``@tool`` in the ``tools/`` package beside ``app.py``
(``deployer_tools``); they are packaged into the functions and join the built-ins.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar, get_type_hints

from pydantic import BaseModel, ValidationError

from functions.agent.errors import UnknownToolError
from functions.agent.models import ToolCall, ToolError, ToolOutcome

DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 50.0  # under the tool function's own timeout (infra/functions.py), which cuts everything
# a fast tool (``fast=True``) runs inside the step invocation that asked for it, not in the tool function; its timeout
# is at most this, so the calls a step runs itself stay within functions/agent/tool.py IN_STEP_SECONDS
FAST_MAX_TIMEOUT_SECONDS = 2.0
DEPLOYER_PACKAGE = "tools"  # beside app.py

# Tool functions run on worker threads so a timeout can be kept. A call that timed out before it started is cancelled;
# one that was running is abandoned: its thread runs on until the function returns (on Lambda, possibly while a later
# invocation of the same container runs), and its result is never recorded.
_WORKERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="stepwise-tool")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_model: type[BaseModel]
    fn: Callable[[Any], str]  # receives an instance of input_model
    idempotent: bool = True  # False: it has side effects; never run twice for one call
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    # runs inside the step invocation (no Map, no tool function): pure, in-process work that needs no network,
    # no permission or setting of the tool function's, and finishes within FAST_MAX_TIMEOUT_SECONDS
    fast: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.timeout_seconds <= MAX_TIMEOUT_SECONDS:
            raise ValueError(f"tool {self.name!r}: timeout_seconds must be in (0, {MAX_TIMEOUT_SECONDS}]")
        if self.fast and self.timeout_seconds > FAST_MAX_TIMEOUT_SECONDS:
            raise ValueError(f"tool {self.name!r}: a fast tool's timeout_seconds must be at most "
                             f"{FAST_MAX_TIMEOUT_SECONDS:g}")  # fmt: skip

    def schema(self) -> dict[str, Any]:
        schema = self.input_model.model_json_schema()
        schema.pop("title", None)
        return {"name": self.name, "description": self.description, "input_schema": schema}


F = TypeVar("F", bound=Callable[..., str])


def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    idempotent: bool = True,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    fast: bool = False,
) -> Callable[[F], F]:
    """Make a function a tool: ``def fn(arguments: SomeModel) -> str``, its docstring the description.

    ``idempotent=False`` for a tool with side effects (it is then never run twice for one call). ``fast=True`` (with
    ``timeout_seconds`` at most FAST_MAX_TIMEOUT_SECONDS) runs its calls inside the step that asked for them."""

    def decorate(fn: F) -> F:
        hints = get_type_hints(fn)
        params = [p for p in inspect.signature(fn).parameters if p != "return"]
        model = hints.get(params[0]) if len(params) == 1 else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"@tool {fn.__name__}: takes exactly one argument annotated with a pydantic model")
        text = description or inspect.getdoc(fn)
        if not text:
            raise TypeError(f"@tool {fn.__name__}: needs a description (a docstring or description=)")
        spec = Tool(name=name or fn.__name__, description=text, input_model=model, fn=fn, idempotent=idempotent,
                    timeout_seconds=timeout_seconds, fast=fast)  # fmt: skip
        fn.__stepwise_tool__ = spec  # type: ignore[attr-defined]
        return fn

    return decorate


def tools_of(module: ModuleType) -> list[Tool]:
    found = [getattr(value, "__stepwise_tool__", None) for value in vars(module).values()]
    return [spec for spec in found if isinstance(spec, Tool)]


def deployer_tools(package: str = DEPLOYER_PACKAGE) -> list[Tool]:
    """The ``@tool`` functions of every module of the deployer's package (none if there is no such package)."""
    try:
        root = importlib.import_module(package)
    except ModuleNotFoundError as exc:
        if exc.name != package:
            raise  # the package exists but imports something missing: say so, do not drop its tools
        return []
    modules = [root] + [
        importlib.import_module(f"{package}.{info.name}")
        for info in sorted(pkgutil.iter_modules(getattr(root, "__path__", [])), key=lambda m: m.name)
    ]
    return [spec for module in modules for spec in tools_of(module)]


class ToolRegistry:
    """The deployment's tools (the core's ``Toolbox`` port)."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._schemas: dict[str, dict[str, Any]] = {}  # built once per tool (pydantic takes ~1.5 ms a schema)
        for spec in tools:
            self.register(spec)

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is registered twice")
        self._tools[tool.name] = tool

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    @property
    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def check(self, names: Iterable[str]) -> list[str]:
        """Return the names, or raise UnknownToolError naming the unknown ones."""
        names = list(names)
        unknown = [name for name in names if name not in self._tools]
        if unknown:
            raise UnknownToolError(f"unknown tools: {', '.join(unknown)}; available: {', '.join(self.names)}")
        return names

    def schemas(self, names: Iterable[str]) -> list[dict[str, Any]]:
        """The tools' definitions, built once per container; each call gets its own copy of the top level (where
        a prompt-cache marker goes), the input schemas shared."""
        return [dict(self._schema(name)) for name in self.check(names)]

    def _schema(self, name: str) -> dict[str, Any]:
        if name not in self._schemas:
            self._schemas[name] = self._tools[name].schema()
        return self._schemas[name]

    def idempotent(self, name: str) -> bool:
        spec = self._tools.get(name)
        return spec is None or spec.idempotent  # an unknown tool runs nothing: repeating its refusal is safe

    def in_step_seconds(self, name: str) -> float | None:
        spec = self._tools.get(name)
        return spec.timeout_seconds if spec is not None and spec.fast else None

    def execute(self, call: ToolCall, allowed: Iterable[str]) -> ToolOutcome:
        started = time.perf_counter()

        def outcome(content: str, error: ToolError | None = None) -> ToolOutcome:
            return ToolOutcome(
                tool_use_id=call.id,
                name=call.name,
                content=content,
                is_error=error is not None,
                error_kind=error,
                duration_ms=int((time.perf_counter() - started) * 1000),
                size=len(content),
            )

        spec = self._tools.get(call.name)
        if spec is None or call.name not in set(allowed):
            return outcome(f"tool {call.name!r} is not available to this run", ToolError.UNAVAILABLE)
        try:
            arguments = spec.input_model.model_validate(call.input)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}" for err in exc.errors()
            )
            return outcome(f"invalid input for {call.name}: {problems}", ToolError.INVALID_INPUT)
        future = _WORKERS.submit(spec.fn, arguments)
        try:
            result = future.result(timeout=spec.timeout_seconds)
        except FutureTimeout:
            if future.cancel():  # it never started (every worker was busy): it will not run later either
                return outcome(f"{call.name} did not start within {spec.timeout_seconds:g} s", ToolError.TIMED_OUT)
            effect = "" if spec.idempotent else "; it may have had its effect, and is not run again"
            return outcome(f"{call.name} did not finish within {spec.timeout_seconds:g} s{effect}", ToolError.TIMED_OUT)
        except ToolInputError as exc:
            return outcome(f"{call.name} failed: {exc}", ToolError.REJECTED)
        except Exception as exc:  # a tool bug must not lose the run: the model sees it and can recover
            return outcome(f"{call.name} raised {type(exc).__name__}: {exc}", ToolError.CRASHED)
        if not isinstance(result, str):
            return outcome(f"{call.name} returned {type(result).__name__}, not text", ToolError.CRASHED)
        return outcome(result)


class ToolInputError(ValueError):
    """A tool rejects its (schema-valid) input; the message goes back to the model."""
