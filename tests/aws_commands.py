"""The `aws` CLI commands the documents and the doctor print, found in text and checked against botocore's service
models (what the CLI itself is generated from), so a command an operator pastes does not fail on its syntax.

A command passes when its service and operation exist, each option is one of the operation's parameters (a
boolean's ``--no-`` form too), a global option or, for an operation the CLI pages through, a paging option;
every required parameter is given; no paginated operation is limited with its API limit key (``--max-results``,
``--max-records``: the CLI hides it, and still reads and prints every page; ``--max-items`` limits what it
prints); and the parameters the model's documentation says go together ("If X is specified, then Y must be
specified", e.g. CodeDeploy's ListDeployments) are given together; and no operation the model says answers only
its first N items is used (DescribeStackResources: ListStackResources). The CLI's own commands that are not API
operations (``aws logs tail``) are not checked.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from typing import Any

import botocore.session
from botocore import xform_name

CLI_SERVICES = {"deploy": "codedeploy", "s3api": "s3", "configservice": "config"}  # the CLI's names that differ
CUSTOM_COMMANDS = {("logs", "tail")}  # the CLI's own (v2), not an API operation
GLOBAL_OPTIONS = {"region", "output", "query", "profile", "endpoint-url", "no-paginate", "debug", "no-cli-pager",
                  "cli-input-json", "color", "no-verify-ssl", "cli-binary-format", "no-sign-request"}  # fmt: skip
PAGING_OPTIONS = {"max-items", "page-size", "starting-token"}
TOGETHER = re.compile(r"If <code>(\w+)</code> is specified, then <code>(\w+)</code> must be specified")
TRUNCATED = re.compile(
    r"Only the first (\d+) \w+ will be returned\. If your \w+ has more \w+ than this, you should use <code>(\w+)</code>"
)
COMMAND = re.compile(r"(?<![\w/-])aws\s+[a-z0-9-]+\s+[a-z0-9-]+")
FENCED = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
INLINE = re.compile(r"`([^`]+)`")


@cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


def markdown_commands(markdown: str) -> list[list[str]]:
    """The commands of a Markdown document's code blocks and inline code (which may run over a line break)."""
    blocks = FENCED.findall(markdown)
    prose = FENCED.sub("", markdown)
    return [c for text in [*blocks, *(span.replace("\n", " ") for span in INLINE.findall(prose))]
            for c in commands(text)]  # fmt: skip


def commands(text: str) -> list[list[str]]:
    """Every ``aws <service> <operation> ...`` in shell text, as argv: lines continued with ``\\`` are joined,
    and a command substitution ``$(...)`` is a command of its own (a word ``SUBSHELL`` where it was)."""
    outer, inner = _substitutions(text.replace("\\\n", " "))
    found = [argv for text in inner for argv in commands(text)]
    for line in outer.splitlines():
        for match in COMMAND.finditer(line):
            found.append(_argv(line[match.start() :]))
    return found


def _substitutions(text: str) -> tuple[str, list[str]]:
    """``text`` with each ``$(...)`` replaced by ``SUBSHELL``, and what each contained."""
    outer, inner, start = [], [], 0
    while (opening := text.find("$(", start)) >= 0:
        depth, end = 0, opening + 1
        while end < len(text):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
            end += 1
        outer.append(text[start:opening] + "SUBSHELL")
        inner.append(text[opening + 2 : end])
        start = end + 1
    return "".join(outer) + text[start:], inner


def _argv(text: str) -> list[str]:
    """The words of the command at the start of ``text``, up to a shell operator (``;``, ``|``, ``&``, ``)``)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";|&()")
    lexer.whitespace_split = True
    argv = []
    for word in lexer:
        if set(word) <= set(";|&()"):
            break
        argv.append(word)
    return argv


def problems(argv: list[str]) -> list[str]:
    """What would make the CLI refuse ``argv`` (or not do what it says); [] when nothing."""
    command = " ".join(argv)
    _, service, operation, *words = argv
    if (service, operation) in CUSTOM_COMMANDS:
        return []
    name = CLI_SERVICES.get(service, service)
    if name not in _session().get_available_services():
        return [f"{command}: no service {service!r}"]
    model = _session().get_service_model(name)
    operations = {xform_name(op, "-"): op for op in model.operation_names}
    if operation not in operations:
        return [f"{command}: {service} has no operation {operation!r}"]
    operation_model = model.operation_model(operations[operation])
    shape = operation_model.input_shape
    members: dict[str, Any] = {xform_name(m, "-"): (m, s) for m, s in shape.members.items()} if shape else {}
    paginator = _paginator(name, operations[operation])
    hidden = {xform_name(paginator[key], "-") for key in ("limit_key", "input_token") if paginator and key in paginator}
    given = {word[2:].split("=", 1)[0] for word in words if word.startswith("--")}
    found = [f"{command}: answers the first {limit} only: use {xform_name(instead, '-')}"
             for limit, instead in TRUNCATED.findall(operation_model.documentation or "")]  # fmt: skip
    for option in sorted(given):
        boolean = option.startswith("no-") and option[3:] in members and members[option[3:]][1].type_name == "boolean"
        if option in hidden:
            found.append(f"{command}: --{option} is not how the CLI limits a paginated operation (--max-items)")
        elif not (option in members or boolean or option in GLOBAL_OPTIONS
                  or (paginator and option in PAGING_OPTIONS)):  # fmt: skip
            found.append(f"{command}: {service} {operation} has no option --{option}")
    if "cli-input-json" not in given:
        for required in shape.required_members if shape else []:
            if xform_name(required, "-") not in given:
                found.append(f"{command}: --{xform_name(required, '-')} is required")
    for option in given & set(members):
        member, member_shape = members[option]
        for this, other in TOGETHER.findall(member_shape.documentation or ""):
            if this == member and xform_name(other, "-") not in given:
                found.append(f"{command}: with --{option}, --{xform_name(other, '-')} must be given too")
    return found


def _paginator(service: str, operation: str) -> dict[str, Any] | None:
    try:
        return dict(_session().get_paginator_model(service).get_paginator(operation))
    except (ValueError, botocore.exceptions.UnknownServiceError):
        return None
