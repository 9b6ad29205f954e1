"""The metric catalog: a handler emits only what it names, in its unit, with its dimensions."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from functions.handlers.observability import CATALOG, METRICS, MetricError, observability
from infra.functions import FUNCTIONS

HANDLERS = Path(__file__).resolve().parents[2] / "functions" / "handlers"


def emitted_in_source() -> dict[str, set[tuple[str, frozenset[str]]]]:
    """Every ``obs.emit("Name", ..., dim=...)`` call of each handler module: (name, its dimension keywords)."""
    found: dict[str, set[tuple[str, frozenset[str]]]] = {}
    for path in HANDLERS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "emit":
                first = node.args[0]
                name = first.value if isinstance(first, ast.Constant) else None
                if not isinstance(first, ast.Constant):  # a conditional name: both branches are literals
                    assert isinstance(first, ast.IfExp), f"{path.name}:{node.lineno} emits a computed metric name"
                    names = [branch.value for branch in (first.body, first.orelse) if isinstance(branch, ast.Constant)]
                else:
                    names = [name]
                dims = frozenset(k.arg for k in node.keywords if k.arg is not None)
                for each in names:
                    found.setdefault(path.stem, set()).add((str(each), dims))
    return found


def test_every_metric_a_handler_emits_is_in_the_catalog_for_that_function_with_its_dimensions() -> None:
    found = emitted_in_source()
    assert found, "no emit call found: the scan is broken"
    for module, calls in found.items():
        for name, dims in calls:
            assert name in METRICS, f"{module} emits {name!r}, which the catalog does not have"
            spec = METRICS[name]
            assert module in spec.functions, f"{module} emits {name!r}; the catalog says {spec.functions}"
            assert dims == set(spec.dimensions), f"{module} emits {name!r} with {sorted(dims)}"


def test_every_catalog_metric_is_emitted_somewhere_by_every_function_it_names() -> None:
    emitted = {(module, name) for module, calls in emitted_in_source().items() for name, _ in calls}
    for spec in CATALOG:
        for function in spec.functions:
            assert function in FUNCTIONS
            assert (function, spec.name) in emitted, f"the catalog says {function} emits {spec.name}; it does not"


def test_no_handler_emits_a_metric_around_the_catalog() -> None:
    for path in HANDLERS.glob("*.py"):
        if path.name == "observability.py":
            continue
        text = path.read_text()
        assert "add_metric(" not in text and "single_metric" not in text, path.name


def test_emit_refuses_an_unknown_name_a_wrong_dimension_or_value_and_another_functions_metric() -> None:
    obs = observability("tool")
    with pytest.raises(MetricError, match="not in the catalog"):
        obs.emit("ToolCall", tool="calculator", status="ok")
    with pytest.raises(MetricError, match="dimensions"):
        obs.emit("ToolCalls", tool="calculator")
    with pytest.raises(MetricError, match="not in"):
        obs.emit("ToolCalls", tool="calculator", status="fine")
    with pytest.raises(MetricError, match="emitted by step"):
        obs.emit("ModelCalls")


def test_emit_writes_the_catalogs_unit_and_the_service_dimension(capsys: pytest.CaptureFixture[str]) -> None:
    obs = observability("tool")
    obs.emit("ToolCalls", tool="calculator", status="ok")
    (blob,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Stepwise"
    assert directive["Metrics"] == [{"Name": "ToolCalls", "Unit": "Count"}]
    assert set(directive["Dimensions"][0]) == {"service", "tool", "status"}
    assert (blob["service"], blob["tool"], blob["status"]) == ("stepwise-tool", "calculator", "ok")


def test_a_retryable_error_of_an_unknown_kind_is_refused() -> None:
    from functions.agent.errors import RetryableModelError

    with pytest.raises(ValueError, match="kind"):
        RetryableModelError("x", kind="slow")
