"""Time for the delivery worker, injectable: tests drive backoff, leases and the circuit
breaker with a fake clock instead of sleeping."""

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The wall-clock time, aware UTC (leases and retry times in the database)."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start (durations, rate limits, the breaker)."""

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)
