"""`stepwise doctor`: is the deployment (or the local stack) healthy, and what to do next if not.

Against a deployment (`--stack NAME`): the stack's outputs, resources and template are read with CloudFormation
and each part is examined with your AWS credentials. Against the local stack (the default endpoint): its
`/_local/doctor` route runs the same checks in its own process (moto's services live there). Either way the
report is rendered here, the same way; exit 0 when nothing failed, 1 when a check failed (2: the doctor
could not run at all, as every command of this CLI)."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table
from rich.text import Text

from functions.agent.doctor import Report, Status
from stepwise.client import StepwiseClient

STYLES = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "dim"}
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def examine_stack(stack: str, region: str | None) -> Report:
    import boto3

    from functions.adapters.aws import SystemClock
    from functions.adapters.aws_doctor import build_doctor, stack_target

    session = boto3.session.Session(region_name=region)
    if session.region_name is None:
        raise ValueError("no AWS region: pass --region or set AWS_REGION")
    target = stack_target(session.client("cloudformation"), stack)
    return build_doctor(session, target.table_name, SystemClock()).examine(target)


def examine_local(endpoint: str) -> Report:
    if urlsplit(endpoint).hostname not in LOOPBACK_HOSTS:
        raise ValueError(
            f"{endpoint} is not the local stack: against a deployment, pass --stack <stack name> "
            "(read with your AWS credentials)"
        )
    return Report.model_validate(StepwiseClient(endpoint, api_key="").request("GET", "/_local/doctor"))


def render(report: Report, console: Console) -> None:
    console.print(Text(f"stepwise doctor: {report.target} at {report.checked_at:%Y-%m-%d %H:%M:%S} UTC", style="bold"))
    table = Table("check", "status", "detail")
    for finding in report.findings:
        table.add_row(Text(finding.check), Text(finding.status.value, style=STYLES[finding.status]),
                      Text(finding.detail))  # fmt: skip
    console.print(table)
    steps = [finding for finding in report.findings if finding.next_steps]
    if steps:
        console.print(Text("next steps", style="bold"))
        for finding in steps:
            console.print(Text(f"{finding.check} ({finding.status.value}):", style=STYLES[finding.status]))
            for step in finding.next_steps:  # soft-wrapped: a command copied off the terminal is one line
                console.print(Text(f"  - {step}"), soft_wrap=True)
    verdict = {Status.OK: "healthy", Status.WARN: "healthy, with warnings", Status.FAIL: "UNHEALTHY"}[report.status]
    console.print(Text(f"{verdict} (exit {report.exit_code})", style=STYLES[report.status]))


def cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    report = examine_stack(args.stack, args.region) if args.stack else examine_local(args.endpoint)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        render(report, console)
    return report.exit_code


def add_parser(sub: Any, func: Any) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check the local stack or a deployment: API, table, queues, failures, alarms, circuits, spend",
    )
    doctor.add_argument(
        "--stack", help="a deployed stack's name (read with your AWS credentials); default: the local stack"
    )
    doctor.add_argument("--region", help="the stack's region (default: your AWS configuration's)")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(func=func)
