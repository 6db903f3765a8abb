"""The delivery log: one row per recipient of a campaign, changed only through the lifecycle's transitions.

The hot path (one message) is one transaction: the previous message's outcome and the
next one's `sending` mark are committed together, one disk sync per message.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Iterable, Iterator

from ..lifecycle import DeliveryStatus, Transition, delivery_transition, forbidden
from ..models import DELIVERY_STATUSES, Delivery, Outcome
from ..text import mask_addresses

if TYPE_CHECKING:
    from .db import Store

COLUMNS = (
    "id, campaign_id, subscriber_id, seq, email, status, attempts, reply, message_id, updated_at, "
    "attempted_at, sent_at"
)
D = DeliveryStatus
INTERRUPTED = "the run stopped while this message was being handed to the server"


def delivery_from_row(row: sqlite3.Row) -> Delivery:
    """A stored row as a Delivery, read by column name."""
    return Delivery(
        id=row["id"], campaign_id=row["campaign_id"], subscriber_id=row["subscriber_id"], seq=row["seq"],
        email=row["email"], status=DeliveryStatus(row["status"]), attempts=row["attempts"], reply=row["reply"],
        message_id=row["message_id"], updated_at=row["updated_at"], attempted_at=row["attempted_at"],
        sent_at=row["sent_at"],
    )


def _guard(t: Transition) -> tuple[str, list[str]]:
    sources = sorted(t.sources)
    return f"status IN ({','.join('?' * len(sources))})", sources


class DeliveryStore:
    """Deliveries of campaigns: read by campaign, changed one transition at a time."""

    def __init__(self, db: "Store"):
        self.db = db

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    # -- reading ----------------------------------------------------------------------

    def pending(self, campaign_id: int, limit: int, after_seq: int = 0) -> list[Delivery]:
        rows = self.conn.execute(
            f"SELECT {COLUMNS} FROM deliveries WHERE campaign_id = ? AND status = 'pending' "
            "AND seq > ? ORDER BY seq LIMIT ?",
            (campaign_id, after_seq, limit),
        ).fetchall()
        return [delivery_from_row(r) for r in rows]

    def of_campaign(self, campaign_id: int, statuses: Iterable[str] = ()) -> Iterator[Delivery]:
        statuses = tuple(str(s) for s in statuses)
        sql = f"SELECT {COLUMNS} FROM deliveries WHERE campaign_id = ?"
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
        for r in self.conn.execute(sql + " ORDER BY seq", (campaign_id, *statuses)):
            yield delivery_from_row(r)

    def counts(self, campaign_id: int) -> dict[str, int]:
        counts = dict.fromkeys((str(s) for s in DELIVERY_STATUSES), 0)
        for row in self.conn.execute(
            "SELECT status, count(*) AS n FROM deliveries WHERE campaign_id = ? GROUP BY status", (campaign_id,)
        ):
            counts[row["status"]] = row["n"]
        return counts

    def total(self, campaign_id: int) -> int:
        return int(self.conn.execute("SELECT count(*) FROM deliveries WHERE campaign_id = ?", (campaign_id,)).fetchone()[0])

    def attempted_since(self, since: str) -> int:
        """Messages handed to a server since a time (UTC ISO): what a daily quota counts."""
        return int(self.conn.execute("SELECT count(*) FROM deliveries WHERE attempted_at >= ?", (since,)).fetchone()[0])

    # -- transitions ------------------------------------------------------------------

    def _one(self, name: str, delivery_id: int, sets: str, params: tuple, target: str) -> None:
        """Run one guarded UPDATE of a delivery (inside the current transaction), or raise TransitionError."""
        t = delivery_transition(name)
        if target not in t.targets:  # a mistake in our code, not in the data
            raise ValueError(f"{name} cannot end in {target}")
        guard, sources = _guard(t)
        cur = self.conn.execute(
            f"UPDATE deliveries SET status = ?, {sets} WHERE id = ? AND {guard}",
            (target, *params, delivery_id, *sources),
        )
        if cur.rowcount != 1:
            row = self.conn.execute("SELECT status FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            raise forbidden("delivery", delivery_id, t, row["status"] if row else None, target)

    def _record(self, outcome: Outcome) -> None:
        now = outcome.time
        self._one(
            "record_outcome", outcome.delivery.id,
            "reply = ?, updated_at = ?, sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END",
            (mask_addresses(outcome.reply), now, str(outcome.status), now), str(outcome.status),
        )
        if outcome.bounce:
            self.db.subscribers.bounce_by_delivery(outcome.delivery.id, outcome.reply, now)

    def mark_sending(self, delivery_id: int, message_id: str, now: str, *, finish: Outcome | None = None) -> None:
        """pending -> sending, committed before a byte goes out (and, in the same commit, the previous outcome)."""
        with self.db.transaction():
            if finish is not None:
                self._record(finish)
            self._one(
                "mark_sending", delivery_id,
                "attempts = attempts + 1, message_id = ?, updated_at = ?, attempted_at = ?",
                (message_id, now, now), D.SENDING,
            )

    def record_outcome(self, outcome: Outcome) -> None:
        """sending -> sent | failed | bounced | pending (a temporary refusal): what the server answered."""
        with self.db.transaction():
            self._record(outcome)

    def count_attempt(self, delivery_id: int, now: str) -> None:
        """One more try of a message in 'sending' (after a temporary refusal)."""
        with self.db.transaction():
            self.conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, attempted_at = ?, updated_at = ? "
                "WHERE id = ? AND status = 'sending'",
                (now, now, delivery_id),
            )

    def mark_unknown(self, delivery_id: int, reason: str, now: str) -> None:
        """sending -> unknown: it may have arrived, so it is never resent without --retry-unknown."""
        with self.db.transaction():
            self._one("mark_unknown", delivery_id, "reply = ?, updated_at = ?", (mask_addresses(reason), now), D.UNKNOWN)

    def release(self, delivery_id: int, reason: str, now: str) -> None:
        """sending -> pending: no byte of it reached the server, so the next run sends it."""
        with self.db.transaction():
            self._one("release", delivery_id, "reply = ?, updated_at = ?", (mask_addresses(reason), now), D.PENDING)

    def skip(self, delivery_id: int, status: DeliveryStatus, reason: str, now: str) -> None:
        """pending -> skipped (gone since the audience was fixed) or failed (cannot be sent at all)."""
        with self.db.transaction():
            self._one("skip", delivery_id, "reply = ?, updated_at = ?", (mask_addresses(reason), now), status)

    def mark_interrupted(self, now: str) -> int:
        """Rows left in 'sending' by a run that died: their fate is unknown, so they are not resent.

        Only call this while holding the workspace lock (no other run can be sending).
        """
        guard, sources = _guard(delivery_transition("mark_unknown"))
        with self.db.transaction():
            return self.conn.execute(
                f"UPDATE deliveries SET status = 'unknown', updated_at = ?, reply = ? WHERE {guard}",
                (now, INTERRUPTED, *sources),
            ).rowcount

    def retry(self, campaign_id: int, status: DeliveryStatus, now: str) -> int:
        """failed (or unknown) -> pending for a whole campaign: --retry-failed, --retry-unknown."""
        if str(status) not in delivery_transition("retry").sources:
            raise ValueError(f"only failed or unknown deliveries are retried, not {status}")
        with self.db.transaction():
            return self.conn.execute(
                "UPDATE deliveries SET status = 'pending', updated_at = ? WHERE campaign_id = ? AND status = ?",
                (now, campaign_id, str(status)),
            ).rowcount
