"""Clients of the local stack under load (bench/local_load.py, tests/e2e/test_local_load.py): many connections
at once, never retried, every answer counted."""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any

from stepwise.local.stack import LocalStack


def call(stack: LocalStack, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(stack.host, stack.port, timeout=300)
    try:
        data = json.dumps(body) if body is not None else None
        connection.request(method, path, data, {"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def submit(stack: LocalStack, count: int) -> tuple[dict[str, int], list[str]]:
    """``count`` POST /runs at once, no retries: answers by status or exception name, and the accepted run ids."""
    barrier = threading.Barrier(count)
    answers: list[tuple[str, str | None]] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        barrier.wait()
        try:
            status, body = call(stack, "POST", "/runs", {"input": f"What is {index} * 7?"})
            answer = (str(status), body.get("run_id") if status == 202 else None)
        except Exception as exc:  # a reset, a refused connection, a timeout: counted, never retried
            answer = (type(exc).__name__, None)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts: dict[str, int] = {}
    for kind, _ in answers:
        counts[kind] = counts.get(kind, 0) + 1
    return counts, [run_id for _, run_id in answers if run_id]
