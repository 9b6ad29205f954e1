"""`stepwise agents|sessions|chat`: the Managed Agents API from the terminal.

``stepwise chat AGENT`` opens a session and shows each step as it happens (model, tool calls, tokens, cost: from the
session's event stream, or the long-poll where the deployment does not stream),
asks ``allow / deny`` for always_ask tools, and runs a client tool by asking the person for its result or
through a ``--tool NAME=COMMAND`` hook (the command gets the call's input as JSON on stdin; its stdout is the
result, a non-zero exit an error result). Ctrl-C while a turn runs interrupts it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from functions.agent.streams import BEFORE_ALL
from stepwise.client import ApiError, StepwiseClient, StreamUnavailable, follow_events

FOLLOW_WAIT_SECONDS = 10
Ask = Callable[[str], str]


def load_definition(path: str) -> dict[str, Any]:
    """An agent definition from a .yaml/.yml or .json file."""
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith((".yaml", ".yml")):
        import yaml

        loaded = yaml.safe_load(text)
    else:
        loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: an agent definition is a mapping (name, model, system, tools, ...)")
    return loaded


def _ids(header: str = "id") -> Column:
    """A column of ids, never cut: they are what the next command takes."""
    return Column(header, no_wrap=True, min_width=33)


def _agent_row(table: Table, agent: dict[str, Any]) -> None:
    tools = ", ".join(tool.get("name") or tool["type"] for tool in agent.get("tools", []))
    table.add_row(agent["id"], agent["name"], str(agent["version"]), agent["model"]["id"], tools,
                  "archived" if agent.get("archived_at") else "")  # fmt: skip


def print_agents(console: Console, agents: list[dict[str, Any]]) -> None:
    table = Table(_ids(), "name", "version", "model", "tools", "", box=None)
    for agent in agents:
        _agent_row(table, agent)
    console.print(table)


def cmd_agents(args: argparse.Namespace, client: StepwiseClient, console: Console) -> int:
    action = args.agents_command
    if action == "create":
        agent = client.request("POST", "/v1/agents", load_definition(args.file))
        if not args.json:
            console.print(f"created [bold]{agent['id']}[/bold] version {agent['version']}")
    elif action == "update":
        body = load_definition(args.file)
        if args.version is not None:
            body["version"] = args.version
        agent = client.request("POST", f"/v1/agents/{args.agent_id}", body)
        if not args.json:
            console.print(f"[bold]{agent['id']}[/bold] is at version {agent['version']}")
    elif action == "show":
        query = f"?version={args.version}" if args.version is not None else ""
        agent = client.request("GET", f"/v1/agents/{args.agent_id}{query}")
    elif action == "archive":
        agent = client.request("POST", f"/v1/agents/{args.agent_id}/archive")
    else:
        path = "/v1/agents" if action == "list" else f"/v1/agents/{args.agent_id}/versions"
        agents = client.request("GET", f"{path}?limit=100")["data"]
        if args.json:
            console.print_json(json.dumps(agents))
        else:
            print_agents(console, agents)
        return 0
    if args.json or action == "show":
        console.print_json(json.dumps(agent))
    return 0


def cmd_sessions(args: argparse.Namespace, client: StepwiseClient, console: Console) -> int:
    action = args.sessions_command
    if action == "list":
        query = f"&agent_id={args.agent}" if args.agent else ""
        sessions = client.request("GET", f"/v1/sessions?limit=100{query}")["data"]
        table = Table(_ids(), _ids("agent"), "status", "turns", "tokens in/out", "cost", "title", box=None)
        for s in sessions:
            usage = s["usage"]
            table.add_row(s["id"], f"{s['agent']['id']} v{s['agent']['version']}", s["status"], str(s.get("turns")),
                          f"{usage['input_tokens']}/{usage['output_tokens']}", f"${usage['cost_usd']}",
                          s.get("title") or "")  # fmt: skip
        console.print(table)
        return 0
    if action == "show":
        console.print_json(json.dumps(client.request("GET", f"/v1/sessions/{args.session_id}")))
        return 0
    page: str | None = None
    while True:
        query = f"?limit=1000{'&page=' + page if page else ''}"
        listed = client.request("GET", f"/v1/sessions/{args.session_id}/events{query}")
        for event in listed["data"]:
            if args.json:
                console.print_json(json.dumps(event))
            else:
                show_event(console, event)
        page = listed["next_page"]
        if not page:
            return 0


def show_event(console: Console, event: dict[str, Any]) -> None:
    """One event as a line a person reads."""
    kind = event["type"]
    if kind == "agent.message":
        text = "".join(block.get("text", "") for block in event["content"])
        console.print(f"[bold cyan]agent[/bold cyan]  {escape(text)}")
    elif kind in ("agent.tool_use", "agent.custom_tool_use", "agent.mcp_tool_use"):
        where = "client tool" if kind == "agent.custom_tool_use" else f"tool ({event.get('evaluated_permission')})"
        if kind == "agent.mcp_tool_use":
            where = f"mcp {event.get('mcp_server_name')} ({event.get('evaluated_permission')})"
        console.print(f"  [magenta]{where}[/magenta] {escape(event['name'])}({escape(json.dumps(event['input']))})")
    elif kind in ("agent.tool_result", "agent.mcp_tool_result"):
        text = "".join(block.get("text", "") for block in event.get("content") or [])
        mark = "[red]error[/red] " if event.get("is_error") else ""
        size = f" [dim](a view of {event['size']:,} characters)[/dim]" if event.get("size") else ""
        console.print(f"  [magenta]result[/magenta] {mark}{escape(text[:500])}{size}")
    elif kind == "span.model_request_end":
        usage = event["model_usage"]
        console.print(
            f"  [dim]{escape(event.get('model', ''))}: {usage['input_tokens']} in / {usage['output_tokens']} out, "
            f"cache {usage['cache_read_input_tokens']} read / {usage['cache_creation_input_tokens']} written, "
            f"${event.get('cost_usd')}[/dim]"
        )
    elif kind == "agent.thread_context_compacted":
        bound = event.get("cleared_before_step")
        console.print(f"  [dim]context: tool results of steps before {bound} cleared to fit the window[/dim]")
    elif kind == "session.error":
        console.print(f"[red]error[/red] {escape(event['error']['message'])}")
    elif kind == "session.status_idle":
        console.print(f"  [dim]idle: {event['stop_reason']['type']}[/dim]")
    elif kind.startswith("user."):
        console.print(f"[bold]you[/bold]    {escape(_user_summary(event))}")


def _user_summary(event: dict[str, Any]) -> str:
    if event["type"] == "user.message":
        return "".join(block.get("text", "") for block in event["content"])
    if event["type"] == "user.tool_confirmation":
        return f"{event['result']} {event['tool_use_id']}" + (
            f": {event['deny_message']}" if event.get("deny_message") else ""
        )
    if event["type"] == "user.custom_tool_result":
        return "result: " + "".join(block.get("text", "") for block in event.get("content", []))
    return str(event["type"])


def parse_hooks(values: list[str] | None) -> dict[str, str]:
    hooks = {}
    for value in values or []:
        name, sep, command = value.partition("=")
        if not sep or not name or not command:
            raise ValueError(f"--tool takes NAME=COMMAND, got {value!r}")
        hooks[name] = command
    return hooks


def run_hook(command: str, tool_input: dict[str, Any]) -> tuple[str, bool]:
    """A client tool run by a command: the input as JSON on stdin, stdout the result, exit status the error."""
    done = subprocess.run(shlex.split(command), input=json.dumps(tool_input), capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    if done.returncode != 0:
        return (done.stderr or done.stdout or f"exit status {done.returncode}").strip(), True
    return done.stdout.strip(), False


class Chat:
    """A multi-turn session in the terminal."""

    def __init__(self, client: StepwiseClient, console: Console, ask: Ask, hooks: dict[str, str]) -> None:
        self.client, self.console, self.ask, self.hooks = client, console, ask, hooks
        self.seen: dict[str, dict[str, Any]] = {}
        self.last: str | None = None
        self.streaming = True  # until the deployment says it cannot stream

    def open(self, agent: str, budget_cents: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"agent": agent, "environment_id": "stepwise-cli", "title": "stepwise chat"}
        if budget_cents:
            body["budget"] = {"type": "limit", "max_list_cost": {"amount": str(budget_cents), "currency": "USD"}}
        self.session = self.client.request("POST", "/v1/sessions", body)
        agent_info = self.session["agent"]
        self.console.print(
            f"session [bold]{self.session['id']}[/bold] with {escape(agent_info['name'])} v{agent_info['version']} "
            f"({agent_info['model']['id']})" + (f", budget {budget_cents} cents" if budget_cents else "")
        )
        return dict(self.session)

    def say(self, text: str) -> dict[str, Any]:
        """Send a message, then follow the turn (and answer what it asks) until it ends. Ctrl-C while a turn runs
        interrupts it (the session idles once its model call has settled); a second Ctrl-C stops the chat."""
        self._send([{"type": "user.message", "content": [{"type": "text", "text": text}]}])
        while True:
            try:
                stop = self._follow()
            except KeyboardInterrupt:
                stop = self._interrupt()
            if stop["type"] != "requires_action":
                return stop
            self._send([self._answer(event_id) for event_id in stop["event_ids"]])

    def _interrupt(self) -> dict[str, Any]:
        self.console.print("[dim]interrupting the turn (Ctrl-C again to leave)[/dim]")
        try:
            self._send([{"type": "user.interrupt"}])
        except ApiError as exc:
            if exc.status != 409:  # 409: it had idled already; its idle is what comes next
                raise
        return self._follow()

    def _answer(self, event_id: str) -> dict[str, Any]:
        call = self.seen[event_id]
        if call["type"] in ("agent.tool_use", "agent.mcp_tool_use"):  # always_ask: a person decides
            reply = (
                self.ask(escape(f"allow {call['name']}({json.dumps(call['input'])})? [allow/deny] ")).strip().lower()
            )
            if reply in ("a", "allow", "y", "yes"):
                return {"type": "user.tool_confirmation", "tool_use_id": event_id, "result": "allow"}
            why = self.ask("why (the model sees it; empty for none)? ").strip()
            denial: dict[str, Any] = {"type": "user.tool_confirmation", "tool_use_id": event_id, "result": "deny"}
            return {**denial, "deny_message": why} if why else denial
        if call["name"] in self.hooks:
            text, failed = run_hook(self.hooks[call["name"]], call["input"])
            self.console.print(f"  [magenta]ran[/magenta] {escape(self.hooks[call['name']])}: {escape(text[:200])}")
        else:
            text = self.ask(escape(f"result of {call['name']}({json.dumps(call['input'])})? "))
            failed = False
        return {"type": "user.custom_tool_result", "custom_tool_use_id": event_id,
                "content": [{"type": "text", "text": text or "(empty)"}], "is_error": failed}  # fmt: skip

    def _send(self, events: list[dict[str, Any]]) -> None:
        self.client.request("POST", f"/v1/sessions/{self.session['id']}/events", {"events": events})

    def _follow(self) -> dict[str, Any]:
        """Print events as they arrive until the turn idles; its stop reason. Through the session's event stream
        (resuming after the last event seen, so nothing is missed or shown twice), or with the long-poll when the
        deployment does not stream."""
        if self.streaming:
            try:
                return self._follow_stream()
            except StreamUnavailable as exc:
                self.streaming = False
                self.console.print(f"[dim]the event stream is unavailable ({escape(str(exc))}): long-polling[/dim]")
        return self._follow_poll()

    def _follow_stream(self) -> dict[str, Any]:
        path = f"/v1/sessions/{self.session['id']}/events/stream"
        with closing(follow_events(self.client, path, after=self.last or BEFORE_ALL)) as events:
            for event in events:
                if event["type"] == "ping":
                    continue
                self._show(event)
                if event["type"] == "session.status_idle":  # the stream closes while the person thinks
                    return dict(event["stop_reason"])
        raise StreamUnavailable("the stream ended")  # (follow_events reconnects: not reached)

    def _follow_poll(self) -> dict[str, Any]:
        """The long-poll: no hot polling."""
        while True:
            query = f"?wait={FOLLOW_WAIT_SECONDS}" + (f"&page={self.last}" if self.last else "")
            page = self.client.request("GET", f"/v1/sessions/{self.session['id']}/events{query}")
            stop = None
            for event in page["data"]:
                self._show(event)
                if event["type"] == "session.status_idle":
                    stop = event["stop_reason"]
            if stop is not None and not page["next_page"]:
                return dict(stop)

    def _show(self, event: dict[str, Any]) -> None:
        self.seen[event["id"]] = event
        self.last = event["id"]
        if not event["type"].startswith("user."):
            show_event(self.console, event)

    def summary(self) -> None:
        session = self.client.request("GET", f"/v1/sessions/{self.session['id']}")
        usage = session["usage"]
        self.console.print(
            f"session {session['id']}: {session['turns']} turns, tokens {usage['input_tokens']} in / "
            f"{usage['output_tokens']} out, cost ${usage['cost_usd']}"
        )


def cmd_chat(args: argparse.Namespace, client: StepwiseClient, console: Console, ask: Ask) -> int:
    chat = Chat(client, console, ask, parse_hooks(args.tool))
    chat.open(args.agent, args.budget_cents)
    scripted = list(args.message or [])
    while True:
        if scripted:
            text = scripted.pop(0)
            console.print(f"[bold]you[/bold]    {escape(text)}")
        elif args.message:  # every scripted message was sent
            break
        else:
            try:
                text = ask("you> ").strip()
            except EOFError:
                break
            if text in ("", "/quit", "/exit"):
                break
        chat.say(text)
    chat.summary()
    return 0


def add_parsers(
    sub: Any, *, agents: Callable[..., int], sessions: Callable[..., int], chat: Callable[..., int]
) -> None:
    a = sub.add_parser("agents", help="create, list, show, update and archive agents (versioned)")
    a_sub = a.add_subparsers(dest="agents_command", required=True)
    create = a_sub.add_parser("create", help="create an agent from a YAML or JSON definition")
    create.add_argument("-f", "--file", required=True)
    update = a_sub.add_parser("update", help="write the next version from a YAML or JSON file (fields to change)")
    update.add_argument("agent_id")
    update.add_argument("-f", "--file", required=True)
    update.add_argument("--version", type=int, help="only if the agent is still at this version")
    show = a_sub.add_parser("show", help="an agent (its current or an earlier version)")
    show.add_argument("agent_id")
    show.add_argument("--version", type=int)
    versions = a_sub.add_parser("versions", help="every version of an agent, newest first")
    versions.add_argument("agent_id")
    archive = a_sub.add_parser("archive", help="archive an agent (its sessions keep running)")
    archive.add_argument("agent_id")
    listing = a_sub.add_parser("list", help="the agents of your tenant")
    for parser in (create, update, show, versions, archive, listing):
        parser.add_argument("--json", action="store_true")
    a.set_defaults(func=agents)

    s = sub.add_parser("sessions", help="list sessions, show one, print its events")
    s_sub = s.add_subparsers(dest="sessions_command", required=True)
    s_list = s_sub.add_parser("list")
    s_list.add_argument("--agent", help="only this agent's sessions")
    s_show = s_sub.add_parser("show")
    s_show.add_argument("session_id")
    s_events = s_sub.add_parser("events")
    s_events.add_argument("session_id")
    s_events.add_argument("--json", action="store_true")
    s.set_defaults(func=sessions)

    c = sub.add_parser("chat", help="an interactive multi-turn session with an agent")
    c.add_argument("agent", help="the agent id")
    c.add_argument("--tool", action="append", metavar="NAME=COMMAND", help="run a client tool with a command")
    c.add_argument("--budget-cents", type=int, help="the session's max_list_cost, in cents")
    c.add_argument("-m", "--message", action="append", help="send these messages (repeat) instead of prompting")
    c.set_defaults(func=chat)
