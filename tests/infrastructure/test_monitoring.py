"""The dashboard, the alarms and their SNS topic, read from the synthesised template (app.py, the real entry point):
every metric they read is one a function emits (the catalog) with exactly its dimensions, or an AWS metric of
AWS_METRICS; every alarm notifies the topic and names its runbook section; thresholds come from the context."""

from __future__ import annotations

import fnmatch
import json
import math
import re
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest

from app import build_app
from functions.agent.doctor import AlarmState, is_budget_alarm
from functions.agent.models import TERMINAL_STATUSES
from functions.handlers.observability import AWS_METRICS, CATALOG, METRICS, NAMESPACE, MetricError
from infra.constructs.monitoring import RUNBOOK
from infra.metrics import aws_metric, each_value, stepwise_metric, stepwise_search
from tests.infrastructure.test_stack import SKIP_BUNDLING
from tests.metric_references import (
    SEARCH,
    Reference,
    alarm_references,
    alarms,
    dashboard_references,
    dashboards,
    problems,
    render,
    widget_references,
)

ROOT = Path(__file__).resolve().parents[2]
ALARMS = {"api-error-rate", "run-error-rate", "step-latency-p95", "executions-failed", "intake-queue-age",
          "circuit-open", "intake-dead-letters", "execution-ended-dead-letters", "webhooks-dead-letters"}  # fmt: skip


def synth(**context: Any) -> dict[str, Any]:
    app = build_app(cdk.App(context={**SKIP_BUNDLING, **context}))
    return dict(app.synth().get_stack_by_name("Stepwise").template)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """The app as cdk.json deploys it: both daily budgets."""
    return synth(tenant_daily_budget_usd="20", global_daily_budget_usd="200")


@pytest.fixture(scope="module")
def references(template: dict[str, Any]) -> list[Reference]:
    return dashboard_references(template) + alarm_references(template)


def topic_id(template: dict[str, Any]) -> str:
    (found,) = [lid for lid, r in template["Resources"].items() if r["Type"] == "AWS::SNS::Topic"]
    return found


def slug_of(properties: dict[str, Any]) -> str:
    return str(properties["AlarmName"]).removeprefix("Stepwise-")


# ---------------------------------------------------------------------------------------------------------------
# What the dashboard and the alarms read
# ---------------------------------------------------------------------------------------------------------------


def test_every_metric_the_dashboard_and_alarms_read_is_emitted_with_exactly_its_dimensions(
    references: list[Reference],
) -> None:
    assert len(references) > 100  # every widget and alarm was read
    assert [problem for reference in references for problem in problems(reference)] == []


def test_the_dashboard_charts_every_metric_a_function_emits_and_every_aws_metric_named(
    template: dict[str, Any],
) -> None:
    charted = dashboard_references(template)
    assert {r.name for r in charted if r.namespace == NAMESPACE} == set(METRICS)
    assert {(r.namespace, r.name) for r in charted if r.namespace != NAMESPACE} == set(AWS_METRICS)


def test_open_ended_dimensions_are_searched_and_bounded_ones_charted_value_by_value(
    references: list[Reference],
) -> None:
    open_ended = {spec.name for spec in CATALOG if any(d not in spec.values for d in spec.dimensions)}
    assert {r.name for r in references if r.search} == open_ended == {"ToolCalls", "CostMicroUSDByModel",
                                                                       "CircuitTransitions"}  # fmt: skip
    for spec in CATALOG:
        if spec.name in open_ended:  # its SEARCH reads every value of every dimension
            continue
        for dimension, allowed in spec.values.items():
            charted = {r.dimensions[dimension] for r in references if r.name == spec.name and not r.search}
            assert charted == allowed, f"{spec.name}: {dimension} charted {sorted(charted)}, emitted {sorted(allowed)}"


def test_each_series_a_search_returns_is_labelled_by_its_dimensions_values(template: dict[str, Any]) -> None:
    """An expression's label prefixes every series it returns: left to CDK, it is the expression's own text."""
    (body,) = dashboards(template).values()
    searches = [row[-1] for widget in body["widgets"] for row in widget["properties"].get("metrics", [])
                if "SEARCH(" in row[-1].get("expression", "")]  # fmt: skip
    labels = {SEARCH.search(row["expression"])["terms"].split('"')[1]: row.get("label") for row in searches}
    assert labels == {
        "ToolCalls": "${PROP('Dim.tool')} ${PROP('Dim.status')}",
        "CostMicroUSDByModel": "${PROP('Dim.model')}",
        "CircuitTransitions": "${PROP('Dim.State')} ${PROP('Dim.Circuit')}",
    }


def test_the_check_fails_on_a_renamed_metric_a_dimension_too_many_or_a_value_never_emitted(
    template: dict[str, Any],
) -> None:
    # Given the synthesised dashboard, edited the way a drift would edit it
    (body,) = dashboards(template).values()
    text = json.dumps(body, separators=(",", ":"))
    for edit, expected in (
        (text.replace('"StepLatency"', '"StepLatencyMs"'), "not a metric any function emits"),
        (text.replace('"service","stepwise-step"', '"service","stepwise-api"'), "of service"),
        (text.replace('"status_class","5xx"', '"status_class","500"'), "never emitted with"),
        (text.replace('MetricName=\\"ToolCalls\\"', 'MetricName=\\"ToolCall\\"'), "not a metric any function emits"),
        (text.replace("{Stepwise,service,tool,status}", "{Stepwise,service,tool}"), "by ['service', 'tool']"),
        (text.replace('"AWS/SQS","ApproximateAgeOfOldestMessage"', '"AWS/SQS","NumberOfMessagesSent"'),
         "not in AWS_METRICS"),
    ):  # fmt: skip
        assert edit != text, expected
        # When it is checked
        found = [p for widget in json.loads(edit)["widgets"] for r in widget_references(widget) for p in problems(r)]
        # Then the check names the problem
        assert any(expected in problem for problem in found), (expected, found)


def test_a_metric_not_in_the_catalog_cannot_be_charted_or_alarmed_on() -> None:
    with pytest.raises(MetricError, match="not in the catalog"):
        stepwise_metric("StepLatencyMs", "p95")
    with pytest.raises(MetricError, match="dimensions"):
        stepwise_metric("ToolCalls", "Sum", tool="calculator")
    with pytest.raises(MetricError, match="not in"):
        stepwise_metric("Requests", "Sum", status_class="500")
    with pytest.raises(MetricError, match="is emitted by step, not api"):
        stepwise_metric("StepLatency", "p95", function="api")
    with pytest.raises(MetricError, match="name the function"):  # a metric several functions emit
        stepwise_metric("WebhookAnnounceFailures", "Sum")
    with pytest.raises(MetricError, match="no open-ended dimension"):
        stepwise_search("Requests", "Sum")
    with pytest.raises(MetricError, match="bounded"):
        each_value("ToolCalls", "tool", "Sum")
    with pytest.raises(MetricError, match="AWS_METRICS"):
        aws_metric("AWS/States", "OpenExecutionCount", "Maximum")
    with pytest.raises(MetricError, match="dimensions"):
        aws_metric("AWS/SQS", "ApproximateAgeOfOldestMessage", "Maximum")


def test_the_dashboard_has_the_seed_panels_and_this_runtimes(template: dict[str, Any]) -> None:
    (body,) = dashboards(template).values()
    titles = {widget["properties"].get("title") for widget in body["widgets"]}
    assert {
        # the seed article's
        "Run success rate (%)", "Average latency", "Cost, last 24 h ($)", "Requests, last 24 h (by status class)",
        "Latency distribution: step and model call (ms)", "Latency distribution: run duration (s)", "Error rate (%)",
        "Tool usage (calls by tool and status, per hour)", "Cost trend ($ per hour, 7 days)",
        # this runtime's
        "Cost by model ($ per hour)", "Prompt cache: read share of input tokens (%)",
        "Intake queue: depth and oldest message (s)", "Dead-letter queues (messages waiting)",
        "Circuits: opened, and transitions by circuit and state", "Budget use (% committed, the highest tenant)",
        "Model calls: retries, throttles (errors by kind), fallbacks", "Budget refusals (by code)", "Alarms",
    } <= titles  # fmt: skip
    assert all(w["x"] + w["width"] <= 24 for w in body["widgets"])
    (status,) = [w for w in body["widgets"] if w["properties"].get("title") == "Alarms"]
    assert len(status["properties"]["alarms"]) == len(alarms(template))  # every alarm's state


def test_cache_read_share_divides_cache_reads_by_all_input_tokens(template: dict[str, Any]) -> None:
    (body,) = dashboards(template).values()
    (widget,) = [w for w in body["widgets"] if w["properties"].get("title", "").startswith("Prompt cache")]
    rows = widget["properties"]["metrics"]
    ids = {row[-1]["id"]: row[1] for row in rows if "id" in row[-1]}
    (expression,) = [row[-1]["expression"] for row in rows if "expression" in row[-1]]
    assert expression == "100 * FILL(read, 0) / (FILL(fresh, 0) + FILL(read, 0) + FILL(written, 0))"
    assert ids == {"read": "CacheReadInputTokens", "fresh": "InputTokens", "written": "CacheCreationInputTokens"}


# ---------------------------------------------------------------------------------------------------------------
# Alarms and the topic
# ---------------------------------------------------------------------------------------------------------------


def test_the_alarms_are_the_issues_list_and_a_budget_alarm_per_budget_and_percent(template: dict[str, Any]) -> None:
    slugs = {slug_of(properties) for properties in alarms(template).values()}
    budget = {f"budget-{b}-{p}" for b in ("TenantDaily", "GlobalDaily") for p in (50, 80, 90, 100)}
    assert slugs == ALARMS | budget


def test_every_alarm_notifies_the_topic_and_its_description_names_a_runbook_section(template: dict[str, Any]) -> None:
    topic = {"Ref": topic_id(template)}
    runbook = (ROOT / RUNBOOK).read_text()
    headings = re.findall(r"^#+ (.+)$", runbook, re.MULTILINE)
    sections = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-") for heading in headings}  # GitHub's
    for properties in alarms(template).values():
        slug = slug_of(properties)
        assert properties["AlarmActions"] == [topic], slug
        # a budget alarm says ALARM only, and a minute without a step leaves it as it is (read as "not breaching",
        # it would return to OK after each quiet minute and notify again at the next step)
        budget = slug.startswith("budget-")
        assert properties.get("OKActions") == (None if budget else [topic]), slug
        assert properties["TreatMissingData"] == ("ignore" if budget else "notBreaching"), slug
        # the doctor tells a budget alarm from a fault by its description as the stack writes it
        assert is_budget_alarm(AlarmState(str(properties["AlarmName"]), "ALARM",
                                          description=properties["AlarmDescription"])) is budget, slug  # fmt: skip
        (section,) = re.findall(re.escape(RUNBOOK) + r"#([a-z0-9-]+)", properties["AlarmDescription"])
        assert section in sections, f"{slug}: {RUNBOOK} has no section {section!r}"
        assert section == ("budget" if slug.startswith("budget-") else slug)


def test_metric_math_alarms_read_at_most_ten_metrics_and_return_one_series(template: dict[str, Any]) -> None:
    """What PutMetricAlarm refuses, though synth passes: more than 10 metrics, a SEARCH, metrics of different
    periods, or more (or less) than one series returned."""
    for properties in alarms(template).values():
        queries = properties.get("Metrics", [])
        assert len([q for q in queries if "MetricStat" in q]) <= 10, slug_of(properties)  # CloudWatch's limit
        if queries:
            assert len([q for q in queries if q.get("ReturnData", True)]) == 1, slug_of(properties)
            assert not [q for q in queries if "SEARCH" in q.get("Expression", "")], slug_of(properties)
            assert len({q["MetricStat"]["Period"] for q in queries if "MetricStat" in q}) == 1, slug_of(properties)


def test_the_run_error_rate_counts_every_end_once(template: dict[str, Any]) -> None:
    (properties,) = [p for p in alarms(template).values() if slug_of(p) == "run-error-rate"]
    read = {(r.name, r.dimensions.get("status")) for r in alarm_references({"Resources": {"a": {
        "Type": "AWS::CloudWatch::Alarm", "Properties": properties}}})}  # fmt: skip
    # the ends Finalize records (their executions succeed) and the executions that end without it
    assert read == {("RunsFinished", status.value) for status in TERMINAL_STATUSES} | {
        ("ExecutionsFailed", None), ("ExecutionsTimedOut", None), ("ExecutionsAborted", None)}  # fmt: skip
    (expression,) = [q["Expression"] for q in properties["Metrics"] if "Expression" in q]
    assert "100 * (FILL(fin_failed, 0) + FILL(fin_timed_out, 0) + FILL(ex_failed, 0) + FILL(ex_timedout, 0))" in (
        expression
    )
    assert expression.startswith("IF((") and ">= 10," in expression  # no rate from fewer than 10 ends
    assert properties["Threshold"] == 10 and properties["ComparisonOperator"] == "GreaterThanThreshold"


def test_the_topic_takes_tls_only_and_no_subscription_unless_the_context_names_an_address(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    (policy,) = [r for r in resources.values() if r["Type"] == "AWS::SNS::TopicPolicy"]
    (deny,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert not [r for r in resources.values() if r["Type"] == "AWS::SNS::Subscription"]
    outputs = template["Outputs"]
    assert outputs["AlarmTopicArn"]["Value"] == {"Ref": topic_id(template)}
    assert outputs["DashboardName"]["Value"]["Ref"] in resources
    url = "".join(part if isinstance(part, str) else "<>" for part in outputs["DashboardUrl"]["Value"]["Fn::Join"][1])
    assert url == "https://<>.console.aws.amazon.com/cloudwatch/home?region=<>#dashboards:name=<>"


def test_thresholds_and_the_e_mail_address_come_from_the_context() -> None:
    # Given a deployment with its own thresholds and an address
    thresholds = {"step_latency_p95_seconds": 30, "budget_percents": [75, 100], "queue_age_seconds": 3600}
    template = synth(alarm_thresholds=json.dumps(thresholds), alarm_email="ops@example.com",
                     tenant_daily_budget_usd="20")  # fmt: skip
    by_slug = {slug_of(p): p for p in alarms(template).values()}
    # Then the alarms use them, and the dashboard's budget lines too
    assert by_slug["step-latency-p95"]["Threshold"] == 30_000
    assert by_slug["intake-queue-age"]["Threshold"] == 3600
    assert {s for s in by_slug if s.startswith("budget-")} == {"budget-TenantDaily-75", "budget-TenantDaily-100"}
    assert by_slug["api-error-rate"]["Threshold"] == 5  # a key left out keeps its default
    (body,) = dashboards(template).values()
    (budget,) = [w for w in body["widgets"] if w["properties"].get("title", "").startswith("Budget use")]
    assert [a["value"] for a in budget["properties"]["annotations"]["horizontal"]] == [75, 100]
    # And the topic e-mails the address
    (subscription,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::SNS::Subscription"]
    assert subscription["Protocol"] == "email" and subscription["Endpoint"] == "ops@example.com"


def test_cloudwatch_may_publish_to_the_topic_for_this_stacks_alarms_alone(template: dict[str, Any]) -> None:
    """A topic policy replaces SNS's default one: without an Allow for CloudWatch, every alarm action fails."""
    resources = template["Resources"]
    (policy,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::SNS::TopicPolicy"]
    assert policy["Topics"] == [{"Ref": topic_id(template)}]
    (allow,) = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"} and allow["Action"] == "sns:Publish"
    assert allow["Resource"] == {"Ref": topic_id(template)}
    (pattern,) = allow["Condition"]["ArnLike"].values()
    assert list(allow["Condition"]["ArnLike"]) == ["aws:SourceArn"]
    source = render(pattern).replace("${AWS::Partition}", "aws").replace("${AWS::Region}", "eu-west-1")
    source = source.replace("${AWS::AccountId}", "123456789012")
    assert source == "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:Stepwise-*"
    # every alarm of the stack is one it lets publish (their names all start with the stack's)
    arns = [f"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{p['AlarmName']}" for p in alarms(template).values()]
    assert arns and all(fnmatch.fnmatchcase(arn, source) for arn in arns)


@pytest.mark.parametrize(
    ("context", "problem"),
    [
        ({"alarm_thresholds": '{"p95_latency": 30}'}, "unknown key 'p95_latency' \\(known: api_error_rate_percent"),
        ({"alarm_thresholds": '{"api_error_rate_percent": 0}'}, "api_error_rate_percent: Input should be greater"),
        ({"alarm_thresholds": '{"api_error_rate_percent": "5"}'}, "api_error_rate_percent: Input should be a valid"),
        ({"alarm_thresholds": '{"queue_age_seconds": 600}'}, "queue_age_seconds: Input should be greater than 900"),
        ({"alarm_thresholds": '{"budget_percents": [90, 50]}'}, "ascending whole percents"),
        ({"alarm_thresholds": '{"budget_percents": [50, 150]}'}, "ascending whole percents"),
        ({"alarm_thresholds": "[1, 2]"}, "must be a JSON object"),
        ({"alarm_thresholds": "{not json"}, "alarm_thresholds: Expecting"),
        ({"alarm_email": "ops"}, "alarm_email 'ops': one e-mail address"),
        ({"alarm_email": "a@b.c, d@e.f"}, "one e-mail address"),
    ],
)
def test_a_bad_threshold_an_unknown_key_or_a_bad_address_fails_synth_saying_which(
    context: dict[str, str], problem: str
) -> None:
    with pytest.raises(SystemExit, match=problem):
        build_app(cdk.App(context={**SKIP_BUNDLING, **context}))


def test_the_readmes_cost_figures_are_the_catalogs_and_the_templates(template: dict[str, Any]) -> None:
    """What the README says alarms and custom metrics cost, counted again from the template and the catalog."""
    readme = (ROOT / "README.md").read_text()
    # alarms: one billed metric each, a metric-math alarm one per metric it reads
    found = re.search(r"(\d+) alarms reading (\d+) metrics with both daily budgets\s+\(the two error rates read "
                      r"(\d+) and (\d+)\), \$(\d+\.\d\d) a month", readme)  # fmt: skip
    assert found, "the README's alarm cost"
    read = {slug_of(p): len([m for m in p.get("Metrics", []) if "MetricStat" in m]) or 1
            for p in alarms(template).values()}  # fmt: skip
    assert tuple(found.groups()) == (str(len(read)), str(sum(read.values())), str(read["api-error-rate"]),
                                     str(read["run-error-rate"]), f"{0.10 * sum(read.values()):.2f}")  # fmt: skip
    # custom metrics: each series of a bounded metric, from each function that emits it
    bounded = 0
    for spec in CATALOG:
        if all(dimension in spec.values for dimension in spec.dimensions):
            bounded += len(spec.functions) * math.prod(len(spec.values[d]) for d in spec.dimensions)
    found = re.search(r"(\d+) series whose dimension values are bounded.*?with 2 models and 4 tools, (\d+) \+ 2 \+ 6 "
                      r"\+ 8 = (\d+) series, at most \$(\d+\.\d\d) a month", readme, re.DOTALL)  # fmt: skip
    assert found, "the README's custom metrics cost"
    total = bounded + 2 + 3 * 2 + 2 * 4  # a series per model, three per circuit (a model's), two per tool
    assert tuple(found.groups()) == (str(bounded), str(bounded), str(total), f"{0.30 * total:.2f}")
