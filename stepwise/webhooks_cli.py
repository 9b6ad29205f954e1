"""`stepwise webhooks create|list|show|delete`: the calling tenant's webhook endpoints (``/v1/webhooks``)."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.table import Table

from functions.agent.webhooks import EVENT_TYPES
from stepwise.client import StepwiseClient


def cmd_webhooks(args: argparse.Namespace, client: StepwiseClient, console: Console) -> int:
    action = args.webhooks_command
    if action == "create":
        body: dict[str, Any] = {"url": args.url, "description": args.description or ""}
        if args.event_type:
            body["event_types"] = args.event_type
        created = client.request("POST", "/v1/webhooks", body)
        if args.json:
            print(json.dumps(created))
            return 0
        console.print(f"created {created['id']} for {created['url']}")
        console.print("signing secret (shown once; verify deliveries with it):", style="bold")
        print(created["secret"])  # alone on its line, unstyled, for copying
        return 0
    if action == "delete":
        deleted = client.request("DELETE", f"/v1/webhooks/{quote(args.webhook_id, safe='')}")
        console.print(f"deleted {deleted['id']}")
        return 0
    if action == "show":
        hooks = [client.request("GET", f"/v1/webhooks/{quote(args.webhook_id, safe='')}")]
    else:
        hooks = client.request("GET", "/v1/webhooks")["data"]
    if args.json:
        print(json.dumps(hooks if action == "list" else hooks[0]))
        return 0
    table = Table("id", "url", "event types", "description", "created")
    for hook in hooks:
        table.add_row(hook["id"], hook["url"], ", ".join(hook["event_types"] or ["every type"]), hook["description"],
                      hook["created_at"])  # fmt: skip
    console.print(table)
    return 0


def add_parser(sub: Any, func: Any) -> None:
    webhooks = sub.add_parser("webhooks", help="your tenant's webhook endpoints (signed per Standard Webhooks)")
    actions = webhooks.add_subparsers(dest="webhooks_command", required=True)
    create = actions.add_parser("create", help="register an endpoint; prints its signing secret once")
    create.add_argument("url", help="https://, on a host the deployment allows (CDK context webhook_allowed_hosts)")
    create.add_argument("--event-type", action="append", choices=EVENT_TYPES, help="only these types (repeat)")
    create.add_argument("--description")
    listing = actions.add_parser("list", help="every endpoint (never their secrets)")
    show = actions.add_parser("show", help="one endpoint")
    show.add_argument("webhook_id")
    delete = actions.add_parser("delete", help="delete an endpoint: it gets nothing more")
    delete.add_argument("webhook_id")
    for action in (create, listing, show, delete):
        action.add_argument("--json", action="store_true", help="print JSON")
    webhooks.set_defaults(func=func)
