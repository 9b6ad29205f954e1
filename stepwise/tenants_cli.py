"""`stepwise tenants set|show|list|clear`: an operator's limits per tenant (a daily budget, a request rate).

Against a deployment (`--table`, the stack's TableName output): the table is written with your AWS credentials
(IAM decides who is an operator); functions see a change within 30 s. Against the local stack (the default
endpoint): its local-only operator routes, and the change applies at once."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.table import Table

from stepwise.client import StepwiseClient, deployment_table


def _tenants(args: argparse.Namespace) -> Any:
    """The use case on the deployment's table, or None for the local stack."""
    table = deployment_table(args)
    if table is None:
        return None
    from functions.adapters.dynamodb_tenants import DynamoDBTenantStore
    from functions.agent.tenants import Tenants

    name, client, clock = table
    return Tenants(store=DynamoDBTenantStore(name, client), clock=clock)


def cmd_tenants(args: argparse.Namespace, console: Console) -> int:
    tenants = _tenants(args)
    local = StepwiseClient(args.endpoint, api_key="")
    tenant = getattr(args, "tenant", None)
    path = f"/_local/tenants/{quote(tenant, safe='')}" if tenant is not None else "/_local/tenants"
    action = args.tenants_command
    if action == "set":
        wanted = {name: value for name, value in (("daily_usd", args.daily_usd),
                  ("requests_per_minute", args.requests_per_minute)) if value is not None}  # fmt: skip
        shown = tenants.set(args.tenant, **wanted).public() if tenants else local.request("POST", path, wanted)
        records = [shown]
    elif action == "show":
        records = [tenants.get(args.tenant).public() if tenants else local.request("GET", path)]
    elif action == "clear":
        cleared = tenants.clear(args.tenant).public() if tenants else local.request("DELETE", path)
        console.print(f"tenant {cleared['tenant']} has the deployment's limits again")
        return 0
    else:
        records = [t.public() for t in tenants.list()] if tenants else local.request("GET", path)["data"]
    if args.json:
        print(json.dumps(records if action == "list" else records[0]))
        return 0
    table = Table("tenant", "daily budget (USD)", "requests per minute", "updated")
    for record in records:
        daily, rate = record["daily_usd"], record["requests_per_minute"]
        table.add_row(record["tenant"], "default" if daily is None else f"{daily:g}",
                      "default" if rate is None else str(rate), record["updated_at"])  # fmt: skip
    console.print(table)
    return 0


def add_parser(sub: Any, func: Any) -> None:
    tenants = sub.add_parser("tenants", help="limits per tenant: daily budget, requests per minute (an operator's)")
    table_help = (
        "the deployment's table (output TableName; written with your AWS credentials); default: the local stack"
    )
    tenants.add_argument("--table", help=table_help)
    actions = tenants.add_subparsers(dest="tenants_command", required=True)
    setting = actions.add_parser("set", help="give a tenant its own limits (those not given stay as they were)")
    setting.add_argument("tenant")
    setting.add_argument("--daily-usd", help="the tenant's daily budget in USD (UTC days), over the deployment's")
    setting.add_argument("--requests-per-minute", type=int, help="requests the API admits per UTC minute")
    show = actions.add_parser("show", help="a tenant's own limits")
    show.add_argument("tenant")
    listing = actions.add_parser("list", help="every tenant with limits of its own")
    clear = actions.add_parser("clear", help="remove a tenant's own limits (it gets the deployment's)")
    clear.add_argument("tenant")
    for action in (setting, show, listing, clear):
        action.add_argument("--table", default=argparse.SUPPRESS, help=table_help)
        action.add_argument("--json", action="store_true", help="print JSON")
    tenants.set_defaults(func=func)
