"""Every metric the synthesised dashboard and alarms read, parsed from the CloudFormation template, and the
check of each against what the functions emit (the catalog) or AWS publishes (AWS_METRICS).

The dashboard body is an ``Fn::Join`` of JSON text and references (the region, a queue's name, the state
machine's ARN): each reference is rendered as ``${LogicalId}`` text, then the body is parsed as JSON. Metric
rows (``[namespace, name, dimension, value, ..., {options}]``), math expressions and SEARCH expressions are
read; anything else in a metrics array is an error, so a new kind of reference cannot go unchecked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from functions.handlers.observability import AWS_METRICS, METRICS, NAMESPACE

SEARCH = re.compile(r"SEARCH\('\{(?P<schema>[^}]*)\}(?P<terms>[^']*)',\s*'(?P<stat>[\w.]+)',\s*(?P<period>\d+)\)")
TERM = re.compile(r'(\w+)="([^"]*)"')
IDENTIFIER = re.compile(r"\b[a-z][A-Za-z0-9_]*\b")  # metric ids; functions (FILL, IF, SEARCH) are upper case


@dataclass(frozen=True)
class Reference:
    """One metric read by a widget or an alarm. ``dimensions``: name -> value (``None``: a SEARCH matches every
    value of that dimension)."""

    where: str
    namespace: str
    name: str
    dimensions: Mapping[str, str | None] = field(default_factory=dict)
    search: bool = False


def render(value: Any) -> str:
    """A template value as text: strings as they are, ``Fn::Join`` joined, references as ``${...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(render(part) for part in parts)
    if isinstance(value, dict) and "Ref" in value:
        return "${" + str(value["Ref"]) + "}"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "${" + ".".join(value["Fn::GetAtt"]) + "}"
    raise AssertionError(f"a template value this parser does not render: {value!r}")


def dashboards(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each dashboard's body, parsed, by logical id."""
    return {
        logical_id: json.loads(render(resource["Properties"]["DashboardBody"]))
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Dashboard"
    }


def alarms(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def _searches(expression: str, where: str) -> Iterator[Reference]:
    for found in SEARCH.finditer(expression):
        namespace, *dimension_names = [part.strip() for part in found["schema"].split(",")]
        terms = dict(TERM.findall(found["terms"]))
        name = terms.pop("MetricName", None)
        assert name, f"{where}: a SEARCH without MetricName: {expression}"
        unknown = set(terms) - set(dimension_names)
        assert not unknown, f"{where}: a SEARCH filters on {unknown}, outside its schema {dimension_names}"
        yield Reference(where, namespace, name, {d: terms.get(d) for d in dimension_names}, search=True)


def _expression(expression: str, ids: set[str], where: str) -> Iterator[Reference]:
    """The SEARCH expressions in a math expression; every other name in it must be a metric id of its own."""
    yield from _searches(expression, where)
    rest = SEARCH.sub("", expression)
    unknown = set(IDENTIFIER.findall(rest)) - ids
    assert not unknown, f"{where}: expression {expression!r} reads {sorted(unknown)}, which no metric defines"
    assert "SEARCH" not in rest and "SELECT" not in rest.upper(), f"{where}: an unparsed query in {expression!r}"


def widget_references(widget: Mapping[str, Any]) -> Iterator[Reference]:
    properties = widget.get("properties", {})
    where = f"widget {properties.get('title', widget.get('type'))!r}"
    rows: list[list[Any]] = properties.get("metrics", [])
    ids = {row[-1]["id"] for row in rows if isinstance(row[-1], dict) and "id" in row[-1]}
    for row in rows:
        options = row[-1] if isinstance(row[-1], dict) else {}
        plain = row[:-1] if options else row
        if "expression" in options:
            assert not plain, f"{where}: a row with both an expression and a metric: {row}"
            yield from _expression(options["expression"], ids, where)
            continue
        assert len(plain) >= 2 and len(plain) % 2 == 0 and "." not in plain, f"{where}: a metric row {row}"
        namespace, name, *pairs = plain
        yield Reference(where, namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True)))


def dashboard_references(template: Mapping[str, Any]) -> list[Reference]:
    found = []
    for body in dashboards(template).values():
        for widget in body["widgets"]:
            found += list(widget_references(widget))
    return found


def alarm_references(template: Mapping[str, Any]) -> list[Reference]:
    found: list[Reference] = []
    for properties in alarms(template).values():
        where = f"alarm {properties.get('AlarmName', properties.get('AlarmDescription'))!r}"
        if "MetricName" in properties:
            dimensions = {d["Name"]: render(d["Value"]) for d in properties.get("Dimensions", [])}
            found.append(Reference(where, properties["Namespace"], properties["MetricName"], dimensions))
            continue
        queries = properties["Metrics"]
        ids = {query["Id"] for query in queries}
        for query in queries:
            if "Expression" in query:
                found += list(_expression(query["Expression"], ids, where))
            else:
                metric = query["MetricStat"]["Metric"]
                dimensions = {d["Name"]: render(d["Value"]) for d in metric.get("Dimensions", [])}
                found.append(Reference(where, metric["Namespace"], metric["MetricName"], dimensions))
    return found


def problems(reference: Reference) -> list[str]:
    """What is wrong with a reference: a metric no function emits, or not with exactly these dimensions (and
    the emitting function's ``service``, and a value the catalog allows); an AWS metric not in AWS_METRICS."""
    where, name, dimensions = reference.where, reference.name, reference.dimensions
    if reference.namespace != NAMESPACE:
        expected = AWS_METRICS.get((reference.namespace, name))
        if expected is None:
            return [f"{where}: {reference.namespace} {name} is not in AWS_METRICS"]
        return [] if set(dimensions) == set(expected) else [f"{where}: {name} by {sorted(dimensions)}, not {expected}"]
    spec = METRICS.get(name)
    if spec is None:
        return [f"{where}: {name!r} is not a metric any function emits (the catalog)"]
    found = []
    if set(dimensions) != {"service", *spec.dimensions}:
        found.append(f"{where}: {name} by {sorted(dimensions)}; it is emitted by {['service', *spec.dimensions]}")
    if dimensions.get("service") not in spec.services:
        found.append(f"{where}: {name} of service {dimensions.get('service')!r}; emitted by {spec.services}")
    for dimension, allowed in spec.values.items():
        value = dimensions.get(dimension)
        if value is not None and value not in allowed:
            found.append(f"{where}: {name} {dimension}={value!r}, a value it is never emitted with")
    return found
