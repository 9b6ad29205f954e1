from __future__ import annotations

from typing import Any

from functions.agent.models import RunKey


class RecordingQueue:
    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[RunKey] = []
        self.releases: list[tuple[RunKey, int]] = []
        self.watches: list[RunKey] = []
        self.watched_turns: list[int] = []
        self.stops: list[tuple[RunKey, str]] = []
        self.fail = fail

    def enqueue(self, key: RunKey) -> None:
        if self.fail:
            raise self.fail
        self.sent.append(key)

    def schedule_release(self, key: RunKey, step: int) -> None:
        self.releases.append((key, step))

    def schedule_watch(self, key: RunKey, *, turn: int = 0) -> None:
        self.watches.append(key)
        self.watched_turns.append(turn)

    def schedule_stop(self, key: RunKey, execution: str, reason: str, *, why: str) -> None:
        self.stops.append((key, execution))


class RecordingWorkflow:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.statuses: dict[str, str] = {}  # execution name -> status (started ones default to RUNNING)
        self.states: dict[str, dict[str, Any]] = {}  # execution name -> its input

    def start(self, key: RunKey, *, name: str, state: dict[str, Any]) -> bool:
        if name in self.started:
            return False
        self.started.append(name)
        self.states[name] = state
        return True

    def stop(self, name: str, reason: str) -> None:
        self.stopped.append(name)

    def status(self, name: str) -> str | None:
        return self.statuses.get(name, "RUNNING" if name in self.started else None)
