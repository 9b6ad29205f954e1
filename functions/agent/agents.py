"""Agents: versioned, tenant-scoped agent definitions in the shape of the Managed Agents API. Pure.

An agent version is immutable; ``Agents.update`` writes the next one (optionally only if the caller read the
current one: optimistic concurrency). Sessions pin a version and keep a copy of it (functions/agent/sessions.py).

What Stepwise cannot offer is refused by name, never ignored: the hosted sandbox toolset
(``agent_toolset_20260401``), the ``auto`` permission policy, skills, multiagent, execution identities, and
model options (effort, speed, inference_geo).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from functions.agent.errors import ConflictError, NotFoundError, RequestRejectedError, clip
from functions.agent.models import AgentConfig, CustomTool, LambdaTool, McpTool
from functions.agent.ports import AgentStore, Clock
from functions.agent.requests import Strict, parse

TOOLSET = "stepwise_toolset_20261201"  # the deployment's built-in tools (calculator, current_time)
LAMBDA_TOOL = "stepwise_lambda_20261201"  # a Lambda function of the deployer's, one the deployment allows
SANDBOX_TOOLSET = "agent_toolset_20260401"
MAX_TOOLS = 256
MAX_MCP_SERVERS = 20
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
MAX_SYSTEM_CHARS = 100_000
MAX_DEFINITION_BYTES = 100_000
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
AGENT_ID = re.compile(r"^agent_[0-9a-f]{26}$")


class AgentNotFoundError(NotFoundError):
    pass


class AgentVersionConflictError(ConflictError):
    """An update named a version that is not the agent's current one."""


class Policy(Strict):
    type: Literal["always_allow", "always_ask"]


class DefaultConfig(Strict):
    enabled: bool = True
    permission_policy: Policy = Field(default_factory=lambda: Policy(type="always_allow"))


class ToolConfig(Strict):
    name: str
    enabled: bool | None = None
    permission_policy: Policy | None = None


class Toolset(Strict):
    type: Literal["stepwise_toolset_20261201"]
    default_config: DefaultConfig = Field(default_factory=DefaultConfig)
    configs: list[ToolConfig] = Field(default_factory=list)


class CustomToolSpec(Strict):
    type: Literal["custom"]
    name: str
    description: str = Field(min_length=1, max_length=1024)
    input_schema: dict[str, Any]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TOOL_NAME.fullmatch(value):
            raise ValueError("must be 1 to 64 letters, digits, '_' or '-'")
        return value

    @field_validator("input_schema")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('must be a JSON Schema with "type": "object"')
        return value


class McpToolset(Strict):
    """The tools an MCP server lists (when a session is created: once per agent version, then cached)."""

    type: Literal["mcp_toolset"]
    mcp_server_name: str = Field(min_length=1)
    default_config: DefaultConfig = Field(default_factory=DefaultConfig)
    configs: list[ToolConfig] = Field(default_factory=list)


class LambdaToolSpec(CustomToolSpec):
    """Stepwise's own: a tool that is a Lambda function the deployment allows; the workflow invokes it directly."""

    type: Literal["stepwise_lambda_20261201"]  # type: ignore[assignment]
    function: str = Field(min_length=1, max_length=256)
    permission_policy: Policy = Field(default_factory=lambda: Policy(type="always_allow"))


ToolSpec = Annotated[Toolset | CustomToolSpec | McpToolset | LambdaToolSpec, Field(discriminator="type")]


class LambdaFunction(Strict):
    """A function the deployment lets agents use as a tool (CDK context ``lambda_tools``)."""

    # what agents name and the workflow invokes: the function's name or ARN, as the deployer wrote it
    function: str = Field(min_length=1, max_length=256)
    idempotent: bool = False
    timeout_seconds: int = Field(default=30, ge=1, le=900)


class McpServer(Strict):
    type: Literal["url"]
    name: str = Field(min_length=1, max_length=64)
    url: str = Field(min_length=1, max_length=2048)


class ModelSpec(Strict):
    id: str = Field(min_length=1, max_length=200)
    speed: Literal["standard"] | None = None  # "fast", effort and inference_geo are not offered


class AgentFields(Strict):
    """The fields create and update share (update: every one optional)."""

    name: str | None = Field(default=None, min_length=1, max_length=256)
    model: str | ModelSpec | None = None
    description: str | None = Field(default=None, max_length=2048)
    system: str | None = Field(default=None, max_length=MAX_SYSTEM_CHARS)
    tools: list[ToolSpec] | None = Field(default=None, max_length=MAX_TOOLS)
    mcp_servers: list[McpServer] | None = Field(default=None, max_length=MAX_MCP_SERVERS)
    metadata: dict[str, str | None] | None = None
    skills: list[Any] | None = None
    multiagent: Any = None
    execution_identity: Any = None


class AgentUpdate(AgentFields):
    version: int | None = Field(default=None, ge=1)


A = TypeVar("A", bound=AgentFields)


class Agent(BaseModel):
    """One stored version of an agent."""

    model_config = ConfigDict(defer_build=True)

    id: str
    tenant: str
    name: str
    model: str
    description: str | None = None
    system: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)  # normalised ToolSpec dumps
    mcp_servers: list[dict[str, Any]] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    version: int
    created_at: str
    updated_at: str
    archived_at: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "agent",
            "name": self.name,
            "description": self.description,
            "system": self.system,
            "model": {"id": self.model, "speed": "standard"},
            "tools": self.tools,
            "mcp_servers": self.mcp_servers,
            "skills": [],
            "multiagent": None,
            "execution_identity": None,
            "metadata": self.metadata,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "archived_at": self.archived_at,
        }

    def changes(self) -> dict[str, Any]:
        """What makes one version differ from another."""
        return self.model_dump(include={"name", "model", "description", "system", "tools", "mcp_servers", "metadata"})


def _refuse_unsupported(raw: dict[str, Any]) -> None:
    """Name what Stepwise does not offer before anything else is checked."""
    if raw.get("skills"):
        raise RequestRejectedError("skills: not supported by Stepwise (agents carry tools and a system prompt)")
    if raw.get("multiagent") is not None:
        raise RequestRejectedError("multiagent: not supported by Stepwise")
    if raw.get("execution_identity") is not None:
        raise RequestRejectedError(
            "execution_identity: not supported; Stepwise's functions run with their own IAM roles"
        )
    model = raw.get("model")
    if isinstance(model, dict):
        for option in ("effort", "inference_geo"):
            if model.get(option) is not None:
                raise RequestRejectedError(f"model.{option}: not supported by Stepwise")
        if model.get("speed") not in (None, "standard"):
            raise RequestRejectedError(f"model.speed: {clip(model.get('speed'))!r} is not supported (only 'standard')")
    tools = raw.get("tools")
    for index, tool in enumerate(tools if isinstance(tools, list) else []):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == SANDBOX_TOOLSET:
            raise RequestRejectedError(
                f"tools.{index}.type: {SANDBOX_TOOLSET} needs Anthropic's hosted sandbox (bash, files, web), which "
                f"Stepwise does not have; use {TOOLSET} (calculator, current_time) or custom tools"
            )
        if kind not in (TOOLSET, "custom", "mcp_toolset", LAMBDA_TOOL):
            raise RequestRejectedError(
                f"tools.{index}.type: unknown tool type {clip(kind)!r} (expected {TOOLSET}, custom, mcp_toolset or "
                f"{LAMBDA_TOOL})"
            )
        for where, config in _policies(tool):
            if config.get("type") == "auto":
                raise RequestRejectedError(
                    f"tools.{index}.{where + '.' if where else ''}permission_policy: 'auto' is not offered; use "
                    "always_allow or always_ask"
                )


def _policies(tool: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    if isinstance(tool.get("permission_policy"), dict):
        yield "", tool["permission_policy"]
    default = tool.get("default_config")
    if isinstance(default, dict) and isinstance(default.get("permission_policy"), dict):
        yield "default_config", default["permission_policy"]
    for n, config in enumerate(tool.get("configs") or []):
        if isinstance(config, dict) and isinstance(config.get("permission_policy"), dict):
            yield f"configs.{n}", config["permission_policy"]


def _check_tools(
    tools: list[ToolSpec],
    servers: list[McpServer],
    builtins: list[str],
    functions: dict[str, LambdaFunction],
    mcp_allowed: Callable[[str], bool],
) -> None:
    names: list[str] = []
    toolsets = [tool for tool in tools if isinstance(tool, Toolset)]
    if len(toolsets) > 1:
        raise RequestRejectedError(f"tools: {TOOLSET} may appear once")
    for toolset in toolsets:
        configured = [config.name for config in toolset.configs]
        unknown = [name for name in configured if name not in builtins]
        if unknown:
            raise RequestRejectedError(
                f"tools.configs: unknown built-in tool {clip(unknown[0])!r} (this deployment has {', '.join(builtins)})"
            )
        if len(set(configured)) != len(configured):
            raise RequestRejectedError("tools.configs: a tool is configured twice")
        names += [name for name in builtins if _enabled(toolset, name)]
    names += [tool.name for tool in tools if isinstance(tool, CustomToolSpec)]  # (and Lambda tools)
    if len(set(names)) != len(names):
        raise RequestRejectedError("tools: two tools have the same name")
    for index, tool in enumerate(tools):
        if isinstance(tool, LambdaToolSpec) and tool.function not in functions:
            allowed = ", ".join(sorted(functions)) or "none"
            raise RequestRejectedError(
                f"tools.{index}.function: {clip(tool.function)!r} is not a Lambda tool this deployment allows "
                f"(allowed: {allowed}; CDK context lambda_tools)"
            )
    server_names = [server.name for server in servers]
    if len(set(server_names)) != len(server_names):
        raise RequestRejectedError("mcp_servers: two servers have the same name")
    used = {tool.mcp_server_name for tool in tools if isinstance(tool, McpToolset)}
    if missing := used - set(server_names):
        raise RequestRejectedError(f"tools: mcp_toolset names unknown server {clip(sorted(missing)[0])!r}")
    if unused := set(server_names) - used:
        unreferenced = clip(sorted(unused)[0])
        raise RequestRejectedError(f"mcp_servers: server {unreferenced!r} is not referenced by an mcp_toolset")
    for index, server in enumerate(servers):
        if not mcp_allowed(server.url):
            raise RequestRejectedError(
                f"mcp_servers.{index}.url: this deployment does not allow MCP server {server.url[:200]!r} "
                "(CDK context mcp_servers)"
            )


def _config_of(toolset: Toolset | McpToolset, name: str) -> ToolConfig | None:
    return next((config for config in toolset.configs if config.name == name), None)


def _enabled(toolset: Toolset | McpToolset, name: str) -> bool:
    config = _config_of(toolset, name)
    return config.enabled if config is not None and config.enabled is not None else toolset.default_config.enabled


def _asks(toolset: Toolset | McpToolset, name: str) -> bool:
    config = _config_of(toolset, name)
    policy = config.permission_policy if config is not None and config.permission_policy else None
    return (policy or toolset.default_config.permission_policy).type == "always_ask"


def check_metadata(current: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > MAX_METADATA_PAIRS:
        raise RequestRejectedError(f"metadata: at most {MAX_METADATA_PAIRS} pairs")
    for key, value in merged.items():
        if not 0 < len(key) <= MAX_METADATA_KEY:
            raise RequestRejectedError(f"metadata: keys are 1 to {MAX_METADATA_KEY} characters ({key[:70]!r})")
        if len(value) > MAX_METADATA_VALUE:
            raise RequestRejectedError(f"metadata.{key}: values are at most {MAX_METADATA_VALUE} characters")
    return merged


McpListing = Callable[[str, str], list[dict[str, Any]]]  # (server name, url) -> the tools it lists


def engine_config(
    agent: Agent,
    builtins: list[str],
    *,
    functions: dict[str, LambdaFunction] | None = None,
    mcp_tools: McpListing | None = None,
) -> tuple[list[str], AgentConfig]:
    """The built-in tools (of ``builtins``, the deployment's) a session of ``agent`` may call, and what else the
    engine needs of the agent: its custom and Lambda tools, and its MCP servers' tools (``mcp_tools`` lists them).

    Raises RequestRejectedError: a Lambda tool the deployment no longer allows, an MCP listing that configures a
    tool the server does not list or whose names collide with the agent's other tools."""
    enabled: list[str] = []
    ask: list[str] = []
    custom: list[CustomTool] = []
    lambdas: list[LambdaTool] = []
    mcp: list[McpTool] = []
    servers = {server["name"]: server["url"] for server in agent.mcp_servers}
    for index, raw in enumerate(agent.tools):
        if raw["type"] == TOOLSET:
            toolset = Toolset.model_validate(raw)
            enabled = [name for name in builtins if _enabled(toolset, name)]
            ask += [name for name in enabled if _asks(toolset, name)]
        elif raw["type"] == "custom":
            custom.append(
                CustomTool(name=raw["name"], description=raw["description"], input_schema=raw["input_schema"])
            )
        elif raw["type"] == LAMBDA_TOOL:
            spec = LambdaToolSpec.model_validate(raw)
            target = (functions or {}).get(spec.function)
            if target is None:
                raise RequestRejectedError(
                    f"agent {agent.id} version {agent.version}: tools.{index}.function {spec.function!r} is no "
                    "longer a Lambda tool this deployment allows"
                )
            lambdas.append(LambdaTool(name=spec.name, description=spec.description, input_schema=spec.input_schema,
                                      function=target.function, idempotent=target.idempotent,
                                      timeout_seconds=target.timeout_seconds))  # fmt: skip
            if spec.permission_policy.type == "always_ask":
                ask.append(spec.name)
        elif raw["type"] == "mcp_toolset":
            mcp_set = McpToolset.model_validate(raw)
            if mcp_tools is None:
                raise RequestRejectedError("this deployment cannot reach MCP servers (CDK context mcp_servers)")
            listed = mcp_tools(mcp_set.mcp_server_name, servers[mcp_set.mcp_server_name])
            listed_names = {tool["name"] for tool in listed}
            for tool_config in mcp_set.configs:
                if tool_config.name not in listed_names:
                    raise RequestRejectedError(
                        f"tools.{index}.configs: MCP server {clip(mcp_set.mcp_server_name)!r} lists no tool "
                        f"{clip(tool_config.name)!r} (it lists {', '.join(sorted(listed_names)) or 'none'})"
                    )
            for tool in listed:
                if _enabled(mcp_set, tool["name"]) and not TOOL_NAME.fullmatch(str(tool["name"])):
                    raise RequestRejectedError(
                        f"tools.{index}: MCP server {mcp_set.mcp_server_name!r} lists a tool named "
                        f"{str(tool['name'])[:80]!r}, which the Messages API does not accept (1 to 64 letters, "
                        "digits, '_' or '-'): disable it with configs"
                    )
                if _enabled(mcp_set, tool["name"]):
                    mcp.append(McpTool(server=mcp_set.mcp_server_name, **tool))
                    if _asks(mcp_set, tool["name"]):
                        ask.append(tool["name"])
    size = len(json.dumps([tool.model_dump() for tool in mcp], ensure_ascii=False).encode())
    if size > MAX_DEFINITION_BYTES:  # the session's item keeps them
        raise RequestRejectedError(
            f"agent {agent.id} version {agent.version}: its MCP servers list {size} bytes of tools; at most "
            f"{MAX_DEFINITION_BYTES} (disable some with configs)"
        )
    names = enabled + [tool.name for tool in custom] + [tool.name for tool in lambdas] + [tool.name for tool in mcp]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise RequestRejectedError(
            f"agent {agent.id} version {agent.version}: tool {duplicates[0]!r} is named twice (an MCP server lists a "
            "tool with the name of another of the agent's tools; disable one with configs)"
        )
    config = AgentConfig(system=agent.system, custom_tools=custom, ask=ask, mcp_tools=mcp,
                         mcp_servers={s: u for s, u in servers.items() if any(t.server == s for t in mcp)},
                         lambda_tools=lambdas)  # fmt: skip
    return enabled, config


LAMBDA_FUNCTIONS: TypeAdapter[list[LambdaFunction]] = TypeAdapter(
    list[LambdaFunction], config=ConfigDict(defer_build=True)
)
_TOOL: TypeAdapter[ToolSpec] = TypeAdapter(ToolSpec, config=ConfigDict(defer_build=True))


class Agents:
    """Create, read, update (a new version), list and archive agents."""

    def __init__(
        self,
        *,
        store: AgentStore,
        clock: Clock,
        new_id: Callable[[], str],
        builtins: list[str],
        check_model: Callable[[str], None],
        lambda_functions: Iterable[LambdaFunction] = (),
        mcp_allowed: Callable[[str], bool] = lambda url: False,
    ) -> None:
        self.store, self.clock, self.new_id, self.builtins, self.check_model = (
            store,
            clock,
            new_id,
            builtins,
            check_model,
        )
        self.lambda_functions = {function.function: function for function in lambda_functions}
        self.mcp_allowed = mcp_allowed

    def create(self, tenant: str, raw: dict[str, Any]) -> Agent:
        """Raises RequestRejectedError naming the first problem; nothing is written then."""
        fields = self._parse(AgentFields, raw)
        if fields.metadata and any(value is None for value in fields.metadata.values()):
            raise RequestRejectedError("metadata: values are strings (null deletes a key, on update only)")
        if fields.name is None or fields.model is None:
            raise RequestRejectedError(f"{'name' if fields.name is None else 'model'}: field required")
        now = self._now()
        agent = Agent(id=self.new_id(), tenant=tenant, name=fields.name, model="", version=1, created_at=now,
                      updated_at=now)  # fmt: skip
        agent = self._apply(agent, fields)
        self.store.create_agent(agent)
        return agent

    def get(self, tenant: str, agent_id: str, version: int | None = None) -> Agent:
        agent = self.store.get_agent(tenant, agent_id, version) if AGENT_ID.match(agent_id) else None
        if agent is None:
            what = f"agent {clip(agent_id)}" + (f" version {version}" if version is not None else "")
            raise AgentNotFoundError(f"{what} not found")
        return agent

    def update(self, tenant: str, agent_id: str, raw: dict[str, Any]) -> Agent:
        """The next version, if anything changed (an update that changes nothing returns the current one).

        Raises:
            AgentNotFoundError, RequestRejectedError, AgentVersionConflictError (``version`` is not current,
            also when another update won a race).
        """
        fields = self._parse(AgentUpdate, raw)
        current = self.get(tenant, agent_id)
        if fields.version is not None and fields.version != current.version:
            raise AgentVersionConflictError(f"agent {agent_id} is at version {current.version}, not {fields.version}")
        if current.archived_at is not None:
            raise RequestRejectedError(f"agent {agent_id} is archived")
        updated = self._apply(current, fields)
        if updated.changes() == current.changes():
            return current
        now = self._now()
        updated = updated.model_copy(update={"version": current.version + 1, "updated_at": now})
        if not self.store.put_version(updated, expected=current.version):
            raise AgentVersionConflictError(f"agent {agent_id} changed while it was being updated; read it again")
        return updated

    def archive(self, tenant: str, agent_id: str) -> Agent:
        agent = self.get(tenant, agent_id)
        if agent.archived_at is not None:
            return agent
        archived = agent.model_copy(update={"archived_at": self._now()})
        if not self.store.archive_agent(archived):
            raise AgentVersionConflictError(f"agent {agent_id} changed while it was being archived; retry")
        return archived

    def _apply(self, agent: Agent, fields: AgentFields) -> Agent:
        update: dict[str, Any] = {}
        if fields.name is not None:
            update["name"] = fields.name
        if fields.model is not None:
            model = fields.model if isinstance(fields.model, str) else fields.model.id
            self.check_model(model)
            update["model"] = model
        for name in ("description", "system"):
            if name in fields.model_fields_set:
                update[name] = getattr(fields, name)
        given = fields.model_fields_set
        if "tools" in given or "mcp_servers" in given:  # a list given replaces the stored one (null: empty)
            tools = (fields.tools or []) if "tools" in given else [_TOOL.validate_python(t) for t in agent.tools]
            servers = (
                (fields.mcp_servers or [])
                if "mcp_servers" in given
                else [McpServer.model_validate(server) for server in agent.mcp_servers]
            )
            _check_tools(tools, servers, self.builtins, self.lambda_functions, self.mcp_allowed)
            update["tools"] = [tool.model_dump(exclude_none=isinstance(tool, McpToolset)) for tool in tools]
            update["mcp_servers"] = [server.model_dump() for server in servers]
        if fields.metadata is not None:
            update["metadata"] = check_metadata(agent.metadata, fields.metadata)
        updated = agent.model_copy(update=update)
        size = len(json.dumps(updated.changes(), ensure_ascii=False).encode())
        if size > MAX_DEFINITION_BYTES:  # a session's item keeps a copy of it, beside its turns
            raise RequestRejectedError(
                f"the agent's definition is {size} bytes of JSON; at most {MAX_DEFINITION_BYTES} (system, tools, ...)"
            )
        return updated

    @staticmethod
    def _parse(model: type[A], raw: Any) -> A:
        if isinstance(raw, dict):
            _refuse_unsupported(raw)
        return parse(model, raw)

    def _now(self) -> str:
        return self.clock.now().isoformat(timespec="milliseconds")
