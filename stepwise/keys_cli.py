"""`stepwise keys create|list|revoke`: an operator's API keys per tenant.

Against a deployment (`--table`, the stack's TableName output): the table is written with your AWS credentials
(IAM decides who is an operator). Against the local stack (the default endpoint): its local-only key routes."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from stepwise.client import StepwiseClient, deployment_table


def _keys(args: argparse.Namespace) -> Any:
    """The use case on the deployment's table, or None for the local stack."""
    table = deployment_table(args)
    if table is None:
        return None
    from functions.adapters.dynamodb_keys import DynamoDBKeyStore
    from functions.agent.keys import ApiKeys

    name, client, clock = table
    return ApiKeys(store=DynamoDBKeyStore(name, client), clock=clock)


def cmd_keys(args: argparse.Namespace, console: Console) -> int:
    keys = _keys(args)
    local = StepwiseClient(args.endpoint, api_key="")
    if args.keys_command == "create":
        if keys is not None:
            key, record = keys.create(args.tenant, args.name or "")
            created = {"key": key, **record.public()}
        else:
            created = local.request("POST", "/_local/keys", {"tenant": args.tenant, "name": args.name or ""})
        sys.stdout.write(created["key"] + "\n")  # the key, shown once, as the only line on stdout
        print(
            f"created key {created['key_id']} for tenant {created['tenant']} (it is not shown again)", file=sys.stderr
        )
        return 0
    if args.keys_command == "list":
        records = [r.public() for r in keys.list(args.tenant)] if keys is not None else [
            r for r in local.request("GET", "/_local/keys")["data"] if args.tenant in (None, r["tenant"])
        ]  # fmt: skip
        if args.json:
            print(json.dumps(records))
            return 0
        table = Table("key id", "tenant", "name", "created", "revoked")
        for record in records:
            table.add_row(record["key_id"], record["tenant"], record["name"], record["created_at"],
                          record["revoked_at"] or "-")  # fmt: skip
        console.print(table)
        return 0
    revoked = keys.revoke(args.key_id).public() if keys is not None else local.request(
        "POST", f"/_local/keys/{args.key_id}/revoke"
    )  # fmt: skip
    console.print(f"revoked key {revoked['key_id']} of tenant {revoked['tenant']} at {revoked['revoked_at']}")
    return 0


def add_parser(sub: Any, func: Any) -> None:
    keys = sub.add_parser("keys", help="API keys per tenant (an operator's)")
    table_help = (
        "the deployment's table (output TableName; written with your AWS credentials); default: the local stack"
    )
    keys.add_argument("--table", help=table_help)
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="create a key for a tenant: prints it, once, on stdout")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", help="what the key is for")
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--tenant")
    listing.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    for action in (create, listing, revoke):  # after the action too, as the README writes it
        action.add_argument("--table", default=argparse.SUPPRESS, help=table_help)
    keys.set_defaults(func=func)
