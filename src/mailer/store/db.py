"""The SQLite connection: opening, transactions, migrations, and SQLite's errors in our words."""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import Busy, Corrupt, DiskFull, MailerError, StoreError
from .migrations import MIGRATIONS

if TYPE_CHECKING:
    from .campaigns import CampaignStore
    from .deliveries import DeliveryStore
    from .events import EventStore
    from .subscribers import SubscriberStore

_SECRET_CHECK = b"mailer: this secret belongs to this database"
MEMORY = ":memory:"


def pack(names: Iterable[str]) -> str:
    """`('news', 'specials')` -> `',news,specials,'`: instr(lists, ',news,') finds a list."""
    names = tuple(names)
    return "," + ",".join(names) + ("," if names else "")


def unpack(packed: str) -> tuple[str, ...]:
    return tuple(p for p in packed.split(",") if p)


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, one by one (executescript would commit our transaction)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer
            buffer = ""
    if buffer.strip() and sqlite3.complete_statement(buffer + ";"):
        yield buffer


# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 5, 6, 10, 11, 13, 26
_SQLITE_READONLY, _SQLITE_CANTOPEN = 8, 14


def translate_error(exc: sqlite3.Error, path: str | os.PathLike = "mailer.db") -> MailerError:
    """An SQLite error as one of our errors, with a sentence a person can act on.

    Only here is SQLite's own wording looked at; everything above sees DiskFull, Busy,
    Corrupt or StoreError.
    """
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc).lower()
    name = Path(path).name
    if code == _SQLITE_FULL or "disk is full" in text:
        return DiskFull(
            f"The disk is full, so {name} could not be written.",
            hint="Free some space and run the command again.",
        )
    if code == _SQLITE_IOERR or "disk i/o" in text:
        return DiskFull(
            f"The disk holding {name} failed to write (an I/O error; it may be full or failing).",
            hint="Check the disk (df -h), free some space, and run the command again.",
        )
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in text or "busy" in text:
        return Busy(
            f"{name} stayed busy for 30 seconds (another mailer is writing to it).",
            hint="Run it again when the other one has finished.",
        )
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in text or "not a database" in text:
        return Corrupt(
            f"{path} is damaged or is not a mailer database.",
            hint="Restore mailer.db and secret.key together from your backup.",
        )
    if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN) or "readonly" in text or "unable to open" in text:
        folder = Path(path).parent
        if not _writable(folder) or (Path(path).exists() and not _writable(Path(path))):
            return StoreError(
                f"The workspace {folder} (or {name} in it) cannot be written, and mailer writes beside "
                f"{name} even to read it (its journal).",
                hint=f"Make it writable (chmod u+w, or remount), or copy it somewhere writable "
                f"(cp -a {folder} /tmp/copy) and use --home for a look.",
            )
    return StoreError(f"The database {name} failed: {exc}.", hint="Run again with --debug and report what it prints.")


def _writable(path: Path) -> bool:
    """Can this process write here? (os.access misses a read-only mount; statvfs tells it.)"""
    try:
        return os.access(path, os.W_OK) and not os.statvfs(path).f_flag & os.ST_RDONLY
    except OSError:
        return False


class Store:
    """One SQLite file in WAL mode; every change goes through a transaction.

    What it keeps is reached through `subscribers`, `campaigns` and `deliveries`; this
    class owns only the connection, transactions, migrations and the key check.
    """

    def __init__(self, conn: sqlite3.Connection, path: str):
        from .campaigns import CampaignStore
        from .deliveries import DeliveryStore
        from .events import EventStore
        from .mailbox import MailboxStore
        from .subscribers import SubscriberStore

        self.conn = conn
        self.path = path
        self._synced = True  # PRAGMA synchronous is FULL (every commit synced to disk)
        self._wal_sync: WalSync | None = None
        conn.row_factory = sqlite3.Row
        self.subscribers: SubscriberStore = SubscriberStore(self)
        self.campaigns: CampaignStore = CampaignStore(self)
        self.deliveries: DeliveryStore = DeliveryStore(self)
        self.mailbox: MailboxStore = MailboxStore(self)
        self.events: EventStore = EventStore(self)

    @property
    def in_memory(self) -> bool:
        """An analysis store that writes nothing to disk (validate, import --dry-run without a workspace)."""
        return self.path == MEMORY

    # -- opening --------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, *, create: bool = True) -> Store:
        """Open (and create, migrate) the database; refuse one newer than this code."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise StoreError(f"There is no database at {path}.", hint="Run `mailer init` first.")
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # Created 0600 before SQLite touches it: its WAL and SHM files copy this mode.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as exc:
                raise StoreError(f"Cannot create the database {path}: {exc.strerror}.") from None
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the database {path}: {exc}.") from None
        store = cls(conn, str(path))
        try:
            store._configure(wal=True)
            store._migrate()
        except sqlite3.Error as exc:
            conn.close()
            raise translate_error(exc, path) from None
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def memory(cls) -> Store:
        """An empty database in memory, for analysis that must write nothing."""
        conn = sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)
        store = cls(conn, MEMORY)
        store._configure(wal=False)
        store._migrate()
        return store

    def _configure(self, wal: bool) -> None:
        c = self.conn
        c.execute("PRAGMA busy_timeout = 30000")
        if wal:
            mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"The database {self.path} cannot use WAL mode (it says {mode}).")
        # FULL: a commit survives power loss, so a delivery marked 'sending' stays marked.
        c.execute("PRAGMA synchronous = FULL")
        c.execute("PRAGMA foreign_keys = ON")
        # Deleted rows are overwritten with zeros: an erased person's data must really go.
        c.execute("PRAGMA secure_delete = ON")

    def schema_version(self) -> int:
        row = self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_migrations'"
        ).fetchone()
        if row is None:
            return 0
        return int(self.conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])

    def _migrate(self) -> None:
        c = self.conn
        c.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        current = self.schema_version()
        if current > len(MIGRATIONS):
            raise StoreError(
                f"The database {self.path} was written by a newer mailer (schema {current}; "
                f"this mailer knows up to {len(MIGRATIONS)}).",
                hint="Upgrade mailer (pip install -U practice-mailer).",
            )
        for version, (name, script) in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            with self.transaction():
                # Looked at again under the write lock: two first runs at once (two cron
                # jobs on a new workspace) must not both apply the same migration.
                if self.schema_version() >= version:
                    continue
                for statement in _statements(script):
                    c.execute(statement)
                c.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) "
                    "VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
                    (version, name),
                )

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM schema_migrations ORDER BY version")]

    def is_new(self) -> bool:
        """Nothing was ever stored: no key fingerprint, no subscriber, no campaign."""
        c = self.conn
        return not any(
            c.execute(sql).fetchone()
            for sql in (
                "SELECT 1 FROM meta WHERE key = 'secret_check'",
                "SELECT 1 FROM subscribers LIMIT 1",
                "SELECT 1 FROM suppressions LIMIT 1",
                "SELECT 1 FROM campaigns LIMIT 1",
            )
        )

    def check_secret(self, secret: bytes) -> None:
        """Make sure secret.key is the one this database was used with (hashes depend on it)."""
        fingerprint = hmac.new(secret, _SECRET_CHECK, hashlib.sha256).hexdigest()[:32]
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'secret_check'").fetchone()
        if row is None:
            with self.transaction():
                self.conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('secret_check', ?)", (fingerprint,)
                )
            return
        if row[0] != fingerprint:
            raise StoreError(
                "secret.key does not belong to this mailer.db, so unsubscribe links and erased "
                "addresses could not be recognised.",
                hint="Put back the secret.key that was kept beside this mailer.db (restore it from your backup).",
            )

    def sync_soon(self) -> Callable[[], None]:
        """Start putting every commit made so far on disk, in the background.

        For commits made with `synced=False`: returns a wait() that returns once they are
        synced (at once if they already are). Unlike a synced commit, the disk sync holds
        no lock, so the connection goes on committing meanwhile.
        """
        if self.in_memory:
            return lambda: None
        if self._wal_sync is None:
            self._wal_sync = WalSync(Path(self.path))
        return self._wal_sync.request()

    def close(self) -> None:
        if self._wal_sync is not None:
            self._wal_sync.stop()
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def translate(self, exc: sqlite3.Error) -> MailerError:
        """`translate_error` for this database's file."""
        return translate_error(exc, self.path)

    @contextmanager
    def transaction(self, commit: bool = True, *, synced: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (or when commit is False).

        `synced=False` commits without waiting for the disk (WAL with synchronous NORMAL):
        the change survives the death of the process, not a power cut. Only the send
        engine's hand-over uses it, and the lifecycle says how a crash is read then.

        SQLite errors leave as DiskFull, Busy, Corrupt or StoreError. When SQLite has
        already rolled back by itself (a full disk does that), the failed ROLLBACK is not
        allowed to hide the error that caused it.
        """
        c = self.conn
        try:
            if synced != self._synced and not self.in_memory:
                c.execute("PRAGMA synchronous = " + ("FULL" if synced else "NORMAL"))
                self._synced = synced
            c.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc
        try:
            yield c
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, sqlite3.Error):
                raise self.translate(exc) from exc
            raise
        try:
            c.execute("COMMIT" if commit else "ROLLBACK")
        except sqlite3.Error as exc:
            self._rollback()
            raise self.translate(exc) from exc

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the first error is the one that matters


class WalSync:
    """fsync of the database's write-ahead log, in a thread of its own.

    In WAL mode a commit is frames appended to `<db>-wal`; with synchronous=NORMAL SQLite
    does not sync them, so they survive the death of the process but not a power cut.
    Syncing that file ourselves makes them as durable as a synchronous=FULL commit would,
    without holding SQLite's write lock during the sync (which would stall every other
    commit for its length). One sync covers every commit made before it starts, so the
    commits of several connections share it.
    """

    def __init__(self, db_path: Path):
        # Opened once and kept: SQLite holds no lock on this file (its locks are on the
        # database and the -shm file, which must never be opened and closed beside it).
        # It exists from the first commit until the last connection closes, and a
        # checkpoint truncates it in place, so this stays the file SQLite writes.
        self._fd = os.open(f"{db_path}-wal", os.O_RDWR if os.name == "nt" else os.O_RDONLY)
        self._changed = threading.Condition()
        self._requested = 0
        self._done = 0
        self._error: OSError | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="wal-sync", daemon=True)
        self._thread.start()

    def request(self) -> Callable[[], None]:
        with self._changed:
            self._requested += 1
            ticket = self._requested
            self._changed.notify_all()

        def wait() -> None:
            with self._changed:
                self._changed.wait_for(lambda: self._done >= ticket or self._error is not None)
                if self._done < ticket and self._error is not None:
                    raise DiskFull(
                        f"The disk holding the database failed to write ({self._error.strerror}).",
                        hint="Check the disk (df -h), free some space, and run the command again.",
                    )

        return wait

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._requested > self._done or self._stopping)
                if self._stopping and self._requested <= self._done:
                    return
                target = self._requested
            try:
                os.fsync(self._fd)
            except OSError as exc:
                with self._changed:
                    self._error = exc
                    self._changed.notify_all()
                return
            with self._changed:
                self._done = target
                self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout=10)
        os.close(self._fd)
