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
from .errors import ConfigError, StoreError
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


def open_list(ws: Workspace) -> tuple[Store, bytes]:
    """The workspace's database and key, checked to belong together.

    A new workspace gets both. Refused (exit 2): a key without its database (deleted,
    or left empty by a full disk), a database that has been used without its key, a key
    that is empty or short, a key that belongs to another database, a damaged database.
    """
    db_path, key_path = ws.db_path, ws.secret_path
    key = read_secret(key_path)
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
    old_db = ws.db_path.with_name(f"{ws.db_path.name}.old-{stamp}")
    renames = [(ws.db_path, old_db), (ws.secret_path, ws.secret_path.with_name(f"{ws.secret_path.name}.old-{stamp}"))]
    # SQLite finds a database's WAL by its name: the WAL moves with it, or its last commits are lost.
    renames += [(Path(f"{ws.db_path}{s}"), Path(f"{old_db}{s}")) for s in ("-wal", "-shm")]
    for path, target in renames:
        if path.exists():
            os.replace(path, target)
            moved.append(target)
    return moved
