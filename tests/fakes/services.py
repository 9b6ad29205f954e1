from __future__ import annotations

from functions.agent.models import RunKey


class RecordingQueue:
    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[RunKey] = []
        self.releases: list[tuple[RunKey, int]] = []
        self.watches: list[RunKey] = []
        self.fail = fail

    def enqueue(self, key: RunKey) -> None:
        if self.fail:
            raise self.fail
        self.sent.append(key)

    def schedule_release(self, key: RunKey, step: int) -> None:
        self.releases.append((key, step))

    def schedule_watch(self, key: RunKey) -> None:
        self.watches.append(key)


class RecordingWorkflow:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.statuses: dict[str, str] = {}  # run id -> execution status (started ones default to RUNNING)

    def start(self, key: RunKey) -> bool:
        if key.run_id in self.started:
            return False
        self.started.append(key.run_id)
        return True

    def stop(self, key: RunKey, reason: str) -> None:
        self.stopped.append(key.run_id)

    def status(self, key: RunKey) -> str | None:
        return self.statuses.get(key.run_id, "RUNNING" if key.run_id in self.started else None)
