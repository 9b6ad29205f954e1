from __future__ import annotations


class RecordingQueue:
    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, str]] = []
        self.releases: list[tuple[str, str, int]] = []
        self.watches: list[tuple[str, str]] = []
        self.fail = fail

    def enqueue(self, tenant: str, run_id: str) -> None:
        if self.fail:
            raise self.fail
        self.sent.append((tenant, run_id))

    def schedule_release(self, tenant: str, run_id: str, step: int) -> None:
        self.releases.append((tenant, run_id, step))

    def schedule_watch(self, tenant: str, run_id: str) -> None:
        self.watches.append((tenant, run_id))


class RecordingWorkflow:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.statuses: dict[str, str] = {}  # run id -> execution status (started ones default to RUNNING)

    def start(self, tenant: str, run_id: str) -> bool:
        if run_id in self.started:
            return False
        self.started.append(run_id)
        return True

    def stop(self, run_id: str, reason: str) -> None:
        self.stopped.append(run_id)

    def status(self, run_id: str) -> str | None:
        return self.statuses.get(run_id, "RUNNING" if run_id in self.started else None)
