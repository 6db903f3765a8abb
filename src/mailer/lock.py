"""One sending run per workspace: an exclusive lock on mailer.lock.

The lock is an flock() on an open file, so the kernel releases it when its process
dies, however it dies: a lock left by a killed run is simply free (taken over).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path

from .errors import DiskFull, LockedError, MailerError, StoreError


class WorkspaceLock:
    """`with WorkspaceLock(path, "mailer send 3", now):` or LockedError naming the holder."""

    def __init__(self, path: Path, command: str, started: str):
        self.path = Path(path)
        self.command = command
        self.started = started
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise LockedError naming its holder; a full disk is DiskFull, never a crash."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise _disk_error(exc, self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(fd)
            os.close(fd)
            raise LockedError(
                f"Another mailer run holds the workspace lock ({holder}); nothing was done.",
                hint="Wait for it to finish; cron will try again at the next run.",
            ) from None
        try:
            # Who holds it, for the next run's message; the lock itself is the flock.
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "command": self.command, "started": self.started}).encode())
            os.fsync(fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                os.close(fd)
                raise _disk_error(exc, self.path) from None
            # A full disk cannot say who holds the lock, but the lock is held: go on.
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> WorkspaceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(path: Path) -> dict | None:
    """Who holds, or last held without letting go, the workspace lock: its pid, command, start, and `alive`.

    A run that ends, however it ends short of being killed, empties the file as it lets go;
    a file still naming a process whose lock is free therefore names a run that was killed
    (SIGKILL, a power cut, the machine's out-of-memory killer) before it could finish.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"null")
        if not isinstance(info, dict) or "pid" not in info:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            alive = False
        except BlockingIOError:
            alive = True
        return {**info, "alive": alive}
    except (ValueError, OSError):
        return None
    finally:
        os.close(fd)


def _disk_error(exc: OSError, path: Path) -> MailerError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"The disk is full, so the workspace lock {path.name} could not be made; nothing was done.",
                        hint="Free some space and run it again.")
    return StoreError(f"The workspace lock {path} cannot be taken: {exc.strerror}; nothing was done.")


def _describe(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"process {info['pid']}, `{info['command']}`, started {info['started']}"
    except (ValueError, KeyError, OSError):
        return "a process that has not said who it is yet"
