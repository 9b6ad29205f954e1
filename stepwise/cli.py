"""`stepwise`: submit and follow runs, inspect them, cancel them; start the local stack; run the demo."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from functions.agent.errors import StepwiseError
from functions.agent.streams import BEFORE_ALL
from stepwise import agents_cli, doctor_cli, keys_cli, kill_cli, tenants_cli, webhooks_cli
from stepwise.client import (
    DEFAULT_ENDPOINT,
    TERMINAL,
    ApiError,
    StepwiseClient,
    StreamUnavailable,
    follow_events,
)
from stepwise.local.moto_stepfunctions import DEFAULT_HISTORIES

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
STUB_PROVIDER = "offline-stub"
DEMO_TASK = "What is (17 * 23) + sqrt(16), and what time is it in Asia/Tokyo?"


def _client(args: argparse.Namespace) -> StepwiseClient:
    return StepwiseClient(args.endpoint)


def _money(value: float) -> str:
    return f"${value:.6f}"


def _tokens(usage: dict[str, int]) -> str:
    cache = usage.get("cache_creation_input_tokens", 0) + usage.get("cache_read_input_tokens", 0)
    text = f"{usage.get('input_tokens', 0):,} in / {usage.get('output_tokens', 0):,} out"
    return text + (f" / {cache:,} cache" if cache else "")


def _status_line(run: dict[str, Any]) -> str:
    return (
        f"[bold]{escape(run['run_id'])}[/bold]  {run['status']:<16} steps {run['steps']}  "
        f"tokens {_tokens(run['usage'])}  cost {_money(run['cost_usd'])}"
    )


def _stub_banner(steps: list[dict[str, Any]]) -> None:
    if any(step.get("provider") == STUB_PROVIDER for step in steps):
        console.print(
            Panel(
                "No ANTHROPIC_API_KEY is set, so the OFFLINE STUB MODEL answered: no model was called, answers are "
                "scripted, token counts are estimates (characters / 4), priced at the run model's list price.",
                title="offline stub model",
                border_style="yellow",
            )
        )


def print_steps(steps: list[dict[str, Any]]) -> None:
    table = Table(title="steps", show_lines=False)
    for column in ("#", "model", "provider", "decision", "tool calls", "tokens", "cost", "ms"):
        table.add_column(column, justify="right" if column in ("#", "cost", "ms") else "left")
    for step in steps:
        calls = ", ".join(
            f"{call['name']}{' (error)' if call.get('result') and call['result']['is_error'] else ''}"
            for call in step["tool_calls"]
        )
        table.add_row(
            str(step["step"]),
            step["model"],
            step["provider"],
            step["decision"],
            calls or "-",
            _tokens(step["usage"]),
            _money(step["cost_usd"]),
            str(step["duration_ms"]),
        )
    console.print(table)
    for step in steps:
        for call in step["tool_calls"]:
            result = call.get("result") or {}
            console.print(
                Text(f"  step {step['step']} {call['name']} {call['input']} -> {result.get('content', '(no result)')}")
            )


def print_run(run: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    _stub_banner(steps)
    print_steps(steps)
    if run.get("output"):
        console.print(Panel(Text(run["output"]), title="answer", border_style="green"))
    if run.get("error"):
        console.print(
            Panel(Text(f"{run['error']['code']}: {run['error']['message']}"), title="error", border_style="red")
        )
    style = "green" if run["status"] == "SUCCEEDED" else "red"
    console.print(f"[{style}]status {run['status']}[/{style}]  run {escape(run['run_id'])}")
    console.print(
        f"steps {run['steps']}  tokens {_tokens(run['usage'])}  cost {_money(run['cost_usd'])} (model {run['model']})"
    )


def _step_line(step: dict[str, Any]) -> Text:
    calls = ", ".join(c["name"] for c in step["tool_calls"]) or "final answer"
    return Text(
        f"  step {step['step']}: {step['decision']:<6} {calls:<28} {_tokens(step['usage'])}  "
        f"{_money(step['cost_usd'])}  [{step['provider']}]"
    )


def follow_stream(client: StepwiseClient, run_id: str, *, timeout: float = 3600.0) -> dict[str, Any]:
    """Show each step as it lands, from the run's event stream, until the run ends (or ``timeout``); polls instead
    when the deployment does not stream (an older one, or its stream function out of reach)."""
    deadline = time.monotonic() + timeout
    steps, calls, cost = 0, list[dict[str, str]](), Decimal(0)
    try:
        with (
            Live(Text(f"{run_id}  following"), console=console, refresh_per_second=8, transient=True) as live,
            closing(follow_events(client, f"/runs/{run_id}/events/stream", after=BEFORE_ALL)) as events,
        ):
            for event in events:
                if event["type"] in ("agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use"):
                    calls.append({"name": event["name"]})
                elif event["type"] == "span.model_request_end":
                    cost += Decimal(event["cost_usd"])
                    step = {"step": steps, "decision": "tools" if calls else "finish", "tool_calls": calls,
                            "usage": event["model_usage"], "cost_usd": float(event["cost_usd"]),
                            "provider": event["provider"]}  # fmt: skip
                    live.console.print(_step_line(step))
                    steps, calls = steps + 1, []
                    live.update(Text(f"{run_id}  following: {steps} steps, {_money(float(cost))}"))
                if event["type"] == "session.status_idle" or time.monotonic() > deadline:
                    break
    except StreamUnavailable as exc:
        console.print(Text(f"the event stream is unavailable ({exc}): polling instead", style="dim"))
        return follow(client, run_id, timeout=max(deadline - time.monotonic(), 0), shown=steps)
    return client.get_run(run_id)


def follow(
    client: StepwiseClient, run_id: str, *, poll: float = 0.5, timeout: float = 3600.0, shown: int = 0
) -> dict[str, Any]:
    """Show progress until the run ends; print each step as it lands, after the ``shown`` first (polling: see
    ``follow_stream``)."""
    deadline = time.monotonic() + timeout
    seen = shown
    run = client.get_run(run_id)
    with Live(_status_line(run), console=console, refresh_per_second=8, transient=True) as live:
        while run["status"] not in TERMINAL and time.monotonic() < deadline:
            time.sleep(poll)
            run = client.get_run(run_id)
            live.update(_status_line(run))
            if run["steps"] > seen:
                for step in client.get_steps(run_id)["steps"][seen:]:
                    live.console.print(_step_line(step))
                seen = run["steps"]
    return run


def cmd_run(args: argparse.Namespace) -> int:
    client = _client(args)
    body: dict[str, Any] = {"input": args.task}
    if args.model:
        body["model"] = args.model
    if args.tool is not None:
        body["tools"] = args.tool
    budget = {
        k: v
        for k, v in {"max_steps": args.max_steps, "max_usd": args.max_usd, "max_tokens": args.max_tokens}.items()
        if v is not None
    }
    if budget:
        body["budget"] = budget
    if args.max_tokens_per_call:
        body["max_tokens_per_call"] = args.max_tokens_per_call
    run = client.create_run(body, idempotency_key=args.idempotency_key)
    console.print(Text(f"submitted {run['run_id']} ({run['status']}) to {client.endpoint}"))
    if args.no_follow:
        return 0
    try:
        run = follow_stream(client, run["run_id"], timeout=args.timeout)
    except KeyboardInterrupt:
        console.print(Text(f"stopped following; the run goes on: stepwise status {run['run_id']}"))
        return 130
    if run["status"] not in TERMINAL:
        console.print(Text(f"run {run['run_id']} still {run['status']} after {args.timeout:.0f} s", style="red"))
        return 1
    if args.json:
        print(json.dumps({"run": run, "steps": client.get_steps(run["run_id"])["steps"]}, indent=2))
    else:
        print_run(run, client.get_steps(run["run_id"])["steps"])
    return 0 if run["status"] == "SUCCEEDED" else 1


def cmd_status(args: argparse.Namespace) -> int:
    run = _client(args).get_run(args.run_id)
    if args.json:
        print(json.dumps(run, indent=2))
    else:
        console.print(_status_line(run))
        if run.get("output"):
            console.print(Panel(Text(run["output"]), title="answer"))
        if run.get("error"):
            console.print(Text(f"error {run['error']['code']}: {run['error']['message']}"))
    return 0


def cmd_steps(args: argparse.Namespace) -> int:
    steps = _client(args).get_steps(args.run_id)["steps"]
    if args.json:
        print(json.dumps(steps, indent=2))
    else:
        _stub_banner(steps)
        print_steps(steps)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    run = _client(args).cancel(args.run_id)
    console.print(Text(f"{run['run_id']} {run['status']}"))
    return 0


def cmd_costs(args: argparse.Namespace) -> int:
    report = _client(args).costs(args.first, args.last)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    total = report["total"]
    usage = total["usage"]
    console.print(
        Text(
            f"spend of tenant {report['tenant']} {report['from']} .. {report['to']} (UTC): "
            f"${total['cost_usd']:.6f} in {total['steps']} steps, {_tokens(usage)}, "
            f"cache reads {usage['cache_read_share']:.0%} of input"
        )
    )
    days = Table(title="per day")
    for column in ("day", "cost", "steps"):
        days.add_column(column, justify="left" if column == "day" else "right")
    for day in report["days"]:
        days.add_row(day["day"], _money(day["cost_usd"]), str(day["steps"]))
    models = Table(title="per model")
    for column in ("model", "cost", "share", "steps", "tokens", "cache reads"):
        models.add_column(column, justify="left" if column in ("model", "tokens") else "right")
    for model in report["models"]:
        models.add_row(
            model["model"], _money(model["cost_usd"]), f"{model['share']:.0%}", str(model["steps"]),
            _tokens(model["usage"]), f"{model['usage']['cache_read_share']:.0%}",
        )  # fmt: skip
    runs = Table(title="top runs")
    for column in ("run", "cost", "steps"):
        runs.add_column(column, justify="left" if column == "run" else "right")
    for run in report["top_runs"]:
        runs.add_row(run["run_id"], _money(run["cost_usd"]), str(run["steps"]))
    console.print(days, models, runs)
    trend = report["trend"]
    change = f"{trend['change']:+.0%}" if trend["change"] is not None else "n/a"
    console.print(
        Text(
            f"trend: {trend['direction']} (${trend['first_half_usd']:.6f} -> ${trend['second_half_usd']:.6f}, {change})"
        )
    )
    budget = report["budget"]
    if budget["tenant_daily_usd"] is not None:
        console.print(
            Text(f"today: ${budget['today_usd']:.6f} of ${budget['tenant_daily_usd']} ({budget['today_percent']}%)")
        )
    for advice in report["suggestions"] or ["no suggestions: nothing stands out"]:
        console.print(Text(f"- {advice}"))
    return 0


def cmd_local(args: argparse.Namespace) -> int:
    from stepwise.local.stack import LocalStack
    from stepwise.local.template import synthesize

    context, lambda_tools = {}, {}
    for item in args.context or []:
        name, _, value = item.partition("=")
        try:
            context[name] = json.loads(value)
        except ValueError:
            context[name] = value
    if args.lambda_tool and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # local handlers are modules of the project (examples.refund_order, ...)
    for item in args.lambda_tool or []:
        name, _, handler = item.partition("=")
        if not name or "." not in handler:
            console.print(f"--lambda-tool {item!r}: expected NAME=package.module.function", markup=False)
            return 2
        lambda_tools[name] = handler
    secrets = dict(item.partition("=")[::2] for item in args.secret or [])
    console.print("synthesising the CDK app and starting the local stack (moto, no AWS, no Docker)...")
    template = synthesize(context=context) if context else None
    jwt = None
    if args.jwt_issuer or args.jwt_jwks or args.jwt_audience:
        from stepwise.local.jwt import LocalJwt

        jwt = LocalJwt.from_file(args.jwt_jwks or "", issuer=args.jwt_issuer or "", audience=args.jwt_audience or [],
                                 tenant_claim=args.jwt_tenant_claim)  # fmt: skip
    stack = LocalStack(port=args.port, host=args.host, template=template, lambda_tools=lambda_tools,
                       require_keys=args.require_keys, jwt=jwt, histories=args.histories).start()  # fmt: skip
    for name, value in secrets.items():  # (moto's) Secrets Manager, as an MCP server's credential
        stack.put_secret(name, value)
    key = (
        "ANTHROPIC_API_KEY set: the real Messages API is called"
        if os.environ.get("ANTHROPIC_API_KEY")
        else ("no ANTHROPIC_API_KEY: the OFFLINE STUB MODEL answers (labelled in every output)")
    )
    console.print(f"Stepwise local stack listening on {stack.url}  ({key})", markup=False)
    console.print(f"event streams on {stack.stream_url} (the stream function's URL, which the API redirects to)",
                  markup=False)  # fmt: skip
    console.print(f'try: curl -s -X POST {stack.url}/runs -d \'{{"input": "What is 6 * 7?"}}\'', markup=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stack.stop()
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the local stack in a child process, run one agent run over HTTP, print everything, stop."""
    port = args.port or _free_port()
    log_path = Path(args.log)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console.print(Text(f"Stepwise demo: local stack on 127.0.0.1:{port} (handler logs: {log_path})", style="bold"))
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "stepwise.cli", "local", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            client = StepwiseClient(f"http://127.0.0.1:{port}")
            _wait_healthy(client, server, timeout=120)
            console.print(Text(f"task: {args.task}"))
            run_args = argparse.Namespace(
                endpoint=client.endpoint,
                task=args.task,
                model=None,
                tool=None,
                max_steps=None,
                max_usd=None,
                max_tokens=None,
                max_tokens_per_call=None,
                idempotency_key=None,
                no_follow=False,
                json=False,
                timeout=300,
            )
            return cmd_run(run_args)
        finally:
            server.terminate()
            server.wait(timeout=10)


def _wait_healthy(client: StepwiseClient, server: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with console.status("starting the local stack (cdk synth + moto)..."):
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"the local stack exited with {server.returncode}; see the log")
            try:
                client.health()
                return
            except (OSError, ApiError):
                time.sleep(0.2)
    raise SystemExit("the local stack did not become healthy in time")


def cmd_agents(args: argparse.Namespace) -> int:
    return agents_cli.cmd_agents(args, _client(args), console)


def cmd_sessions(args: argparse.Namespace) -> int:
    return agents_cli.cmd_sessions(args, _client(args), console)


def cmd_chat(args: argparse.Namespace) -> int:
    client = StepwiseClient(args.endpoint, timeout=agents_cli.FOLLOW_WAIT_SECONDS + 20)  # long-polls
    return agents_cli.cmd_chat(args, client, console, console.input)


def cmd_keys(args: argparse.Namespace) -> int:
    return keys_cli.cmd_keys(args, console)


def cmd_tenants(args: argparse.Namespace) -> int:
    return tenants_cli.cmd_tenants(args, console)


def cmd_active(args: argparse.Namespace) -> int:
    return kill_cli.cmd_active(args, console)


def cmd_kill(args: argparse.Namespace) -> int:
    return kill_cli.cmd_kill(args, console)


def cmd_doctor(args: argparse.Namespace) -> int:
    return doctor_cli.cmd_doctor(args, console)


def cmd_webhooks(args: argparse.Namespace) -> int:
    return webhooks_cli.cmd_webhooks(args, _client(args), console)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepwise", description=__doc__)
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("STEPWISE_ENDPOINT", DEFAULT_ENDPOINT),
        help=f"API base URL (env STEPWISE_ENDPOINT; default {DEFAULT_ENDPOINT})",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="submit a run and follow it to the end")
    run.add_argument("task")
    run.add_argument("--model")
    run.add_argument("--tool", action="append", help="allowed tool (repeat); default: all built-ins")
    run.add_argument("--max-steps", type=int)
    run.add_argument("--max-usd", type=float)
    run.add_argument("--max-tokens", type=int, help="total tokens the run may use")
    run.add_argument("--max-tokens-per-call", type=int)
    run.add_argument("--idempotency-key")
    run.add_argument("--no-follow", action="store_true")
    run.add_argument("--json", action="store_true")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds to follow before giving up")
    run.set_defaults(func=cmd_run)

    for name, func, help_text in (
        ("status", cmd_status, "show a run"),
        ("steps", cmd_steps, "show a run's steps"),
        ("cancel", cmd_cancel, "cancel a run"),
    ):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("run_id")
        if name != "cancel":
            command.add_argument("--json", action="store_true")
        command.set_defaults(func=func)

    costs = sub.add_parser("costs", help="spend report: per day, per model, top runs, trend, suggestions")
    costs.add_argument("--from", dest="first", help="first UTC day, YYYY-MM-DD (default: 6 days before --to)")
    costs.add_argument("--to", dest="last", help="last UTC day, YYYY-MM-DD (default: today)")
    costs.add_argument("--json", action="store_true")
    costs.set_defaults(func=cmd_costs)

    local = sub.add_parser("local", help="serve the local stack on 127.0.0.1")
    local.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8787")))
    local.add_argument("--host", default="127.0.0.1")
    local.add_argument(
        "--context",
        action="append",
        metavar="KEY=VALUE",
        help="CDK context for the synthesised stack (a JSON value), e.g. lambda_tools='[...]'",
    )
    local.add_argument(
        "--lambda-tool",
        action="append",
        metavar="NAME=MODULE.FUNCTION",
        help="run Lambda tool NAME as this Python handler (there is no Lambda service locally)",
    )
    local.add_argument(
        "--secret",
        action="append",
        metavar="NAME=VALUE",
        help="put a secret in the local Secrets Manager (an MCP server's credential)",
    )
    local.add_argument(
        "--require-keys",
        action="store_true",
        help="every route but /health and /openapi.json needs a tenant's API key, as deployed (stepwise keys create)",
    )
    local.add_argument("--jwt-issuer", help="instead of keys, JWTs of this issuer, as API Gateway's JWT authorizer")
    local.add_argument("--jwt-audience", action="append", help="an audience (client id) tokens may be for")
    local.add_argument("--jwt-jwks", metavar="FILE", help="the issuer's JWKS, as a file (nothing is fetched)")
    local.add_argument("--jwt-tenant-claim", default="tenant", help="the claim naming the tenant (default: tenant)")
    local.add_argument(
        "--histories",
        type=int,
        default=DEFAULT_HISTORIES,
        metavar="N",
        help="keep the Step Functions event histories of the last N finished executions (default: "
        f"{DEFAULT_HISTORIES}; an older one's GetExecutionHistory fails with ExecutionHistoryPruned)",
    )
    local.set_defaults(func=cmd_local)
    keys_cli.add_parser(sub, cmd_keys)
    tenants_cli.add_parser(sub, cmd_tenants)
    kill_cli.add_parsers(sub, active=cmd_active, kill=cmd_kill)
    doctor_cli.add_parser(sub, cmd_doctor)
    webhooks_cli.add_parser(sub, cmd_webhooks)

    demo = sub.add_parser("demo", help="start the local stack, run one agent run end to end, stop")
    demo.add_argument("task", nargs="?", default=DEMO_TASK)
    demo.add_argument("--port", type=int, default=0)
    demo.add_argument("--log", default=".build/demo-local-stack.log")
    demo.set_defaults(func=cmd_demo)

    agents_cli.add_parsers(sub, agents=cmd_agents, sessions=cmd_sessions, chat=cmd_chat)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ApiError as exc:
        console.print(Text(f"error {exc.status} {exc.code}: {exc.message}", style="red"))
        return 2
    except (ValueError, FileNotFoundError) as exc:  # a bad definition file or --tool value
        console.print(Text(f"error: {exc}", style="red"))
        return 2
    except StepwiseError as exc:  # the core refused (a malformed tenant, an unknown key id, ...)
        console.print(Text(f"error: {exc}", style="red"))
        return 2
    except (BotoCoreError, ClientError) as exc:  # `keys --table`: no credentials, no region, access denied
        console.print(Text(f"AWS error: {exc}", style="red"))
        return 2
    except OSError as exc:
        if args.func is cmd_local:  # the local stack could not listen (its port is taken, ...)
            console.print(Text(f"cannot serve on {args.host}:{args.port}: {exc}", style="red"))
        else:
            console.print(Text(f"cannot reach {args.endpoint}: {exc} (is `make local` running?)", style="red"))
        return 2


if __name__ == "__main__":
    sys.exit(main())
