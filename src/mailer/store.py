"""The SQLite store: the only module that speaks SQL."""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from .errors import NotFound, StoreError
from .migrations import MIGRATIONS
from .models import DELIVERY_STATUSES, Campaign, Delivery, ImportSummary, Reject, Subscriber

_SECRET_CHECK = b"mailer: this secret belongs to this database"
SUBSCRIBER_COLUMNS = (
    "id, email, email_key, email_entered, first_name, last_name, status, lists, tags, source, "
    "optin_time, optin_ip, created_at, updated_at, unsubscribed_at, unsubscribed_reason"
)

CAMPAIGN_COLUMNS = (
    "id, key, name, content_path, content_hash, content, templates, template, subject, list_name, tags, "
    "status, status_reason, scheduled_at, created_at, started_at, finished_at"
)
DELIVERY_COLUMNS = (
    "id, campaign_id, subscriber_id, seq, email, status, attempts, reply, message_id, updated_at, "
    "attempted_at, sent_at"
)

_INSERT_SUBSCRIBER = (
    "INSERT INTO subscribers (email, email_key, email_entered, first_name, last_name, status, lists, tags, "
    "source, optin_time, optin_ip, created_at, updated_at, unsubscribed_at, unsubscribed_reason) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def address_hash(secret: bytes, email_key: str) -> str:
    """The keyed hash that is all an erased person leaves behind."""
    return hmac.new(secret, email_key.encode("utf-8"), hashlib.sha256).hexdigest()


def _pack(names: Iterable[str]) -> str:
    return "," + ",".join(names) + ("," if names else "")


def _unpack(packed: str) -> tuple[str, ...]:
    return tuple(p for p in packed.split(",") if p)


def _row_to_subscriber(row: sqlite3.Row | tuple) -> Subscriber:
    (id_, email, key, entered, first, last, status, lists, tags, source,
     optin_time, optin_ip, created, updated, unsub_at, unsub_reason) = row
    return Subscriber(
        id=id_, email=email, email_key=key, email_entered=entered, first_name=first, last_name=last,
        status=status, lists=_unpack(lists), tags=_unpack(tags), source=source,
        optin_time=optin_time, optin_ip=optin_ip, created_at=created, updated_at=updated,
        unsubscribed_at=unsub_at, unsubscribed_reason=unsub_reason,
    )


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


def _row_to_campaign(row: tuple) -> Campaign:
    values = list(row)
    values[10] = _unpack(values[10])
    return Campaign(*values)


class Store:
    """One SQLite file in WAL mode; every change goes through a transaction."""

    def __init__(self, conn: sqlite3.Connection, path: str):
        self.conn = conn
        self.path = path

    # -- opening --------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, *, create: bool = True) -> "Store":
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
        except sqlite3.DatabaseError as exc:
            conn.close()
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise StoreError(f"{path} is not a mailer database (or it is damaged).") from None
            raise StoreError(f"Cannot open the database {path}: {exc}.") from None
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def memory(cls) -> "Store":
        """An empty database in memory, for analysis that must write nothing."""
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        store = cls(conn, ":memory:")
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
        return self.conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]

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

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self, commit: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (or when commit is False)."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        if commit:
            c.execute("COMMIT")
        else:
            c.execute("ROLLBACK")

    # -- subscribers ----------------------------------------------------------------

    def get(self, email_key: str) -> Subscriber | None:
        row = self.conn.execute(
            f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE email_key = ?", (email_key,)
        ).fetchone()
        return _row_to_subscriber(row) if row else None

    def get_by_id(self, subscriber_id: int) -> Subscriber | None:
        row = self.conn.execute(
            f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE id = ?", (subscriber_id,)
        ).fetchone()
        return _row_to_subscriber(row) if row else None

    def require(self, email_key: str) -> Subscriber:
        sub = self.get(email_key)
        if sub is None:
            raise NotFound(f"{email_key} is not on the list.", hint="See `mailer subscribers list --search`.")
        return sub

    def is_erased(self, secret: bytes, email_key: str) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM suppressions WHERE hash = ?", (address_hash(secret, email_key),)
            ).fetchone()
            is not None
        )

    def _has_suppressions(self) -> bool:
        return self.conn.execute("SELECT 1 FROM suppressions LIMIT 1").fetchone() is not None

    @staticmethod
    def _insert_values(s: Subscriber, now: str) -> tuple:
        return (
            s.email, s.email_key, s.email_entered, s.first_name, s.last_name, s.status,
            _pack(s.lists), _pack(s.tags), s.source, s.optin_time, s.optin_ip,
            s.created_at or now, s.updated_at or s.created_at or now,
            s.unsubscribed_at or (now if s.status != "active" else ""), s.unsubscribed_reason,
        )

    def _insert(self, s: Subscriber, now: str) -> None:
        self.conn.execute(_INSERT_SUBSCRIBER, self._insert_values(s, now))

    def merge(self, s: Subscriber, secret: bytes, now: str, *, check_erased: bool = True) -> str:
        """Add or update one subscriber without ever bringing a suppressed address back.

        Returns what happened: 'added', 'updated', 'unchanged' or 'suppressed'. Names are
        updated when the new ones are not empty; lists and tags are joined; the original
        consent facts (source, opt-in time and IP) are kept and only filled in where empty.
        """
        if check_erased and self.is_erased(secret, s.email_key):
            return "suppressed"
        old = self.get(s.email_key)
        if old is None:
            self._insert(s, now)
            return "added"
        return self._update(old, s, now)

    def _update(self, old: Subscriber, s: Subscriber, now: str) -> str:
        if old.status != "active":
            return "suppressed"
        new = {
            "first_name": s.first_name or old.first_name,
            "last_name": s.last_name or old.last_name,
            "lists": old.lists + tuple(x for x in s.lists if x not in old.lists),
            "tags": old.tags + tuple(x for x in s.tags if x not in old.tags),
            "source": old.source or s.source,
            "optin_time": old.optin_time or s.optin_time,
            "optin_ip": old.optin_ip or s.optin_ip,
            "status": s.status,
            "unsubscribed_at": (s.unsubscribed_at or now) if s.status != "active" else "",
            "unsubscribed_reason": s.unsubscribed_reason if s.status != "active" else "",
        }
        if all(getattr(old, k) == v for k, v in new.items()):
            return "unchanged"
        new["lists"] = _pack(new["lists"])
        new["tags"] = _pack(new["tags"])
        sets = ", ".join(f"{k} = ?" for k in new)
        self.conn.execute(
            f"UPDATE subscribers SET {sets}, updated_at = ? WHERE id = ?", (*new.values(), now, old.id)
        )
        return "updated"

    def import_subscribers(
        self,
        records: Iterable[Subscriber | Reject],
        secret: bytes,
        now: str,
        *,
        commit: bool = True,
        on_reject=None,
        chunk: int = 500,
    ) -> ImportSummary:
        """Store a stream of validated rows in one transaction: all of it, or (on any error) none.

        Rows are taken in chunks (a few queries per chunk instead of per row); the first
        occurrence of an address in the file wins and later ones count as duplicates.
        With commit=False the same work is done and then rolled back: a dry run that
        reports exactly what an import would do.
        """
        summary = ImportSummary()
        c = self.conn
        # Addresses of people who were already stored and appear in this file; people
        # added by this import are recognised by their id instead (no write per row).
        c.execute("CREATE TEMP TABLE IF NOT EXISTS import_seen (email_key TEXT PRIMARY KEY) WITHOUT ROWID")
        c.execute("DELETE FROM temp.import_seen")
        counters = {"added": 0, "updated": 0, "unchanged": 0, "suppressed": 0}
        with self.transaction(commit=commit):
            check_erased = self._has_suppressions()
            first_new_id = c.execute("SELECT coalesce(max(id), 0) + 1 FROM subscribers").fetchone()[0]
            batch: list[Subscriber] = []
            for record in records:
                summary.read += 1
                if isinstance(record, Reject):
                    summary.invalid += 1
                    if on_reject is not None:
                        on_reject(record)
                    # Kept for the summary without the whole row: memory stays small on big files.
                    summary.rejects.append(Reject(record.line, record.value[:200], record.reason))
                    continue
                batch.append(record)
                if len(batch) >= chunk:
                    self._import_chunk(batch, secret, now, check_erased, first_new_id, counters, summary)
                    batch = []
            if batch:
                self._import_chunk(batch, secret, now, check_erased, first_new_id, counters, summary)
        c.execute("DELETE FROM temp.import_seen")
        summary.added = counters["added"]
        summary.updated = counters["updated"]
        summary.unchanged = counters["unchanged"]
        summary.suppressed = counters["suppressed"]
        return summary

    def _import_chunk(self, batch: list[Subscriber], secret: bytes, now: str, check_erased: bool,
                      first_new_id: int, counters: dict[str, int], summary: ImportSummary) -> None:
        c = self.conn
        keys = list(dict.fromkeys(s.email_key for s in batch))
        marks = ",".join("?" * len(keys))
        existing = {
            r[2]: _row_to_subscriber(r)
            for r in c.execute(f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE email_key IN ({marks})", keys)
        }
        # Seen earlier in this file: added by this import, or an old one already met.
        seen = {k for k, s in existing.items() if s.id >= first_new_id}
        old_keys = [k for k in existing if k not in seen]
        if old_keys:
            old_marks = ",".join("?" * len(old_keys))
            seen |= {r[0] for r in c.execute(
                f"SELECT email_key FROM temp.import_seen WHERE email_key IN ({old_marks})", old_keys)}
            c.executemany("INSERT OR IGNORE INTO temp.import_seen (email_key) VALUES (?)", ((k,) for k in old_keys))
        erased: set[str] = set()
        if check_erased:
            hashes = {address_hash(secret, k): k for k in keys}
            erased = {
                hashes[r[0]]
                for r in c.execute(f"SELECT hash FROM suppressions WHERE hash IN ({marks})", list(hashes))
            }
        new_rows = []
        for s in batch:
            key = s.email_key
            if key in seen:
                summary.duplicates += 1
                continue
            seen.add(key)
            if key in erased:
                counters["suppressed"] += 1
            elif key in existing:
                counters[self._update(existing[key], s, now)] += 1
            else:
                new_rows.append(self._insert_values(s, now))
                counters["added"] += 1
        c.executemany(_INSERT_SUBSCRIBER, new_rows)

    def add(self, s: Subscriber, secret: bytes, now: str) -> str:
        """`subscribers add`: the same rules as an import of one row."""
        with self.transaction():
            return self.merge(s, secret, now)

    def unsubscribe(self, email_key: str, reason: str, now: str, status: str = "unsubscribed") -> bool:
        """Mark a subscriber unsubscribed (or bounced); False if they already were."""
        with self.transaction():
            sub = self.require(email_key)
            if sub.status == status:
                return False
            if sub.status == "unsubscribed" and status == "bounced":
                return False  # an unsubscribe is the stronger fact; keep it
            self.conn.execute(
                "UPDATE subscribers SET status = ?, unsubscribed_at = ?, unsubscribed_reason = ?, "
                "updated_at = ? WHERE id = ?",
                (status, now, reason, now, sub.id),
            )
            return True

    def resubscribe(self, email_key: str, now: str) -> bool:
        """The only way back to active; False if the subscriber already was."""
        with self.transaction():
            sub = self.require(email_key)
            if sub.status == "active":
                return False
            self.conn.execute(
                "UPDATE subscribers SET status = 'active', unsubscribed_at = '', unsubscribed_reason = '', "
                "updated_at = ? WHERE id = ?",
                (now, sub.id),
            )
            return True

    def erase(self, email_key: str, secret: bytes, reason: str, now: str) -> bool:
        """Delete every trace of a person but a keyed hash that keeps them from coming back.

        Returns True if they were on the list (False: only the suppression was recorded).
        """
        with self.transaction():
            sub = self.get(email_key)
            if sub is not None:
                self._erase_personal_data(sub.id)
                self.conn.execute("DELETE FROM subscribers WHERE id = ?", (sub.id,))
            self.conn.execute(
                "INSERT OR IGNORE INTO suppressions (hash, reason, created_at) VALUES (?, ?, ?)",
                (address_hash(secret, email_key), reason, now),
            )
        if self.path != ":memory:":
            # Old copies of the erased pages live on in the WAL until it is checkpointed.
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return sub is not None

    def _erase_personal_data(self, subscriber_id: int) -> None:
        """Every other table that names the person (a later migration adding one adds it here)."""
        self.conn.execute(
            "UPDATE deliveries SET email = '', reply = '', subscriber_id = NULL WHERE subscriber_id = ?",
            (subscriber_id,),
        )

    def subscribers(
        self,
        *,
        status: str | None = None,
        list_name: str | None = None,
        tags: Iterable[str] = (),
        search: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Iterator[Subscriber]:
        """Stream subscribers in the order they were added, filtered."""
        where, params = self._filters(status, list_name, tags, search)
        sql = f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers{where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        for row in self.conn.execute(sql, params):
            yield _row_to_subscriber(row)

    def count(self, *, status=None, list_name=None, tags=(), search=None) -> int:
        where, params = self._filters(status, list_name, tags, search)
        return self.conn.execute(f"SELECT count(*) FROM subscribers{where}", params).fetchone()[0]

    @staticmethod
    def _filters(status, list_name, tags, search) -> tuple[str, list]:
        clauses, params = [], []
        if status and status != "all":
            clauses.append("status = ?")
            params.append(status)
        if list_name:
            clauses.append("instr(lists, ?) > 0")
            params.append(f",{list_name},")
        for tag in tags:
            clauses.append("instr(tags, ?) > 0")
            params.append(f",{tag},")
        if search:
            clauses.append(
                "(instr(lower(email), ?) > 0 OR instr(lower(first_name || ' ' || last_name), ?) > 0)"
            )
            params += [search.lower(), search.lower()]
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def status_counts(self) -> dict[str, int]:
        counts = {"active": 0, "unsubscribed": 0, "bounced": 0}
        for status, n in self.conn.execute("SELECT status, count(*) FROM subscribers GROUP BY status"):
            counts[status] = n
        counts["erased"] = self.conn.execute("SELECT count(*) FROM suppressions").fetchone()[0]
        return counts

    # -- campaigns ------------------------------------------------------------------

    def create_campaign(
        self, *, key: str, name: str, content_path: str, content_hash: str, content: str, templates: str,
        template: str, subject: str, list_name: str, tags: Iterable[str], scheduled_at: str, now: str,
    ) -> Campaign:
        """Store a new campaign with its content and templates snapshot."""
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO campaigns (key, name, content_path, content_hash, content, templates, template, "
                "subject, list_name, tags, status, scheduled_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, name, content_path, content_hash, content, templates, template, subject, list_name,
                 _pack(tuple(tags)), "scheduled" if scheduled_at else "draft", scheduled_at, now),
            )
        return self.require_campaign(cur.lastrowid)

    def campaign(self, campaign_id: int) -> Campaign | None:
        row = self.conn.execute(f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
        return _row_to_campaign(row) if row else None

    def require_campaign(self, campaign_id: int) -> Campaign:
        c = self.campaign(campaign_id)
        if c is None:
            raise NotFound(f"There is no campaign {campaign_id}.", hint="See `mailer campaign list`.")
        return c

    def campaigns(self, *, statuses: Iterable[str] = (), content_path: str | None = None) -> list[Campaign]:
        clauses, params = [], []
        statuses = tuple(statuses)
        if statuses:
            clauses.append(f"status IN ({','.join('?' * len(statuses))})")
            params += statuses
        if content_path is not None:
            clauses.append("content_path = ?")
            params.append(content_path)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        return [
            _row_to_campaign(r)
            for r in self.conn.execute(f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns{where} ORDER BY id", params)
        ]

    def update_campaign(self, campaign_id: int, **fields: str) -> Campaign:
        """Change status, status_reason, scheduled_at, started_at or finished_at."""
        allowed = {"status", "status_reason", "scheduled_at", "started_at", "finished_at"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"cannot update {set(fields) - allowed}")
        with self.transaction():
            sets = ", ".join(f"{k} = ?" for k in fields)
            self.conn.execute(f"UPDATE campaigns SET {sets} WHERE id = ?", (*fields.values(), campaign_id))
        return self.require_campaign(campaign_id)

    # -- deliveries -----------------------------------------------------------------

    def audience_count(self, list_name: str, tags: Iterable[str]) -> int:
        return self.count(status="active", list_name=list_name, tags=tags)

    def fix_audience(self, campaign: Campaign, now: str) -> int:
        """Start sending: one pending delivery per active subscriber of the audience, once.

        Done in the transaction that marks the campaign 'sending', so the audience is fixed
        exactly once however many runs start at the same moment.
        """
        with self.transaction():
            row = self.conn.execute("SELECT status FROM campaigns WHERE id = ?", (campaign.id,)).fetchone()
            if row[0] in ("draft", "scheduled"):
                where, params = self._filters("active", campaign.list_name, campaign.tags, None)
                self.conn.execute(
                    "INSERT INTO deliveries (campaign_id, subscriber_id, seq, email, updated_at) "
                    f"SELECT ?, id, row_number() OVER (ORDER BY id), email, ? FROM subscribers{where} ORDER BY id",
                    (campaign.id, now, *params),
                )
                self.conn.execute(
                    "UPDATE campaigns SET status = 'sending', started_at = ?, status_reason = '' WHERE id = ?",
                    (now, campaign.id),
                )
            return self.conn.execute(
                "SELECT count(*) FROM deliveries WHERE campaign_id = ?", (campaign.id,)
            ).fetchone()[0]

    def mark_interrupted(self, now: str) -> int:
        """Rows left in 'sending' by a run that died: their fate is unknown, so they are not resent.

        Only call this while holding the workspace lock (no other run can be sending).
        """
        with self.transaction():
            return self.conn.execute(
                "UPDATE deliveries SET status = 'unknown', updated_at = ?, "
                "reply = 'the run stopped while this message was being handed to the server' "
                "WHERE status = 'sending'",
                (now,),
            ).rowcount

    def requeue(self, campaign_id: int, status: str, now: str) -> int:
        """Put failed (or unknown) deliveries back to pending: --retry-failed, --retry-unknown."""
        with self.transaction():
            return self.conn.execute(
                "UPDATE deliveries SET status = 'pending', updated_at = ? WHERE campaign_id = ? AND status = ?",
                (now, campaign_id, status),
            ).rowcount

    def pending_deliveries(self, campaign_id: int, limit: int, after_seq: int = 0) -> list[Delivery]:
        rows = self.conn.execute(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE campaign_id = ? AND status = 'pending' "
            "AND seq > ? ORDER BY seq LIMIT ?",
            (campaign_id, after_seq, limit),
        ).fetchall()
        return [Delivery(*r) for r in rows]

    def deliveries(self, campaign_id: int, statuses: Iterable[str] = ()) -> Iterator[Delivery]:
        statuses = tuple(statuses)
        sql = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE campaign_id = ?"
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
        for r in self.conn.execute(sql + " ORDER BY seq", (campaign_id, *statuses)):
            yield Delivery(*r)

    def mark_sending(self, delivery_id: int, message_id: str, now: str, *, finish: tuple | None = None) -> None:
        """Commit that a message is about to be handed over (and, in the same commit, the previous one's fate)."""
        with self.transaction():
            if finish is not None:
                self._record(*finish)
            self.conn.execute(
                "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, message_id = ?, "
                "updated_at = ?, attempted_at = ? WHERE id = ?",
                (message_id, now, now, delivery_id),
            )

    def count_attempt(self, delivery_id: int, now: str) -> None:
        """One more try of a message in 'sending' (after a temporary refusal)."""
        with self.transaction():
            self.conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, attempted_at = ?, updated_at = ? WHERE id = ?",
                (now, now, delivery_id),
            )

    def record(self, delivery_id: int, status: str, reply: str, now: str, *, bounce_subscriber: bool = False) -> None:
        """Commit what the server answered for one delivery."""
        with self.transaction():
            self._record(delivery_id, status, reply, now, bounce_subscriber)

    def _record(self, delivery_id: int, status: str, reply: str, now: str, bounce_subscriber: bool = False) -> None:
        self.conn.execute(
            "UPDATE deliveries SET status = ?, reply = ?, updated_at = ?, "
            "sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE id = ?",
            (status, reply, now, status, now, delivery_id),
        )
        if bounce_subscriber:
            self.conn.execute(
                "UPDATE subscribers SET status = 'bounced', unsubscribed_at = ?, unsubscribed_reason = ?, "
                "updated_at = ? WHERE status = 'active' AND id = "
                "(SELECT subscriber_id FROM deliveries WHERE id = ?)",
                (now, reply[:200], now, delivery_id),
            )

    def delivery_counts(self, campaign_id: int) -> dict[str, int]:
        counts = dict.fromkeys(DELIVERY_STATUSES, 0)
        for status, n in self.conn.execute(
            "SELECT status, count(*) FROM deliveries WHERE campaign_id = ? GROUP BY status", (campaign_id,)
        ):
            counts[status] = n
        return counts

    def attempted_since(self, since: str) -> int:
        """Messages handed to a server since a time (UTC ISO): what a daily quota counts."""
        return self.conn.execute(
            "SELECT count(*) FROM deliveries WHERE attempted_at >= ?", (since,)
        ).fetchone()[0]

    def update_snapshot(self, campaign: Campaign) -> None:
        """Take the content and templates again (only before the campaign has started)."""
        with self.transaction():
            self.conn.execute(
                "UPDATE campaigns SET content = ?, content_hash = ?, templates = ?, subject = ?, template = ? "
                "WHERE id = ? AND status IN ('draft', 'scheduled')",
                (campaign.content, campaign.content_hash, campaign.templates, campaign.subject,
                 campaign.template, campaign.id),
            )

    def subscribers_by_id(self, ids: list[int]) -> dict[int, Subscriber]:
        """Subscribers of a batch, as they stand now, in one query."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE id IN ({marks})", ids)
        return {r[0]: _row_to_subscriber(r) for r in rows}
