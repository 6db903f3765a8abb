"""Time, passed in rather than read from the system, so tests can move it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for rates and pauses)."""
        ...

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        """Wait (less, if `wake` is set meanwhile); a test clock just moves forward."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        if seconds > 0:
            if wake is None:
                time.sleep(seconds)
            else:
                wake.wait(seconds)


class FakeClock:
    """A clock for tests: time moves only when someone sleeps or calls advance()."""

    def __init__(self, start: datetime, on_sleep: Callable[[float], None] | None = None):
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)
        self._mono = 1000.0
        self.slept: list[float] = []
        self._on_sleep = on_sleep

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        if seconds > 0:
            self.slept.append(seconds)
            self.advance(seconds)
            if self._on_sleep:
                self._on_sleep(seconds)


def iso(dt: datetime) -> str:
    """`2026-11-25T15:22:15Z`: how every time is stored."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """Read a stored time back."""
    return datetime.fromisoformat(text).astimezone(UTC)
