"""Subscribers and the suppression list: merge, import, unsubscribe, resubscribe, erase."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from ..errors import NotFound
from ..lifecycle import SubscriberStatus
from ..models import ImportSummary, Reject, Subscriber
from ..text import mask_addresses
from . import events as ev
from .db import pack, unpack

if TYPE_CHECKING:
    from .db import Store

COLUMNS = (
    "id, email, email_key, email_entered, first_name, last_name, status, lists, tags, source, "
    "optin_time, optin_ip, created_at, updated_at, unsubscribed_at, unsubscribed_reason, "
    "consent_method, consent_text, consent_version, consent_url, consent_user_agent, left_lists"
)
_INSERT = (
    "INSERT INTO subscribers (email, email_key, email_entered, first_name, last_name, status, lists, tags, "
    "source, optin_time, optin_ip, created_at, updated_at, unsubscribed_at, unsubscribed_reason, "
    "consent_method, consent_text, consent_version, consent_url, consent_user_agent, left_lists) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
ACTIVE = SubscriberStatus.ACTIVE
CONSENT_FIELDS = ("consent_method", "consent_text", "consent_version", "consent_url", "consent_user_agent")
# A person with none of these has no record of how they agreed to be mailed.
_NO_CONSENT = (
    "optin_time = '' AND optin_ip = '' AND consent_text = '' AND consent_url = '' AND consent_user_agent = ''"
)


def address_hash(secret: bytes, email_key: str) -> str:
    """The keyed hash that is all an erased person leaves behind."""
    return hmac.new(secret, email_key.encode("utf-8"), hashlib.sha256).hexdigest()


def subscriber_from_row(row: sqlite3.Row) -> Subscriber:
    """A stored row as a Subscriber, read by column name."""
    return Subscriber(
        id=row["id"], email=row["email"], email_key=row["email_key"], email_entered=row["email_entered"],
        first_name=row["first_name"], last_name=row["last_name"], status=SubscriberStatus(row["status"]),
        lists=unpack(row["lists"]), tags=unpack(row["tags"]), source=row["source"],
        optin_time=row["optin_time"], optin_ip=row["optin_ip"], created_at=row["created_at"],
        updated_at=row["updated_at"], unsubscribed_at=row["unsubscribed_at"],
        unsubscribed_reason=row["unsubscribed_reason"], consent_method=row["consent_method"],
        consent_text=row["consent_text"], consent_version=row["consent_version"], consent_url=row["consent_url"],
        consent_user_agent=row["consent_user_agent"], left_lists=unpack(row["left_lists"]),
    )


def consent_detail(s: Subscriber) -> str:
    """A consent record in one line, for the person's history."""
    parts = [s.consent_method or "consent"]
    if s.consent_version:
        parts.append(f"version {s.consent_version}")
    text = f"{' '.join(parts)}: {s.consent_text}" if s.consent_text else " ".join(parts)
    return text + (f" ({s.consent_url})" if s.consent_url else "")


def _added_detail(s: Subscriber) -> str:
    return f"on {', '.join(s.lists)}; source: {s.source}"


def filters(status: str | None, list_name: str | None, tags: Iterable[str], search: str | None) -> tuple[str, list]:
    """A WHERE clause (and its parameters) choosing subscribers: the audience rule of every query."""
    clauses: list[str] = []
    params: list = []
    if status and status != "all":
        clauses.append("status = ?")
        params.append(str(status))
    if list_name:
        clauses.append("instr(lists, ?) > 0")
        params.append(f",{list_name},")
    for tag in tags:
        clauses.append("instr(tags, ?) > 0")
        params.append(f",{tag},")
    if search:
        clauses.append("(instr(lower(email), ?) > 0 OR instr(lower(first_name || ' ' || last_name), ?) > 0)")
        params += [search.lower(), search.lower()]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class SubscriberStore:
    """The people on the list, and the keyed hashes of those erased."""

    def __init__(self, db: Store):
        self.db = db

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    # -- reading ----------------------------------------------------------------------

    def get(self, email_key: str) -> Subscriber | None:
        row = self.conn.execute(f"SELECT {COLUMNS} FROM subscribers WHERE email_key = ?", (email_key,)).fetchone()
        return subscriber_from_row(row) if row else None

    def get_by_id(self, subscriber_id: int) -> Subscriber | None:
        row = self.conn.execute(f"SELECT {COLUMNS} FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()
        return subscriber_from_row(row) if row else None

    def require(self, email_key: str) -> Subscriber:
        sub = self.get(email_key)
        if sub is None:
            raise NotFound(f"{email_key} is not on the list.", hint="See `mailer subscribers list --search`.")
        return sub

    def by_ids(self, ids: list[int]) -> dict[int, Subscriber]:
        """Subscribers of a batch, as they stand now, in one query."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(f"SELECT {COLUMNS} FROM subscribers WHERE id IN ({marks})", ids)
        return {r["id"]: subscriber_from_row(r) for r in rows}

    def stream(
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
        where, params = filters(status, list_name, tags, search)
        sql = f"SELECT {COLUMNS} FROM subscribers{where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        for row in self.conn.execute(sql, params):
            yield subscriber_from_row(row)

    def count(
        self, *, status: str | None = None, list_name: str | None = None, tags: Iterable[str] = (), search: str | None = None
    ) -> int:
        where, params = filters(status, list_name, tags, search)
        return int(self.conn.execute(f"SELECT count(*) FROM subscribers{where}", params).fetchone()[0])

    def audience_count(self, list_name: str, tags: Iterable[str]) -> int:
        """How many active subscribers a campaign to this list and these tags would reach now."""
        return self.count(status=ACTIVE, list_name=list_name, tags=tags)

    def audience_without_consent(self, list_name: str, tags: Iterable[str]) -> int:
        """How many of that audience have no consent fact at all (no time, IP, form or words)."""
        where, params = filters(ACTIVE, list_name, tags, None)
        sql = f"SELECT count(*) FROM subscribers{where} AND {_NO_CONSENT}"
        return int(self.conn.execute(sql, params).fetchone()[0])

    def list_names(self) -> set[str]:
        """Every list someone is (or was) on, as stored."""
        names: set[str] = set()
        for row in self.conn.execute("SELECT DISTINCT lists FROM subscribers"):
            names.update(unpack(row[0]))
        return names

    def status_counts(self) -> dict[str, int]:
        counts = dict.fromkeys((str(s) for s in SubscriberStatus), 0)
        for row in self.conn.execute("SELECT status, count(*) AS n FROM subscribers GROUP BY status"):
            counts[row["status"]] = row["n"]
        counts["erased"] = self.conn.execute("SELECT count(*) FROM suppressions").fetchone()[0]
        return counts

    def is_erased(self, secret: bytes, email_key: str) -> bool:
        sql = "SELECT 1 FROM suppressions WHERE hash = ?"
        return self.conn.execute(sql, (address_hash(secret, email_key),)).fetchone() is not None

    def _has_suppressions(self) -> bool:
        return self.conn.execute("SELECT 1 FROM suppressions LIMIT 1").fetchone() is not None

    # -- adding and merging -------------------------------------------------------------

    @staticmethod
    def _insert_values(s: Subscriber, now: str) -> tuple:
        return (
            s.email, s.email_key, s.email_entered, s.first_name, s.last_name, str(s.status),
            pack(s.lists), pack(s.tags), s.source, s.optin_time, s.optin_ip,
            s.created_at or now, s.updated_at or s.created_at or now,
            s.unsubscribed_at or (now if s.status != ACTIVE else ""), s.unsubscribed_reason,
            s.consent_method, s.consent_text, s.consent_version, s.consent_url, s.consent_user_agent,
            pack(s.left_lists),
        )

    def _insert(self, s: Subscriber, now: str) -> int:
        cur = self.conn.execute(_INSERT, self._insert_values(s, now))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def merge(self, s: Subscriber, secret: bytes, now: str, *, check_erased: bool = True) -> str:
        """Add or update one subscriber without ever bringing a suppressed address back.

        Returns what happened: 'added', 'updated', 'unchanged' or 'suppressed'. Names are
        updated when the new ones are not empty; lists and tags are joined (never a list
        the person left); the original consent facts (source, opt-in time and IP, the
        consent record) are kept and only filled in where empty. Call inside a transaction.
        """
        if check_erased and self.is_erased(secret, s.email_key):
            return "suppressed"
        old = self.get(s.email_key)
        if old is None:
            new_id = self._insert(s, now)
            self.db.events.add(new_id, ev.ADDED, now, detail=_added_detail(s))
            return "added"
        return self._update(old, s, now)

    def _update(self, old: Subscriber, s: Subscriber, now: str, *, rejoin: bool = False,
                new_consent: bool = False) -> str:
        """Merge s into the stored old. rejoin: a person asked for these lists again (even ones
        they left); new_consent: they agreed again, so this consent record replaces the old one
        and an unsubscribed or bounced person is active again."""
        if old.status != ACTIVE and not new_consent:
            return "suppressed"
        if rejoin:
            joined = tuple(x for x in s.lists if x not in old.lists)
            left = tuple(x for x in old.left_lists if x not in s.lists)
        else:
            joined = tuple(x for x in s.lists if x not in old.lists and x not in old.left_lists)
            left = old.left_lists
        lists = old.lists + joined
        if new_consent and old.status != ACTIVE:
            # Back after an unsubscribe or a bounce: on the lists they asked for now.
            lists, joined = s.lists, s.lists
            left = tuple(dict.fromkeys(x for x in old.lists + old.left_lists if x not in s.lists))
        consent = {k: getattr(old, k) for k in ("source", "optin_time", "optin_ip", *CONSENT_FIELDS)}
        if new_consent or (s.has_consent_facts and not old.has_consent_facts):
            consent.update({k: getattr(s, k) for k in ("optin_time", "optin_ip", *CONSENT_FIELDS)})
            if new_consent:
                consent["source"] = s.source or old.source
        for k, v in list(consent.items()):
            consent[k] = v or getattr(s, k)
        names = {"lists": lists, "left_lists": left, "tags": old.tags + tuple(x for x in s.tags if x not in old.tags)}
        new: dict[str, object] = {
            "first_name": s.first_name or old.first_name,
            "last_name": s.last_name or old.last_name,
            **names,
            **consent,
            "status": ACTIVE if new_consent else s.status,
            "unsubscribed_at": "" if new_consent else ((s.unsubscribed_at or now) if s.status != ACTIVE else ""),
            "unsubscribed_reason": "" if new_consent else (s.unsubscribed_reason if s.status != ACTIVE else ""),
        }
        if all(getattr(old, k) == v for k, v in new.items()):
            return "unchanged"
        new.update({k: pack(v) for k, v in names.items()})
        new["status"] = str(new["status"])
        sets = ", ".join(f"{k} = ?" for k in new)
        self.conn.execute(f"UPDATE subscribers SET {sets}, updated_at = ? WHERE id = ?", (*new.values(), now, old.id))
        assert old.id is not None
        events = self.db.events
        if old.status != ACTIVE and new["status"] == str(ACTIVE):
            events.add(old.id, ev.RESUBSCRIBED, now, detail=f"signed up again: on {', '.join(lists)}")
        else:
            for name in joined:
                events.add(old.id, ev.JOINED, now, list_name=name, detail=s.source)
        if s.status != ACTIVE and old.status == ACTIVE and not new_consent:
            events.add(old.id, str(s.status), now, detail=str(new["unsubscribed_reason"]))
        if new_consent and s.consent_text:
            events.add(old.id, ev.CONSENT, now, detail=consent_detail(s))
        return "updated"

    def add(self, s: Subscriber, secret: bytes, now: str, *, new_consent: bool = False, rejoin: bool = False) -> str:
        """`subscribers add`: the same rules as an import of one row, asked for by a person.

        With rejoin (lists named by --list) they are joined even if the person left them
        before. With new_consent
        (they signed up again, and `--consent` says what they agreed to) the consent record
        is replaced, and someone unsubscribed, bounced or even erased comes back: the only
        way back for an erased person. Returns 'added', 'updated', 'unchanged', 'suppressed'
        or 'back' (came back with their new consent).
        """
        with self.db.transaction():
            erased = self.is_erased(secret, s.email_key)
            if erased and not new_consent:
                return "suppressed"
            if erased:
                self.conn.execute("DELETE FROM suppressions WHERE hash = ?", (address_hash(secret, s.email_key),))
            old = self.get(s.email_key)
            if old is None:
                new_id = self._insert(s, now)
                self.db.events.add(new_id, ev.ADDED, now, detail=_added_detail(s))
                if s.consent_text:
                    self.db.events.add(new_id, ev.CONSENT, now, detail=consent_detail(s))
                return "back" if erased else "added"
            outcome = self._update(old, s, now, rejoin=rejoin, new_consent=new_consent)
            return "back" if outcome == "updated" and old.status != ACTIVE else outcome

    def import_rows(
        self,
        records: Iterable[Subscriber | Reject],
        secret: bytes,
        now: str,
        *,
        commit: bool = True,
        on_reject: Callable[[Reject], None] | None = None,
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
        with self.db.transaction(commit=commit):
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
            if counters["added"]:
                self.db.events.added_since(first_new_id, now)
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
            r["email_key"]: subscriber_from_row(r)
            for r in c.execute(f"SELECT {COLUMNS} FROM subscribers WHERE email_key IN ({marks})", keys)
        }
        # Seen earlier in this file: added by this import, or an old one already met.
        seen = {k for k, s in existing.items() if s.id is not None and s.id >= first_new_id}
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
        c.executemany(_INSERT, new_rows)

    # -- status changes -------------------------------------------------------------

    def unsubscribe(self, email_key: str, reason: str, now: str, status: str = SubscriberStatus.UNSUBSCRIBED) -> bool:
        """Mark a subscriber unsubscribed (or bounced) from everything; False if they already were."""
        with self.db.transaction():
            sub = self.require(email_key)
            if sub.status == status:
                return False
            if sub.status == SubscriberStatus.UNSUBSCRIBED and status == SubscriberStatus.BOUNCED:
                return False  # an unsubscribe is the stronger fact; keep it
            self.conn.execute(
                "UPDATE subscribers SET status = ?, unsubscribed_at = ?, unsubscribed_reason = ?, "
                "updated_at = ? WHERE id = ?",
                (str(status), now, reason, now, sub.id),
            )
            assert sub.id is not None
            self.db.events.add(sub.id, str(status), now, detail=reason)
            return True

    def resubscribe(self, email_key: str, now: str) -> bool:
        """The only way back to active (besides a new consent); False if the subscriber already was."""
        with self.db.transaction():
            sub = self.require(email_key)
            if sub.status == ACTIVE:
                return False
            self.conn.execute(
                "UPDATE subscribers SET status = 'active', unsubscribed_at = '', unsubscribed_reason = '', "
                "updated_at = ? WHERE id = ?",
                (now, sub.id),
            )
            assert sub.id is not None
            self.db.events.add(sub.id, ev.RESUBSCRIBED, now, detail=f"on {', '.join(sub.lists) or 'no list'}")
            return True

    def leave(self, email_key: str, lists: Iterable[str], reason: str, now: str) -> tuple[str, ...]:
        """Take a person off some lists (they stay on the others); returns the lists they left.

        The lists are remembered, so an import never puts them back; only a person's
        `add --list` or `resubscribe --list` does.
        """
        with self.db.transaction():
            sub = self.require(email_key)
            gone = tuple(x for x in lists if x in sub.lists)
            left = sub.left_lists + tuple(x for x in lists if x not in sub.left_lists)
            if not gone and left == sub.left_lists:
                return ()
            self.conn.execute(
                "UPDATE subscribers SET lists = ?, left_lists = ?, updated_at = ? WHERE id = ?",
                (pack(x for x in sub.lists if x not in gone), pack(left), now, sub.id),
            )
            assert sub.id is not None
            for name in gone:
                self.db.events.add(sub.id, ev.LEFT, now, list_name=name, detail=reason)
            return gone

    def join(self, email_key: str, lists: Iterable[str], now: str) -> tuple[str, ...]:
        """Put a person (back) on some lists, at their request; someone unsubscribed or bounced
        becomes active again, on just these lists. Returns the lists joined ('' changes: ())."""
        lists = tuple(lists)
        with self.db.transaction():
            sub = self.require(email_key)
            back = sub.status != ACTIVE
            if back:
                new_lists = lists
                left = tuple(dict.fromkeys(x for x in sub.lists + sub.left_lists if x not in lists))
            else:
                new_lists = sub.lists + tuple(x for x in lists if x not in sub.lists)
                left = tuple(x for x in sub.left_lists if x not in lists)
            joined = tuple(x for x in lists if back or x not in sub.lists)
            if not back and not joined and left == sub.left_lists:
                return ()
            self.conn.execute(
                "UPDATE subscribers SET status = 'active', unsubscribed_at = '', unsubscribed_reason = '', "
                "lists = ?, left_lists = ?, updated_at = ? WHERE id = ?",
                (pack(new_lists), pack(left), now, sub.id),
            )
            assert sub.id is not None
            if back:
                self.db.events.add(sub.id, ev.RESUBSCRIBED, now, detail=f"on {', '.join(lists)}")
            else:
                for name in joined:
                    self.db.events.add(sub.id, ev.JOINED, now, list_name=name, detail="asked to join")
            return joined

    def bounce_by_delivery(self, delivery_id: int, reply: str, now: str) -> None:
        """The address of a delivery does not exist: suppress its subscriber (inside a transaction)."""
        row = self.conn.execute(
            "SELECT d.subscriber_id, d.campaign_id FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
            "WHERE d.id = ? AND s.status = 'active'",
            (delivery_id,),
        ).fetchone()
        if row is None:
            return
        self.conn.execute(
            "UPDATE subscribers SET status = 'bounced', unsubscribed_at = ?, unsubscribed_reason = ?, "
            "updated_at = ? WHERE id = ?",
            (now, mask_addresses(reply)[:200], now, row["subscriber_id"]),
        )
        self.db.events.add(row["subscriber_id"], ev.BOUNCED, now, campaign_id=row["campaign_id"],
                           delivery_id=delivery_id, detail=reply[:200])

    def count_full_mailbox(self, subscriber_id: int, campaign_id: int, limit: int, reply: str, now: str) -> bool:
        """One more campaign in a row that found this person's mailbox full (inside a transaction);
        at `limit` the address is suppressed (bounced). Returns True when it was."""
        self.conn.execute(
            "UPDATE subscribers SET full_mailbox_campaigns = full_mailbox_campaigns + 1, "
            "full_mailbox_last_campaign = ? WHERE id = ? AND full_mailbox_last_campaign <> ?",
            (campaign_id, subscriber_id, campaign_id),
        )
        return self.conn.execute(
            "UPDATE subscribers SET status = 'bounced', unsubscribed_at = ?, unsubscribed_reason = ?, updated_at = ? "
            "WHERE id = ? AND status = 'active' AND full_mailbox_campaigns >= ?",
            (now, f"mailbox full in {limit} campaigns in a row (last: {reply[:150]})", now, subscriber_id, limit),
        ).rowcount == 1

    def reached(self, subscriber_id: int) -> None:
        """A message reached this person: a full mailbox before no longer counts (inside a transaction)."""
        self.conn.execute(
            "UPDATE subscribers SET full_mailbox_campaigns = 0 WHERE id = ? AND full_mailbox_campaigns > 0",
            (subscriber_id,),
        )

    def erase(self, email_key: str, secret: bytes, reason: str, now: str) -> bool:
        """Delete every trace of a person but a keyed hash that keeps them from coming back.

        Returns True if they were on the list (False: only the suppression was recorded).
        """
        with self.db.transaction():
            sub = self.get(email_key)
            if sub is not None:
                self._erase_personal_data(sub.id)
                self.conn.execute("DELETE FROM subscribers WHERE id = ?", (sub.id,))
            self.conn.execute(
                "INSERT OR IGNORE INTO suppressions (hash, reason, created_at) VALUES (?, ?, ?)",
                (address_hash(secret, email_key), reason, now),
            )
        if not self.db.in_memory:
            # Old copies of the erased pages live on in the WAL until it is checkpointed.
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return sub is not None

    def _erase_personal_data(self, subscriber_id: int | None) -> None:
        """Every other table that names the person (a later migration adding one adds it here)."""
        self.conn.execute(
            "UPDATE deliveries SET email = '', reply = '', subscriber_id = NULL WHERE subscriber_id = ?",
            (subscriber_id,),
        )
        # Their history goes; only a complaint stays, naming nobody, so it still counts
        # against its campaign's complaint rate.
        self.conn.execute(
            "DELETE FROM subscriber_events WHERE subscriber_id = ? AND kind != ?", (subscriber_id, ev.COMPLAINT)
        )
        self.conn.execute(
            "UPDATE subscriber_events SET detail = '', list_name = '', subscriber_id = NULL WHERE subscriber_id = ?",
            (subscriber_id,),
        )
