"""Model routing: which model serves a step, and why. Pure: decided from the run's history and budget use.

Rules, in order:
1. Downgrade: a budget (the run's max_usd, the tenant's or the global daily budget) is at or past the
   configured threshold -> the downgrade of the model the rules below pick (if one is configured).
2. A run that names a model gets that model.
3. A run that names a policy:
   - the first step plans: strong;
   - the step after a cheap step that was superseded (refusal, cut off, a final answer) or whose tool input
     was invalid: strong (escalation);
   - a step that digests tool results: cheap.
A cheap step that would end the run (a final answer, a refusal, an answer cut off at max_tokens) is
superseded: it is recorded and charged, left out of the conversation, and the step is taken again by the
strong model (see ``supersedes``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from functions.agent.models import ModelResponse, RunError, StepRecord, ToolError, ToolOutcome

ROUTING_FILE = Path(__file__).parent / "data" / "routing.json"


class Policy(BaseModel):
    model_config = ConfigDict(defer_build=True)
    strong: str
    cheap: str


class RoutingConfig(BaseModel):
    model_config = ConfigDict(defer_build=True)
    version: str
    downgrade_at_percent: float = Field(gt=0, le=100)
    downgrades: dict[str, str] = Field(default_factory=dict)
    # tried in order when a model's circuit is open or its retries run out (a run's own list comes first)
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    policies: dict[str, Policy] = Field(default_factory=dict)

    def models_of(self, name: str) -> list[str]:
        """The model ids a run naming ``name`` may use (itself, or a policy's models), with their downgrades."""
        base = [self.policies[name].strong, self.policies[name].cheap] if name in self.policies else [name]
        base += [self.downgrades[m] for m in base if m in self.downgrades]
        return base + [f for m in base for f in self.fallbacks.get(m, [])]


@dataclass(frozen=True)
class Route:
    model: str
    reason: str
    cheap: bool = False  # served by a policy's cheap model: its failures escalate instead of ending the run
    fallback: bool = False  # another model than routing chose, because its circuit is open or it kept failing


def choose(
    *,
    config: RoutingConfig,
    run_model: str,
    steps: list[StepRecord],
    tool_results: dict[tuple[int, str], ToolOutcome],
    budget_percent: dict[str, float],
) -> Route:
    route = _policy_route(config, run_model, steps, tool_results)
    over = {name: pct for name, pct in budget_percent.items() if pct >= config.downgrade_at_percent}
    cheaper = config.downgrades.get(route.model)
    if over and cheaper:
        budget, pct = max(over.items(), key=lambda item: item[1])
        return Route(cheaper, f"downgraded from {route.model}: {budget} budget at {pct:.0f}% "
                     f"(>= {config.downgrade_at_percent:g}%)", cheap=route.cheap)  # fmt: skip
    return route


def _policy_route(
    config: RoutingConfig, run_model: str, steps: list[StepRecord], tool_results: dict[tuple[int, str], ToolOutcome]
) -> Route:
    policy = config.policies.get(run_model)
    if policy is None:
        return Route(run_model, "model named by the run")
    if not steps:
        return Route(policy.strong, f"policy {run_model}: first step plans (strong model)")
    last = steps[-1]
    if last.superseded:
        return Route(
            policy.strong,
            f"policy {run_model}: escalated after the cheap model's step {last.step} ({last.route_reason})",
        )
    failed = [
        outcome.name
        for call in last.tool_calls()
        if (outcome := tool_results.get((last.step, call.id))) is not None
        and outcome.error_kind is ToolError.INVALID_INPUT
    ]
    if failed and last.cheap:
        return Route(
            policy.strong,
            f"policy {run_model}: escalated, invalid tool input for {', '.join(failed)} at step {last.step}",
        )
    return Route(policy.cheap, f"policy {run_model}: digest tool results (cheap model)", cheap=True)


def escalation(config: RoutingConfig, run_model: str, budget_percent: dict[str, float]) -> str | None:
    """The model a superseded cheap step is redone by (the policy's strong model, after any downgrade)."""
    policy = config.policies.get(run_model)
    if policy is None:
        return None
    over = any(pct >= config.downgrade_at_percent for pct in budget_percent.values())
    return config.downgrades.get(policy.strong, policy.strong) if over else policy.strong


def supersedes(route: Route, response: ModelResponse, error: RunError | None) -> str | None:
    """Why a cheap step's answer must be redone by the strong model, or None to keep it."""
    if not route.cheap:
        return None
    if error is not None:
        return f"cheap model output failed: {error.code}"
    if not response.tool_calls():
        return "final answer goes to the strong model"
    return None


@cache
def default_routing() -> RoutingConfig:
    return RoutingConfig.model_validate(json.loads(ROUTING_FILE.read_text()))
