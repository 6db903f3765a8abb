"""One sending run per workspace: an exclusive lock on mailer.lock.

The lock is an flock() on an open file, so the kernel releases it when its process
dies, however it dies: a lock left by a killed run is simply free (taken over).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from .errors import LockedError


class WorkspaceLock:
    """`with WorkspaceLock(path, "mailer send 3", now):` or LockedError naming the holder."""

    def __init__(self, path: Path, command: str, started: str):
        self.path = Path(path)
        self.command = command
        self.started = started
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(fd)
            os.close(fd)
            raise LockedError(
                f"Another mailer run holds the workspace lock ({holder}); nothing was done.",
                hint="Wait for it to finish; cron will try again at the next run.",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": self.command, "started": self.started}).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "WorkspaceLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"process {info['pid']}, `{info['command']}`, started {info['started']}"
    except (ValueError, KeyError, OSError):
        return "a process that has not said who it is yet"
