"""Agents (functions/agent/agents.py): validation that names what is refused, versions, engine config."""

from __future__ import annotations

from typing import Any

import pytest

from functions.agent.agents import Agent, Agents, AgentVersionConflictError, engine_config
from functions.agent.errors import NotFoundError, RequestRejectedError
from tests.fakes.clock import FixedClock

BUILTINS = ["calculator", "current_time"]
WEATHER = {"type": "custom", "name": "get_weather", "description": "d", "input_schema": {"type": "object"}}


class MemoryAgents:
    """An AgentStore in memory: versions kept, the conditional write of the next version honoured."""

    def __init__(self) -> None:
        self.heads: dict[tuple[str, str], Agent] = {}
        self.versions: dict[tuple[str, str, int], Agent] = {}

    def create_agent(self, agent: Agent) -> None:
        self.heads[(agent.tenant, agent.id)] = agent
        self.versions[(agent.tenant, agent.id, agent.version)] = agent

    def get_agent(self, tenant: str, agent_id: str, version: int | None) -> Agent | None:
        if version is None:
            return self.heads.get((tenant, agent_id))
        return self.versions.get((tenant, agent_id, version))

    def put_version(self, agent: Agent, *, expected: int) -> bool:
        head = self.heads.get((agent.tenant, agent.id))
        if head is None or head.version != expected:
            return False
        self.create_agent(agent)
        return True

    def archive_agent(self, agent: Agent) -> bool:
        head = self.heads.get((agent.tenant, agent.id))
        if head is None or head.version != agent.version:
            return False
        self.heads[(agent.tenant, agent.id)] = agent
        return True


def refuse_unpriced(model: str) -> None:
    if model not in ("claude-haiku-4-5", "balanced"):
        raise RequestRejectedError(f"unknown model {model!r}: no price is configured for it")


@pytest.fixture
def store() -> MemoryAgents:
    return MemoryAgents()


@pytest.fixture
def agents(store: MemoryAgents) -> Agents:
    ids = iter(f"agent_{n:026x}" for n in range(1, 100))
    return Agents(store=store, clock=FixedClock(), new_id=lambda: next(ids), builtins=BUILTINS,
                  check_model=refuse_unpriced)  # fmt: skip


def create(agents: Agents, **fields: Any) -> Agent:
    return agents.create("acme", {"name": "helper", "model": "claude-haiku-4-5", **fields})


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"tools": [{"type": "agent_toolset_20260401"}]}, "tools.0.type: agent_toolset_20260401 needs"),
        ({"tools": [WEATHER, {"type": "bash_20250124"}]}, "tools.1.type: unknown tool type 'bash_20250124'"),
        (
            {
                "tools": [
                    {
                        "type": "stepwise_toolset_20261201",
                        "configs": [{"name": "calculator", "permission_policy": {"type": "auto"}}],
                    }
                ]
            },
            "tools.0.configs.0.permission_policy: 'auto' is not offered",
        ),
        ({"tools": [{"type": "stepwise_toolset_20261201", "configs": [{"name": "bash"}]}]}, "unknown built-in"),
        ({"tools": [WEATHER, WEATHER]}, "two tools have the same name"),
        ({"tools": [{**WEATHER, "name": "calculator"}, {"type": "stepwise_toolset_20261201"}]}, "same name"),
        ({"tools": [{**WEATHER, "input_schema": {"type": "string"}}]}, "tools.0.custom.input_schema"),
        ({"tools": [{**WEATHER, "name": "has space"}]}, "tools.0.custom.name"),
        ({"skills": [{"type": "anthropic", "skill_id": "pdf"}]}, "skills: not supported"),
        ({"multiagent": {"type": "coordinator"}}, "multiagent: not supported"),
        ({"execution_identity": {"type": "aws_role"}}, "execution_identity: not supported"),
        ({"model": {"id": "claude-haiku-4-5", "effort": "high"}}, "model.effort: not supported"),
        ({"model": {"id": "claude-haiku-4-5", "speed": "fast"}}, "model.speed: 'fast'"),
        ({"model": "claude-imaginary-1"}, "unknown model 'claude-imaginary-1'"),
        ({"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata: at most 16 pairs"),
        ({"metadata": {"k" * 65: "v"}}, "metadata: keys are 1 to 64"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k: values are at most 512"),
        ({"mcp_servers": [{"type": "url", "name": "docs", "url": "https://x"}]}, "not referenced by an mcp_toolset"),
        ({"tools": [{"type": "mcp_toolset", "mcp_server_name": "nope"}]}, "unknown server 'nope'"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_what_stepwise_cannot_offer_is_refused_by_name_and_nothing_is_stored(
    agents: Agents, store: MemoryAgents, fields: dict[str, Any], named: str
) -> None:
    with pytest.raises(RequestRejectedError) as refused:
        create(agents, **fields)
    assert named in str(refused.value)
    assert store.heads == {}


def test_an_agent_is_stored_normalised_at_version_1(agents: Agents, store: MemoryAgents) -> None:
    agent = create(agents, tools=[{"type": "stepwise_toolset_20261201"}, WEATHER], metadata={"team": "a"})
    public = agent.public()
    assert public["type"] == "agent" and public["version"] == 1
    assert public["model"] == {"id": "claude-haiku-4-5", "speed": "standard"}
    assert public["tools"][0] == {
        "type": "stepwise_toolset_20261201",
        "default_config": {"enabled": True, "permission_policy": {"type": "always_allow"}},
        "configs": [],
    }
    assert store.get_agent("acme", agent.id, 1) == agent
    assert store.get_agent("other-tenant", agent.id, None) is None


def test_an_update_writes_the_next_version_only_when_something_changes(agents: Agents) -> None:
    agent = create(agents, system="one", metadata={"a": "1", "b": "2"})
    same = agents.update("acme", agent.id, {"system": "one"})
    assert same.version == 1
    second = agents.update("acme", agent.id, {"system": "two", "metadata": {"a": None, "c": "3"}, "version": 1})
    assert second.version == 2 and second.system == "two" and second.metadata == {"b": "2", "c": "3"}
    assert agents.get("acme", agent.id, 1).system == "one"  # versions are immutable
    with pytest.raises(AgentVersionConflictError, match="at version 2, not 1"):
        agents.update("acme", agent.id, {"system": "three", "version": 1})
    with pytest.raises(NotFoundError):
        agents.get("acme", agent.id, 3)


def test_an_update_that_loses_a_race_is_a_conflict_not_a_lost_write(agents: Agents, store: MemoryAgents) -> None:
    agent = create(agents)
    store.put_version = lambda agent, expected: False  # type: ignore[method-assign]  # another update won
    with pytest.raises(AgentVersionConflictError, match="changed while it was being updated"):
        agents.update("acme", agent.id, {"system": "mine"})


def test_an_archived_agent_cannot_change(agents: Agents) -> None:
    agent = agents.archive("acme", create(agents).id)
    assert agent.archived_at is not None
    with pytest.raises(RequestRejectedError, match="archived"):
        agents.update("acme", agent.id, {"system": "x"})


def test_engine_config_per_tool_policy_wins_over_the_toolset_default() -> None:
    toolset = {
        "type": "stepwise_toolset_20261201",
        "default_config": {"enabled": True, "permission_policy": {"type": "always_ask"}},
        "configs": [{"name": "current_time", "permission_policy": {"type": "always_allow"}}],
    }
    agent = Agent(id="agent_x", tenant="t", name="n", model="m", system="s", tools=[toolset, WEATHER], version=1,
                  created_at="c", updated_at="u")  # fmt: skip
    builtins, config = engine_config(agent, BUILTINS)
    assert builtins == ["calculator", "current_time"]
    assert config.ask == ["calculator"] and [t.name for t in config.custom_tools] == ["get_weather"]
    assert config.needs_client("calculator") and config.needs_client("get_weather")
    assert not config.needs_client("current_time")
    disabled = {**toolset, "configs": [{"name": "calculator", "enabled": False}]}
    assert engine_config(agent.model_copy(update={"tools": [disabled]}), BUILTINS)[0] == ["current_time"]
