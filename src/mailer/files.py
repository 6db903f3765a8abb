"""Writing files so that they are either whole or absent, and private from the start."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import InputError, MailerError


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parent(path: Path) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"Cannot write {path}: the folder {parent} does not exist.", hint="Create it first, or choose another path.")
    return parent


@contextmanager
def atomic_writer(path: str | os.PathLike, *, mode: int = 0o600, encoding: str | None = "utf-8",
                  newline: str | None = None, exclusive: bool = False) -> Iterator[IO]:
    """Write `path` through a temporary file beside it, synced and renamed into place on success.

    An error (a full disk, Ctrl-C) leaves the old file, or none, never half a file. With
    `exclusive`, an existing file is never replaced (FileExistsError), even by a race.
    The file is created with `mode` (0600: patients' addresses, keys) before a byte is written.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the name of a file to write.")
    if path.exists() and not path.is_file():
        # A device or a pipe (/dev/null, /dev/stdout, a FIFO): written to, never replaced.
        with open(path, "w" if encoding else "wb", encoding=encoding, newline=newline) as special:
            yield special
        return
    parent = _parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        os.fchmod(fd, mode)
        fh = os.fdopen(fd, "w" if encoding else "wb", encoding=encoding, newline=newline)
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if the file appeared meanwhile: nobody's file is replaced
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
        _fsync_dir(parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_atomic(path: str | os.PathLike, data: bytes | str, *, mode: int = 0o600, exclusive: bool = False) -> None:
    """`data` into `path`, whole or not at all (see atomic_writer)."""
    encoding = "utf-8" if isinstance(data, str) else None
    with atomic_writer(path, mode=mode, encoding=encoding, exclusive=exclusive) as fh:
        fh.write(data)


def private_dir(path: str | os.PathLike) -> Path:
    """A directory only its owner can enter (0700), made with its parents when missing."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def read_head(path: str | os.PathLike, limit: int, error: type[MailerError], *, what: str, folder_hint: str) -> bytes:
    """At most `limit` bytes of a file the user named ("-": standard input), or one sentence as `error`.

    What tells what a file is comes first; reading no further keeps /dev/zero or a
    200 MB attachment from filling the memory.
    """
    try:
        if str(path) == "-":
            return sys.stdin.buffer.read(limit)
        with open(path, "rb") as fh:
            return fh.read(limit)
    except FileNotFoundError:
        raise error(f"There is no {what} {path}.") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder; {folder_hint}.") from None
    except OSError as exc:
        raise error(f"Cannot read {path}: {exc.strerror}.") from None
