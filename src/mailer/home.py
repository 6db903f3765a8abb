"""The workspace's two irreplaceable files, mailer.db and secret.key, opened together.

The suppression list (keyed hashes of erased addresses) and every unsubscribe link
depend on both. So neither is ever created beside the other one: a lost key or a lost
database is refused with a sentence saying how to restore it, and only
`mailer init --new-list` starts an empty list (with a new key), keeping the old files.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .config import Workspace
from .errors import ConfigError, InputError, StoreError
from .files import write_atomic
from .store import Store

KEY_BYTES = 32
RESTORE = "Restore mailer.db and secret.key together from your backup (they only work as a pair)."


def read_secret(path: Path) -> bytes | None:
    """The key in secret.key, or None when there is no such file; ConfigError when it is unusable."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}).", hint=RESTORE) from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{path} is damaged (it is not a key); restore it from your backup.", hint=RESTORE) from None
    if len(key) < KEY_BYTES:
        raise ConfigError(
            f"{path} is empty or cut short ({len(key)} of {KEY_BYTES} bytes), so it cannot be trusted; "
            "restore it from your backup.",
            hint=RESTORE,
        )
    return key


def _new_secret(path: Path) -> bytes:
    """A new random key, written whole or not at all (never over an existing file)."""
    key = secrets.token_bytes(KEY_BYTES)
    try:
        write_atomic(path, key.hex() + "\n", exclusive=True)
    except FileExistsError:  # another process made it first: use theirs
        existing = read_secret(path)
        assert existing is not None
        return existing
    return key


def _database_present(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _used(ws: Workspace) -> str:
    """What shows that this workspace has held a list before ('' when nothing does)."""
    log = ws.logs_dir / "mailer.log"
    if log.is_file() and log.stat().st_size:
        return f"its run log {log}"
    if any(ws.home.glob(f"{ws.db_path.name}.old-*")):
        return "an earlier list kept beside it"
    if ws.outbox_dir.is_dir() and any(ws.outbox_dir.iterdir()):
        return f"dry-run messages in {ws.outbox_dir}"
    return ""


def open_list(ws: Workspace, *, create: bool = False, fresh: bool = False) -> tuple[Store, bytes]:
    """The workspace's database and key, checked to belong together.

    `mailer init` (create=True) makes both for a new workspace; every other command needs
    them. Refused (exit 2): a key without its database (deleted, or left empty by a full
    disk), a database that has been used without its key, both gone from a workspace
    that was used, a key that is empty or short, a key of another database, a damaged
    database. `fresh` is `init --new-list`, which has just put the old pair aside.
    """
    for folder, keeps in ((ws.logs_dir, "its run log"), (ws.outbox_dir, "dry-run messages")):
        if folder.exists() and not folder.is_dir():
            raise StoreError(
                f"{folder} is a file, not a folder; mailer keeps {keeps} there.",
                hint=f"Move the file away (mv {folder} {folder}.old) and run the command again.",
            )
    db_path, key_path = ws.db_path, ws.secret_path
    key = read_secret(key_path)
    if key is None and not _database_present(db_path):
        used = "" if fresh else _used(ws)
        if used:
            raise StoreError(
                f"mailer.db and secret.key are both missing from {ws.home}, which has held a list ({used}); "
                "mailer will not start a new one silently.",
                hint=f"{RESTORE} To start an empty list on purpose: `mailer init --new-list`.",
            )
        if not create:
            raise StoreError(f"There is no list in {ws.home} yet.", hint="Run `mailer init` first.")
    if key is not None and not _database_present(db_path):
        state = "empty" if db_path.exists() else "missing"
        raise StoreError(
            f"mailer.db is {state} in {ws.home} but secret.key is there: the list (subscribers, "
            "unsubscribes, erasures) is gone, and mailer will not start a new one silently.",
            hint=f"{RESTORE} To start an empty list on purpose: `mailer init --new-list`.",
        )
    store = Store.open(db_path)
    try:
        if key is None:
            if not store.is_new():
                raise StoreError(
                    f"secret.key is missing from {ws.home}; restore it from your backup.",
                    hint="Without it, unsubscribe links and erased addresses cannot be recognised; "
                    "mailer will not make a new one for a list that has been used.",
                )
            key = _new_secret(key_path)
        store.check_secret(key)
    except BaseException:
        store.close()
        raise
    return store, key


def refuse_workspace_file(ws: Workspace, path: str | os.PathLike, option: str) -> None:
    """InputError when an output file (--rejects, export -o, preview -o) would replace one of the
    workspace's own files: the list, the key, the settings, the lock, the log or cron.env."""
    own = [ws.db_path, Path(f"{ws.db_path}-wal"), Path(f"{ws.db_path}-shm"), ws.secret_path, ws.config_path,
           ws.lock_path, ws.home / "cron.env"]
    target = Path(path).expanduser().resolve()
    logs = ws.logs_dir.resolve()
    if target in {p.resolve() for p in own} or target.parent == logs:
        raise InputError(
            f"{option} {path} is one of the workspace's own files ({target.name}); writing there would destroy it.",
            hint="Give a file outside the workspace, e.g. ~/Desktop/backup.csv.",
        )


def forget_files(ws: Workspace, email: str) -> int:
    """Erasure, on disk: the dry-run messages (outbox/*/<n>-<address>.eml) written for this address.

    Compared case-insensitively, with the domain as written and as its A-label.
    """
    from .transport import envelope_address

    names = {email.lower(), envelope_address(email)[0].lower()}
    removed = 0
    if not ws.outbox_dir.is_dir():
        return 0
    for path in ws.outbox_dir.glob("*/*.eml"):
        stem = path.name[:-4].split("-", 1)[-1].lower()
        if stem in names or any(stem == n.replace("/", "_") for n in names):
            path.unlink()
            removed += 1
    return removed


def start_new_list(ws: Workspace, stamp: str) -> list[Path]:
    """`mailer init --new-list`: put the old mailer.db and secret.key aside (renamed, never deleted).

    Returns the new names of what was put aside; the next open_list makes a fresh pair.
    """
    moved = []
    n = 1
    while any(ws.home.glob(f"*.old-{stamp}*")):  # never over an earlier backup of the same second
        n += 1
        stamp = f"{stamp.split('.')[0]}.{n}"
    old_db = ws.db_path.with_name(f"{ws.db_path.name}.old-{stamp}")
    renames = [(ws.db_path, old_db), (ws.secret_path, ws.secret_path.with_name(f"{ws.secret_path.name}.old-{stamp}"))]
    # SQLite finds a database's WAL by its name: the WAL moves with it, or its last commits are lost.
    renames += [(Path(f"{ws.db_path}{s}"), Path(f"{old_db}{s}")) for s in ("-wal", "-shm")]
    for path, target in renames:
        if path.exists():
            os.replace(path, target)
            moved.append(target)
    return moved
