"""What happened to one person: their events (consent, list changes, unsubscribes, bounces)
and their deliveries, read together as one history, newest first.

Kinds are open: the store writes `added`, `consent`, `joined`, `left`, `unsubscribed`,
`resubscribed` and `bounced`; the mailbox loop may add its own (with a campaign id).
An event never holds an address (the person is its row's subscriber); erasing the person
unlinks their events and clears their words (a complaint still counts for its campaign).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from ..models import HistoryItem
from ..text import mask_addresses

if TYPE_CHECKING:
    from .db import Store

ADDED, CONSENT, JOINED, LEFT = "added", "consent", "joined", "left"
UNSUBSCRIBED, RESUBSCRIBED, BOUNCED = "unsubscribed", "resubscribed", "bounced"
SOFT_BOUNCE, COMPLAINT = "soft-bounce", "complaint"  # from the mailbox loop


class EventStore:
    """The subscriber_events table."""

    def __init__(self, db: Store):
        self.db = db

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def add(self, subscriber_id: int, kind: str, now: str, *, list_name: str = "",
            campaign_id: int | None = None, delivery_id: int | None = None, detail: str = "") -> None:
        """Record one event of a person (call inside the transaction that made the change).

        Any address in the detail (a server's reply, a bounce's words) is masked.
        """
        self.conn.execute(
            "INSERT INTO subscriber_events (subscriber_id, time, kind, list_name, campaign_id, delivery_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (subscriber_id, now, kind, list_name, campaign_id, delivery_id, mask_addresses(detail)[:500]),
        )

    def added_since(self, first_id: int, now: str) -> None:
        """An `added` event for every subscriber stored from id `first_id` on (the new rows of an import)."""
        self.conn.execute(
            "INSERT INTO subscriber_events (subscriber_id, time, kind, detail) "
            "SELECT id, ?, ?, 'on ' || replace(trim(lists, ','), ',', ', ') || '; source: ' || source "
            "FROM subscribers WHERE id >= ?",
            (now, ADDED, first_id),
        )

    def history(self, subscriber_id: int) -> list[HistoryItem]:
        """The person's events and deliveries, newest first."""
        rows = self.conn.execute(
            "SELECT e.time AS time, e.kind AS kind, e.list_name AS list_name, e.campaign_id AS campaign_id, "
            "coalesce(c.name, '') AS campaign_name, '' AS status, e.detail AS detail, e.id AS n, 0 AS part "
            "FROM subscriber_events e LEFT JOIN campaigns c ON c.id = e.campaign_id WHERE e.subscriber_id = ? "
            "UNION ALL "
            "SELECT coalesce(nullif(d.sent_at, ''), nullif(d.attempted_at, ''), d.updated_at), 'delivery', "
            "c.list_name, d.campaign_id, c.name, d.status, d.reply, d.id, 1 "
            "FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id WHERE d.subscriber_id = ? "
            "ORDER BY time DESC, part DESC, n DESC",
            (subscriber_id, subscriber_id),
        )
        return [
            HistoryItem(time=r["time"], kind=r["kind"], list_name=r["list_name"], campaign_id=r["campaign_id"],
                        campaign_name=r["campaign_name"], status=r["status"], detail=r["detail"])
            for r in rows
        ]
