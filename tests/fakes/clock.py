from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FixedClock:
    """Starts at a fixed instant and moves ``tick`` forward on every read."""

    def __init__(
        self, start: datetime = datetime(2026, 11, 21, 12, 0, tzinfo=UTC), tick: timedelta = timedelta(milliseconds=250)
    ) -> None:
        self.current = start
        self.tick = tick

    def now(self) -> datetime:
        value = self.current
        self.current += self.tick
        return value
