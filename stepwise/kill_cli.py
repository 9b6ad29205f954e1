"""`stepwise active` and `stepwise kill`: an operator's kill switch, for any tenant or every tenant.

Against a deployment (`--table`, and for `kill` also `--state-machine` and `--queue`: the stack's TableName,
StateMachineArn and IntakeQueueUrl outputs; `--webhooks-queue`, its WebhooksQueueUrl, to announce what it stops): the
same use case the API runs (functions/agent/killswitch.py), with your AWS credentials. Against the local stack (the
default endpoint): its local-only operator routes, which run it too."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from stepwise.client import StepwiseClient, deployment_table

DEPLOYED = (
    "a deployment's table (output TableName; read and written with your AWS credentials); default: the local stack"
)


def _deployed(args: argparse.Namespace, *, stopping: bool) -> Any:
    """The kill switch (``stopping``) or the store (listing) on the deployment's table; None for the local stack."""
    table = deployment_table(args)
    if table is None:
        return None
    name, client, _ = table
    if not stopping:
        from functions.adapters.dynamodb_store import DynamoDBRunStore

        return DynamoDBRunStore(name, client)
    if not args.state_machine or not args.queue:
        raise ValueError("stopping needs --state-machine and --queue too (outputs StateMachineArn, IntakeQueueUrl)")
    from functions.adapters import wiring
    from functions.adapters.settings import StopSettings

    settings = StopSettings.model_validate(
        {"STEPWISE_TABLE": name, "STEPWISE_QUEUE_URL": args.queue, "STEPWISE_STATE_MACHINE_ARN": args.state_machine}
    )  # a deployment's release delay is the settings' default (tests/infrastructure checks they agree)
    return wiring.operator_kill_switch(settings, args.webhooks_queue)


def _pages(fetch: Callable[[str | None], tuple[list[dict[str, Any]], str | None]]) -> list[dict[str, Any]]:
    found, page = [], None
    while True:
        data, page = fetch(page)
        found += data
        if page is None:
            return found


def cmd_active(args: argparse.Namespace, console: Console) -> int:
    store = _deployed(args, stopping=False)
    local = StepwiseClient(args.endpoint, api_key="")

    def fetch(page: str | None) -> tuple[list[dict[str, Any]], str | None]:
        if store is not None:
            from functions.agent.active import active_page

            entries, next_page = active_page(store, args.tenant, page=page)
            return [entry.public() for entry in entries], next_page
        query = "&".join(f"{k}={v}" for k, v in (("tenant", args.tenant), ("page", page)) if v is not None)
        answer = local.request("GET", "/_local/active" + (f"?{query}" if query else ""))
        return answer["data"], answer["next_page"]

    entries = _pages(fetch)
    if args.json:
        print(json.dumps(entries))
        return 0
    table = Table("tenant", "id", "type", "status", "active since", "turn", "created by",
                  title=f"{len(entries)} active")  # fmt: skip
    for entry in entries:
        table.add_row(entry["tenant"], entry["id"], entry["type"], entry["status"], entry["since"],
                      str(entry.get("turn", "-")), entry["created_by"] or "-")  # fmt: skip
    console.print(table)
    return 0


def cmd_kill(args: argparse.Namespace, console: Console, confirm: Callable[[str], str] = input) -> int:
    if args.id is not None and (args.tenant is None or args.all):
        raise ValueError("stepwise kill ID needs --tenant (the run's or session's tenant), and not --all")
    if args.id is None and (args.tenant is None) == (not args.all):
        raise ValueError("say what to stop: an id with --tenant, --tenant T (its active work) or --all (everyone's)")
    if args.all and not args.yes:
        if not sys.stdin.isatty():
            raise ValueError("--all stops every tenant's work: confirm with --yes when not at a terminal")
        if confirm("stop every active run and session of every tenant? [y/N] ").strip().lower() not in ("y", "yes"):
            console.print("nothing stopped")
            return 1
    switch = _deployed(args, stopping=True)
    local = StepwiseClient(args.endpoint, api_key="")
    results: list[dict[str, Any]] = []
    if args.id is not None:
        if switch is not None:
            from functions.agent.active import BY_OPERATOR
            from functions.agent.models import RunKey

            results = [switch.stop(RunKey(args.tenant, args.id), reason=BY_OPERATOR).public()]
        else:
            results = local.request("POST", "/_local/active/cancel", {"tenant": args.tenant, "id": args.id})["data"]
    else:

        def fetch(page: str | None) -> tuple[list[dict[str, Any]], str | None]:
            if switch is not None:
                from functions.agent.active import BY_OPERATOR

                report = switch.stop_all(args.tenant, reason=BY_OPERATOR, limit=100, page=page)
                return [result.public() for result in report.results], report.next_page
            body = {"tenant": args.tenant, "page": page} if args.tenant else {"all": True, "page": page}
            answer = local.request("POST", "/_local/active/cancel", body)
            return answer["data"], answer["next_page"]

        results = _pages(fetch)
    notifier = switch.lifecycle.notifier if switch is not None else None
    unannounced = notifier.take_failures() if notifier is not None else []
    for failure in unannounced:  # stopped all the same: only its webhook event was not sent (stderr: --json stays JSON)
        print(f"{failure.tenant} {failure.resource_id}: its webhook event was not announced ({failure.reason})",
              file=sys.stderr)  # fmt: skip
    return _report(args, console, results)


def _report(args: argparse.Namespace, console: Console, results: list[dict[str, Any]]) -> int:
    failed = [result for result in results if result["outcome"] == "failed"]
    if args.json:
        print(json.dumps(results))
        return 1 if failed else 0
    for result in results:
        detail = f" ({result['detail']})" if result.get("detail") else ""
        console.print(Text(f"{result['tenant']} {result['type']} {result['id']}: {result['outcome']}{detail}"))
    stopped = sum(result["outcome"] == "stopped" for result in results)
    console.print(
        Text(
            f"stopped {stopped}, already ended {len(results) - stopped - len(failed)}, failed {len(failed)}; "
            "reservations come back after the step timeout (the delayed release)"
        )
    )
    return 1 if failed else 0


def add_parsers(sub: Any, *, active: Any, kill: Any) -> None:
    listing = sub.add_parser("active", help="active runs and sessions, a tenant's or everyone's (an operator's)")
    listing.add_argument("--tenant", help="only this tenant's")
    listing.add_argument("--table", help=DEPLOYED)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=active)
    stop = sub.add_parser("kill", help="stop a run or session, a tenant's active work, or everyone's (an operator's)")
    stop.add_argument("id", nargs="?", help="a run or session id (with --tenant)")
    stop.add_argument("--tenant", help="the tenant whose work (or whose run or session) to stop")
    stop.add_argument("--all", action="store_true", help="every tenant's active work (asks first unless --yes)")
    stop.add_argument("--yes", action="store_true", help="do not ask")
    stop.add_argument("--table", help=DEPLOYED)
    stop.add_argument("--state-machine", help="with --table: the stack's StateMachineArn output")
    stop.add_argument("--queue", help="with --table: the stack's IntakeQueueUrl output (retried stops, releases)")
    stop.add_argument(
        "--webhooks-queue",
        help="with --table: the stack's WebhooksQueueUrl output, to announce what "
        "is stopped to the tenants' webhooks as the API does (without it, nothing is announced)",
    )
    stop.add_argument("--json", action="store_true")
    stop.set_defaults(func=kill)
