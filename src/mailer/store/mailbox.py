"""What the mailbox loop changes: bounces, complaints and unsubscribe mails, each once.

Implements `mailer.inbox.process.MailboxActions` and `ProcessedLog` over SQLite. The
rules (which action a message calls for) live in mailer.inbox.process; each method here
is one change, done inside the transaction `atomic()` opens for one message.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ..inbox.process import DeliveryRef, SubscriberRef
from ..lifecycle import DeliveryStatus, SubscriberStatus, delivery_transition
from ..text import mask_addresses
from . import events as ev

if TYPE_CHECKING:
    from .db import Store

S = SubscriberStatus


class MailboxStore:
    """The store seen from the inbox loop."""

    def __init__(self, db: Store):
        self.db = db

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def atomic(self) -> AbstractContextManager[Any]:
        """One message's actions and its remember() commit together, or not at all."""
        return self.db.transaction()

    # -- finding -----------------------------------------------------------------------

    @staticmethod
    def _delivery(row: sqlite3.Row | None) -> DeliveryRef | None:
        if row is None:
            return None
        return DeliveryRef(row["id"], row["campaign_id"], row["subscriber_id"], row["email"])

    def find_delivery_by_message_id(self, message_id: str) -> DeliveryRef | None:
        row = self.conn.execute(
            "SELECT id, campaign_id, subscriber_id, email FROM deliveries WHERE message_id = ? "
            "ORDER BY id DESC LIMIT 1", (message_id,)
        ).fetchone()
        return self._delivery(row)

    def find_delivery(self, delivery_id: int) -> DeliveryRef | None:
        row = self.conn.execute(
            "SELECT id, campaign_id, subscriber_id, email FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
        return self._delivery(row)

    def find_subscriber(self, *, email: str | None = None, subscriber_id: int | None = None) -> SubscriberRef | None:
        if subscriber_id is not None:
            row = self.conn.execute("SELECT id, email, status FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()
        else:
            row = self.conn.execute(
                "SELECT id, email, status FROM subscribers WHERE email_key = ?", ((email or "").lower(),)
            ).fetchone()
        return SubscriberRef(row["id"], row["email"], row["status"]) if row else None

    def last_delivery_to(self, subscriber: SubscriberRef, since: str) -> DeliveryRef | None:
        """The newest message that went to this subscriber since this time (UTC ISO; sent, or of unknown fate)."""
        row = self.conn.execute(
            "SELECT id, campaign_id, subscriber_id, email FROM deliveries WHERE subscriber_id = ? "
            "AND status IN ('sent', 'unknown', 'bounced') AND coalesce(nullif(sent_at, ''), attempted_at, updated_at) >= ? "
            "ORDER BY coalesce(nullif(sent_at, ''), attempted_at, updated_at) DESC, id DESC LIMIT 1",
            (subscriber.id, since),
        ).fetchone()
        return self._delivery(row)

    # -- changes (inside atomic) ----------------------------------------------------------

    def _event(self, kind: str, subscriber: SubscriberRef, delivery: DeliveryRef | None, reason: str, when: str) -> None:
        self.db.events.add(subscriber.id, kind, when, campaign_id=delivery.campaign_id if delivery else None,
                           delivery_id=delivery.id if delivery else None, detail=reason)

    def _suppress(self, subscriber: SubscriberRef, status: SubscriberStatus, reason: str, when: str) -> bool:
        # An unsubscribe is the stronger fact: a bounce never turns it into "bounced".
        keep = (S.UNSUBSCRIBED, S.BOUNCED) if status == S.BOUNCED else (S.UNSUBSCRIBED,)
        cur = self.conn.execute(
            f"UPDATE subscribers SET status = ?, unsubscribed_at = ?, unsubscribed_reason = ?, updated_at = ? "
            f"WHERE id = ? AND status NOT IN ({','.join('?' * len(keep))})",
            (str(status), when, mask_addresses(reason)[:200], when, subscriber.id, *map(str, keep)),
        )
        return cur.rowcount == 1

    def hard_bounce(self, subscriber: SubscriberRef, delivery: DeliveryRef | None, reason: str, when: str) -> bool:
        """The address does not exist: suppressed for good; the delivery, when known, bounced."""
        self._event(ev.BOUNCED, subscriber, delivery, reason, when)
        if delivery is not None:
            t = delivery_transition("bounce_later")
            sources = sorted(t.sources)
            self.conn.execute(
                f"UPDATE deliveries SET status = ?, reply = ?, updated_at = ? WHERE id = ? "
                f"AND status IN ({','.join('?' * len(sources))})",
                (str(DeliveryStatus.BOUNCED), mask_addresses(reason), when, delivery.id, *sources),
            )
        return self._suppress(subscriber, S.BOUNCED, reason, when)

    def soft_bounce(self, subscriber: SubscriberRef, delivery: DeliveryRef | None, reason: str, when: str) -> int:
        """A temporary bounce; returns on how many campaigns this person has bounced so since they last joined."""
        self._event(ev.SOFT_BOUNCE, subscriber, delivery, reason, when)
        return int(self.conn.execute(
            "SELECT count(DISTINCT campaign_id) FROM subscriber_events WHERE subscriber_id = ? "
            "AND kind = 'soft-bounce' AND campaign_id IS NOT NULL AND time >= "
            "(SELECT coalesce(max(time), '') FROM subscriber_events WHERE subscriber_id = ? AND kind = 'resubscribed')",
            (subscriber.id, subscriber.id),
        ).fetchone()[0])

    def unsubscribe(self, subscriber: SubscriberRef, delivery: DeliveryRef | None, reason: str, when: str) -> bool:
        """From every list: the one link, mail or complaint is enough."""
        self._event(ev.UNSUBSCRIBED, subscriber, delivery, reason, when)
        return self._suppress(subscriber, S.UNSUBSCRIBED, reason, when)

    def complaint(self, subscriber: SubscriberRef, delivery: DeliveryRef | None, reason: str, when: str) -> None:
        """A spam complaint, counted against its campaign."""
        self._event(ev.COMPLAINT, subscriber, delivery, reason, when)

    # -- ProcessedLog -------------------------------------------------------------------

    def already_processed(self, key: str) -> bool:
        return self.conn.execute("SELECT 1 FROM inbox_messages WHERE key = ?", (key,)).fetchone() is not None

    def remember(self, key: str, verdict: Any, outcome: str, when: str) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO inbox_messages (key, kind, outcome, processed_at) VALUES (?, ?, ?, ?)",
            (key, verdict.kind.value, outcome, when),
        )

    def cursor(self, name: str) -> str | None:
        row = self.conn.execute("SELECT position FROM inbox_cursors WHERE name = ?", (name,)).fetchone()
        return row["position"] if row else None

    def save_cursor(self, name: str, position: str, when: str) -> None:
        with self.db.transaction():
            self.conn.execute(
                "INSERT INTO inbox_cursors (name, position, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
                (name, position, when),
            )

    # -- figures ------------------------------------------------------------------------

    def complaints(self, campaign_id: int) -> int:
        return int(self.conn.execute(
            "SELECT count(*) FROM subscriber_events WHERE campaign_id = ? AND kind = 'complaint'", (campaign_id,)
        ).fetchone()[0])

    def complaint_rate_since(self, since: str) -> tuple[int, int]:
        """(complaints, messages sent) of the campaigns whose messages went out since a time."""
        sent = int(self.conn.execute(
            "SELECT count(*) FROM deliveries WHERE status IN ('sent', 'bounced') AND sent_at >= ?", (since,)
        ).fetchone()[0])
        complaints = int(self.conn.execute(
            "SELECT count(*) FROM subscriber_events e JOIN deliveries d ON d.id = e.delivery_id "
            "WHERE e.kind = 'complaint' AND d.sent_at >= ?", (since,)
        ).fetchone()[0])
        return complaints, sent
