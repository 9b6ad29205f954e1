"""examples/: the agent definition and the script that drives it with the official SDK, on the local stack
(offline: the labelled stub model answers, as on any machine without ANTHROPIC_API_KEY)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from functions.adapters import wiring
from stepwise import cli
from stepwise.local.stack import LocalStack

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    wiring.reset()


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_script_drives_the_example_agent_to_an_answer_with_the_official_sdk(
    stack: LocalStack, offline: None, capsys: pytest.CaptureFixture[str]
) -> None:
    result = load("drive_agent").main(stack.url)
    printed = capsys.readouterr().out
    assert result["stop_reason"] == "end_turn"
    # the stub asked for both tools (word_count of its whole message: 17 words); the script ran word_count and
    # allowed the calculator (144)
    assert "agent.custom_tool_use      word_count" in printed and "agent.tool_use             calculator" in printed
    assert "= 17" in printed and "= 144" in printed and "[offline stub model]" in printed
    session = result["session"]
    assert session.status == "idle" and session.usage.output_tokens > 0 and float(session.usage.cost_usd) > 0


def test_the_word_count_hook_reads_the_call_on_stdin() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "word_count.py")], input=json.dumps({"text": "one two three"}),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "3"


def test_stepwise_chat_runs_the_example_agent_with_a_tool_hook_and_asks_before_the_calculator(
    stack: LocalStack, offline: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the example agent, created with the CLI
    assert cli.main(["--endpoint", stack.url, "agents", "create", "-f", str(EXAMPLES / "agent.yaml"), "--json"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith('{"_aws"')]  # EMF
    agent_id = json.loads("\n".join(printed))["id"]
    # When a person chats with it, runs word_count through a hook and denies the calculator
    answers = iter(["deny", "not now"])
    asked: list[str] = []

    def person(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    monkeypatch.setattr(cli.console, "input", person)
    hook = f"word_count={sys.executable} {EXAMPLES / 'word_count.py'}"
    message = "word_count: the quick brown fox, and 12*12"
    assert cli.main(["--endpoint", stack.url, "chat", agent_id, "--tool", hook, "-m", message]) == 0
    printed = capsys.readouterr().out
    # Then the hook answered the client tool and the person was asked about the calculator only
    assert len(asked) == 2 and asked[0].startswith("allow calculator(")
    assert "ran" in printed and "= 7" in printed  # "word_count: the quick brown fox, and 12*12" has 7 words
    assert "calculator" in printed and "not now" in printed  # the model saw the denial as the call's result
    assert "idle: end_turn" in printed and ": 2 turns," in printed  # requires_action, then the answer
