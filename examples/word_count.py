"""The example agent's client tool, as a `stepwise chat --tool word_count=...` hook: the call's input arrives
as JSON on stdin ({"text": "..."}); the result is printed."""

import json
import sys


def word_count(text: str) -> str:
    return str(len(text.split()))


if __name__ == "__main__":
    call = json.load(sys.stdin)
    print(word_count(str(call.get("text", ""))))
