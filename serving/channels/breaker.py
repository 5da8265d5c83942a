"""A circuit breaker per channel: after repeated failed or slow calls it stops calling the
channel for a while, then lets one trial call through (half-open) and closes on its
success."""

from typing import Literal

from db.channels import BreakerSettings
from serving.channels.clock import Clock

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures (a call slower than
    `slow_call_seconds` counts as one), stays open `open_seconds`, then half-open: one trial
    call; its success closes the breaker, its failure opens it again."""

    def __init__(self, settings: BreakerSettings, clock: Clock):
        self.settings = settings
        self.clock = clock
        self.state: State = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.openings = 0

    def allow(self) -> bool:
        """Whether a call may go now (moving from open to half-open when the time is up)."""
        if self.state == "open" and self.retry_in() == 0:
            self.state = "half_open"
        return self.state != "open"

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when not open)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.opened_at + self.settings.open_seconds - self.clock.monotonic())

    def record(self, ok: bool, seconds: float = 0.0) -> None:
        """Count a finished call: failed, or taking `seconds`."""
        if ok and seconds <= self.settings.slow_call_seconds:
            self.failures = 0
            self.state = "closed"
            return
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.settings.failure_threshold:
            self.state = "open"
            self.opened_at = self.clock.monotonic()
            self.openings += 1
