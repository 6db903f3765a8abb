"""The delivery log: one row per recipient of a campaign, changed only through the lifecycle's transitions.

The hot path of a send is two kinds of commit. `reserve` marks the next few messages
'sending' in one commit that is on disk before anything of them is written (synced at
once, or by `Store.sync_soon` in the background while other messages go out).
`hand_over`, just before a message's data is written, records it as handed together with
the replies that came back since (one commit per message, not synced: see
lifecycle.after_crash).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..lifecycle import DeliveryStatus, Transition, TransitionError, after_crash, delivery_transition, forbidden
from ..models import DELIVERY_STATUSES, Delivery, Outcome
from ..text import mask_addresses

if TYPE_CHECKING:
    from .db import Store

COLUMNS = (
    "id, campaign_id, subscriber_id, seq, email, status, attempts, reply, message_id, updated_at, "
    "attempted_at, sent_at, next_attempt_at, deferred_since"
)
D = DeliveryStatus
INTERRUPTED = "a run ended after handing this message to the server, before its answer was recorded"
FULL_MAILBOX_LIMIT = 3  # campaigns in a row that found the mailbox full before the address is suppressed


@lru_cache(maxsize=1)
def current_boot() -> str:
    """This boot of the machine ('' where it cannot be told: then no unsynced commit is trusted)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def delivery_from_row(row: sqlite3.Row) -> Delivery:
    """A stored row as a Delivery, read by column name."""
    return Delivery(
        id=row["id"], campaign_id=row["campaign_id"], subscriber_id=row["subscriber_id"], seq=row["seq"],
        email=row["email"], status=DeliveryStatus(row["status"]), attempts=row["attempts"], reply=row["reply"],
        message_id=row["message_id"], updated_at=row["updated_at"], attempted_at=row["attempted_at"],
        sent_at=row["sent_at"], next_attempt_at=row["next_attempt_at"], deferred_since=row["deferred_since"],
    )


def _guard(t: Transition) -> tuple[str, list[str]]:
    sources = sorted(t.sources)
    return f"status IN ({','.join('?' * len(sources))})", sources


class DeliveryStore:
    """Deliveries of campaigns: read by campaign, changed one transition at a time."""

    def __init__(self, db: Store):
        self.db = db

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    # -- reading ----------------------------------------------------------------------

    def pending(self, campaign_id: int, limit: int, after_seq: int = 0, due: str | None = None) -> list[Delivery]:
        """Pending deliveries in sending order; with `due` (UTC ISO) only those whose next try has come."""
        sql = f"SELECT {COLUMNS} FROM deliveries WHERE campaign_id = ? AND status = 'pending' AND seq > ?"
        params: list = [campaign_id, after_seq]
        if due is not None:
            sql += " AND next_attempt_at <= ?"
            params.append(due)
        rows = self.conn.execute(sql + " ORDER BY seq LIMIT ?", (*params, limit)).fetchall()
        return [delivery_from_row(r) for r in rows]

    def next_attempt(self, campaign_id: int) -> str:
        """When the earliest pending delivery that is waiting may be tried ('' if none waits)."""
        row = self.conn.execute(
            "SELECT min(next_attempt_at) FROM deliveries WHERE campaign_id = ? AND status = 'pending' "
            "AND next_attempt_at <> ''",
            (campaign_id,),
        ).fetchone()
        return row[0] or ""

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
            raise forbidden("delivery", delivery_id, t, self._status(delivery_id), target)

    def _status(self, delivery_id: int) -> str | None:
        row = self.conn.execute("SELECT status FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        return row["status"] if row else None

    def _in_sending(self, what: str, delivery_id: int, sets: str, params: tuple) -> None:
        """Change a delivery that must be in 'sending' without changing its status."""
        cur = self.conn.execute(
            f"UPDATE deliveries SET {sets} WHERE id = ? AND status = 'sending'", (*params, delivery_id)
        )
        if cur.rowcount != 1:
            current = self._status(delivery_id)
            raise TransitionError(
                f"There is no delivery {delivery_id}." if current is None
                else f"Delivery {delivery_id} is {current}, so it cannot {what} (only a delivery in sending can)."
            )

    def _record(self, outcome: Outcome) -> None:
        now = outcome.time
        d = outcome.delivery
        # A refused envelope is a try that had no hand-over: it is counted with its reply.
        tried = "attempts = attempts + 1, attempted_at = ?, " if outcome.envelope_refused else ""
        tried_params = (now,) if outcome.envelope_refused else ()
        if outcome.status == D.SENDING:  # refused for now; tried again in this run
            self._in_sending("be tried again", d.id, f"{tried}handed = 0, reply = ?, updated_at = ?",
                             (*tried_params, mask_addresses(outcome.reply), now))
            return
        deferred = outcome.next_attempt_at if outcome.status == D.PENDING else ""
        self._one(
            "record_outcome", d.id,
            f"{tried}reply = ?, updated_at = ?, handed = 0, next_attempt_at = ?, "
            "deferred_since = CASE WHEN ? <> '' AND deferred_since = '' THEN ? ELSE deferred_since END, "
            "sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END",
            (*tried_params, mask_addresses(outcome.reply), now, deferred, deferred, now, str(outcome.status), now), str(outcome.status),
        )
        subscribers = self.db.subscribers
        if outcome.bounce:
            subscribers.bounce_by_delivery(d.id, outcome.reply, now)
        elif outcome.mailbox_full and outcome.status == D.FAILED and d.subscriber_id is not None:
            subscribers.count_full_mailbox(d.subscriber_id, d.campaign_id, FULL_MAILBOX_LIMIT, outcome.reply, now)
        elif outcome.status == D.SENT and d.subscriber_id is not None:
            subscribers.reached(d.subscriber_id)

    def reserve(self, marks: Sequence[tuple[int, str]], now: str, *, finish: Sequence[Outcome] = (),
                boot: str | None = None, synced: bool = True) -> None:
        """pending -> sending for the next messages (id, Message-ID), in one commit that must be
        on disk before anything of them is written; the outcomes in `finish` go in the same commit.

        With synced=False the caller makes it durable with `Store.sync_soon()` before it writes.
        """
        boot = current_boot() if boot is None else boot
        with self.db.transaction(synced=synced):
            for outcome in finish:
                self._record(outcome)
            for delivery_id, message_id in marks:
                self._one(
                    "mark_sending", delivery_id,
                    "handed = 0, message_id = ?, marked_boot = ?, updated_at = ?",
                    (message_id, boot, now), D.SENDING,
                )

    def mark_sending(self, delivery_id: int, message_id: str, now: str, *, finish: Outcome | None = None) -> None:
        """pending -> sending for one message, synced to disk (and, in the same commit, the previous outcome)."""
        self.reserve([(delivery_id, message_id)], now, finish=[finish] if finish is not None else ())

    def hand_over(self, delivery_id: int, now: str, *, finish: Sequence[Outcome] = ()) -> None:
        """Just before its data is written: the message counts as tried (its data may reach
        the server from now on), with the outcomes that came back since, in one commit.

        Not synced to disk: this sits between a reply and the next message's data, where a
        disk sync would cost every message its length. It survives a killed process; after
        a power cut lifecycle.after_crash trusts no unhanded row.
        """
        with self.db.transaction(synced=False):
            for outcome in finish:
                self._record(outcome)
            self._in_sending(
                "be handed over", delivery_id,
                "handed = 1, attempts = attempts + 1, attempted_at = ?, updated_at = ?", (now, now),
            )

    def record_outcome(self, outcome: Outcome) -> None:
        """sending -> sent | failed | bounced | pending (a temporary refusal): what the server answered."""
        self.record_outcomes([outcome])

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Several outcomes in one commit, synced to disk."""
        if outcomes:
            with self.db.transaction():
                for outcome in outcomes:
                    self._record(outcome)

    def mark_unknown(self, delivery_id: int, reason: str, now: str) -> None:
        """sending -> unknown: it may have arrived, so it is never resent without --retry-unknown."""
        with self.db.transaction():
            self._one("mark_unknown", delivery_id, "reply = ?, updated_at = ?", (mask_addresses(reason), now), D.UNKNOWN)

    def release(self, delivery_id: int, reason: str, now: str) -> None:
        """sending -> pending: no byte of it reached the server, so the next run sends it."""
        with self.db.transaction():
            self._one("release", delivery_id, "handed = 0, reply = ?, updated_at = ?", (mask_addresses(reason), now), D.PENDING)

    def unreserve(self, delivery_ids: Sequence[int], now: str) -> None:
        """sending -> pending for messages marked ahead and never handed over (their reply is kept)."""
        if delivery_ids:
            with self.db.transaction():
                for delivery_id in delivery_ids:
                    self._one("release", delivery_id, "handed = 0, updated_at = ?", (now,), D.PENDING)

    def skip(self, delivery_id: int, status: DeliveryStatus, reason: str, now: str) -> None:
        """pending -> skipped (gone since the audience was fixed) or failed (cannot be sent at all)."""
        with self.db.transaction():
            self._one("skip", delivery_id, "reply = ?, updated_at = ?", (mask_addresses(reason), now), status)

    def expired(self, campaign_id: int, deferred_before: str) -> list[Delivery]:
        """Pending deliveries temporarily refused since before `deferred_before` (their window has closed)."""
        return [
            delivery_from_row(r) for r in self.conn.execute(
                f"SELECT {COLUMNS} FROM deliveries WHERE campaign_id = ? AND status = 'pending' "
                "AND deferred_since <> '' AND deferred_since < ? ORDER BY seq",
                (campaign_id, deferred_before),
            )
        ]

    def give_up(self, delivery: Delivery, why: str, now: str, *, mailbox_full: bool = False) -> None:
        """pending -> failed: temporary refusals for longer than [sending] give_up_after (the last reply is kept)."""
        with self.db.transaction():
            self._one("give_up", delivery.id, "reply = ?, next_attempt_at = '', updated_at = ?",
                      (f"{why}: {delivery.reply}" if delivery.reply else why, now), D.FAILED)
            if mailbox_full and delivery.subscriber_id is not None:
                self.db.subscribers.count_full_mailbox(
                    delivery.subscriber_id, delivery.campaign_id, FULL_MAILBOX_LIMIT, delivery.reply, now
                )

    def mark_interrupted(self, now: str, boot: str | None = None) -> int:
        """Rows left in 'sending' by a run that died: unknown if their data may have left
        (never resent blindly), pending again if it certainly did not (lifecycle.after_crash).
        Returns how many became unknown.

        Only call this while holding the workspace lock (no other run can be sending).
        """
        boot = current_boot() if boot is None else boot
        unknown = 0
        with self.db.transaction():
            rows = self.conn.execute(
                "SELECT id, handed, marked_boot FROM deliveries WHERE status = 'sending'"
            ).fetchall()
            for row in rows:
                fate = after_crash(bool(row["handed"]), bool(boot) and row["marked_boot"] == boot)
                if fate == D.UNKNOWN:
                    self._one("mark_unknown", row["id"], "handed = 0, updated_at = ?, reply = ?",
                              (now, INTERRUPTED), D.UNKNOWN)
                    unknown += 1
                else:
                    self._one("release", row["id"], "handed = 0, updated_at = ?", (now,), D.PENDING)
        return unknown

    def retry(self, campaign_id: int, status: DeliveryStatus, now: str) -> int:
        """failed (or unknown) -> pending for a whole campaign: --retry-failed, --retry-unknown."""
        if str(status) not in delivery_transition("retry").sources:
            raise ValueError(f"only failed or unknown deliveries are retried, not {status}")
        with self.db.transaction():
            return self.conn.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = '', deferred_since = '', updated_at = ? "
                "WHERE campaign_id = ? AND status = ?",
                (now, campaign_id, str(status)),
            ).rowcount

    # -- the relay's daily quota -------------------------------------------------------

    def quota_reached_on(self) -> str:
        """The start (UTC ISO) of the last day on which the relay said its sending quota was used up."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'quota_reached'").fetchone()
        return row[0] if row else ""

    def record_quota(self, day_start: str) -> None:
        """The relay refused us for its sending quota today: no run tries again before tomorrow."""
        with self.db.transaction():
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('quota_reached', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (day_start,),
            )
