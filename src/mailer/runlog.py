"""logs/mailer.log: one JSON line per event of every send and run-due, rotated by size.

Never holds a secret: callers pass counts, ids, addresses and server replies only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .clock import Clock, iso
from .text import mask_addresses

if TYPE_CHECKING:
    from .send import Event

MAX_BYTES = 1_000_000
BACKUPS = 5


class RunLog:
    """Appends structured lines to a log file; rotates it (mailer.log.1 ... .5) past MAX_BYTES."""

    def __init__(self, path: Path, clock: Clock, command: str):
        self.path = Path(path)
        self.clock = clock
        self.command = command
        self.pid = os.getpid()

    def write(self, event: str, **fields: Any) -> None:
        """Append one event; any address in its text is masked (the log outlives an erasure)."""
        record = _masked({"time": iso(self.clock.now()), "pid": self.pid, "command": self.command, "event": event, **fields})
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rotate(len(line))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line)  # one write of one line: O_APPEND keeps lines of two processes whole
        except OSError:
            pass  # a full disk must not turn a finished send into a failure; the store has the truth

    def _rotate(self, incoming: int) -> None:
        try:
            if self.path.stat().st_size + incoming <= MAX_BYTES:
                return
        except FileNotFoundError:
            return
        for i in range(BACKUPS - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_addresses(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return value


def loggable(event: Event, campaign: int) -> dict[str, Any]:
    """An event for the log, naming the delivery by its number, never the address.

    The log outlives an erasure (it is rotated, not rewritten), so it holds no one's address.
    """
    d = event.delivery
    message = event.message.replace(d.email, f"delivery #{d.seq}") if d is not None and d.email else event.message
    return {"campaign": campaign, "delivery": d.seq if d is not None else None, "message": message}


def last_event(path: Path, event: str = "end") -> dict[str, Any] | None:
    """The newest line of a kind (by default the end of the last run), read from the file's tail."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return None
    for raw in reversed(lines):
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if record.get("event") == event:
            return record
    return None
