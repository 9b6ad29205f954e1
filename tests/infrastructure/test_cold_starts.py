"""How the step function's environments start (README "Cold starts"): on demand by default; SnapStart on its
published versions (CDK context step_snapstart) or provisioned concurrency on its alias (step_provisioned_concurrency),
never both, and no other function changes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infrastructure.test_retention_and_tracing import of_type, synth

STEP_HANDLER = "functions.handlers.step.handler"


def snap_started(resources: dict[str, Any]) -> list[str]:
    return [f["Properties"]["Handler"] for f in of_type(resources, "AWS::Lambda::Function")
            if f["Properties"].get("SnapStart") == {"ApplyOn": "PublishedVersions"}]  # fmt: skip


def provisioned(resources: dict[str, Any]) -> list[tuple[str, int]]:
    return [(a["Properties"]["FunctionName"]["Ref"], a["Properties"]["ProvisionedConcurrencyConfig"]
             ["ProvisionedConcurrentExecutions"]) for a in of_type(resources, "AWS::Lambda::Alias")
            if "ProvisionedConcurrencyConfig" in a["Properties"]]  # fmt: skip


def test_by_default_every_function_starts_on_demand(monkeypatch: pytest.MonkeyPatch) -> None:
    resources = synth(monkeypatch)
    assert snap_started(resources) == [] and provisioned(resources) == []


def test_snapstart_is_on_the_step_functions_published_versions_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    resources = synth(monkeypatch, step_snapstart="true")
    assert snap_started(resources) == [STEP_HANDLER] and provisioned(resources) == []


def test_provisioned_concurrency_is_on_the_step_functions_alias_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    resources = synth(monkeypatch, step_provisioned_concurrency="2")
    [(function, count)] = provisioned(resources)
    assert resources[function]["Properties"]["Handler"] == STEP_HANDLER and count == 2
    assert snap_started(resources) == []


def memory(resources: dict[str, Any]) -> dict[str, int]:
    return {
        f["Properties"]["Handler"]: f["Properties"]["MemorySize"] for f in of_type(resources, "AWS::Lambda::Function")
    }


def test_step_memory_mb_sets_the_step_functions_memory_alone_256_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    default, larger = memory(synth(monkeypatch)), memory(synth(monkeypatch, step_memory_mb="512"))
    assert default[STEP_HANDLER] == 256 and larger[STEP_HANDLER] == 512
    others = {handler for handler in default if handler != STEP_HANDLER}
    assert {h: larger[h] for h in others} == {h: default[h] for h in others}


@pytest.mark.parametrize(
    ("context", "problem"),
    [
        ({"step_snapstart": "true", "step_provisioned_concurrency": "1"}, "SnapStart does not support provisioned"),
        ({"step_snapstart": "yes"}, "step_snapstart 'yes': true or false"),
        ({"step_provisioned_concurrency": "-1"}, "step_provisioned_concurrency '-1': a whole number"),
        ({"step_memory_mb": "64"}, "step_memory_mb '64': Lambda takes 128 to 10240 MB"),
        ({"step_memory_mb": "lots"}, "step_memory_mb 'lots': a whole number"),
    ],
)
def test_a_start_that_cannot_be_fails_synth_naming_it(
    monkeypatch: pytest.MonkeyPatch, context: dict[str, str], problem: str
) -> None:
    with pytest.raises(SystemExit, match=problem):
        synth(monkeypatch, **context)
