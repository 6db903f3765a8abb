"""Campaigns: their snapshot, audience and status; one method per transition of the lifecycle."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import NotFound
from ..lifecycle import NOT_STARTED, CampaignStatus, SubscriberStatus, Transition, campaign_transition, forbidden
from ..models import Campaign, SentSpan
from ..text import mask_addresses
from .db import pack, unpack
from .subscribers import filters

if TYPE_CHECKING:
    from .db import Store

COLUMNS = (
    "id, key, name, content_path, content_hash, content, templates, template, subject, list_name, tags, "
    "status, status_reason, scheduled_at, created_at, started_at, finished_at, letter, allow_repeat"
)
S = CampaignStatus


def campaign_from_row(row: sqlite3.Row) -> Campaign:
    """A stored row as a Campaign, read by column name."""
    return Campaign(
        id=row["id"], key=row["key"], name=row["name"], content_path=row["content_path"],
        content_hash=row["content_hash"], content=row["content"], templates=row["templates"],
        template=row["template"], subject=row["subject"], list_name=row["list_name"], tags=unpack(row["tags"]),
        status=CampaignStatus(row["status"]), status_reason=row["status_reason"],
        scheduled_at=row["scheduled_at"], created_at=row["created_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], letter=row["letter"], allow_repeat=bool(row["allow_repeat"]),
    )


def _in(values: Iterable[str]) -> tuple[str, list[str]]:
    values = [str(v) for v in values]
    return ",".join("?" * len(values)), values


class CampaignStore:
    """Campaigns, read by id or filter, changed only through the lifecycle's transitions."""

    def __init__(self, db: Store):
        self.db = db

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    # -- reading ----------------------------------------------------------------------

    def get(self, campaign_id: int) -> Campaign | None:
        row = self.conn.execute(f"SELECT {COLUMNS} FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
        return campaign_from_row(row) if row else None

    def status(self, campaign_id: int) -> CampaignStatus | None:
        """Only the status (the send engine asks between batches: the snapshot is large)."""
        row = self.conn.execute("SELECT status FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
        return CampaignStatus(row["status"]) if row else None

    def require(self, campaign_id: int) -> Campaign:
        c = self.get(campaign_id)
        if c is None:
            raise NotFound(f"There is no campaign {campaign_id}.", hint="See `mailer campaign list`.")
        return c

    def list(self, *, statuses: Iterable[str] = (), content_path: str | None = None) -> builtins.list[Campaign]:
        """Campaigns in the order they were made, of these statuses and from this file (when given)."""
        clauses, params = [], []
        statuses = tuple(statuses)
        if statuses:
            marks, values = _in(statuses)
            clauses.append(f"status IN ({marks})")
            params += values
        if content_path is not None:
            clauses.append("content_path = ?")
            params.append(content_path)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        return [
            campaign_from_row(r)
            for r in self.conn.execute(f"SELECT {COLUMNS} FROM campaigns{where} ORDER BY id", params)
        ]

    # -- creating ---------------------------------------------------------------------

    def create(self, draft: Campaign, now: str) -> Campaign:
        """Store a drafted campaign (content and templates snapshot, audience) as draft or scheduled."""
        status = S.SCHEDULED if draft.scheduled_at else S.DRAFT
        with self.db.transaction():
            cur = self.conn.execute(
                "INSERT INTO campaigns (key, name, content_path, content_hash, content, templates, template, "
                "subject, list_name, tags, status, scheduled_at, created_at, letter, allow_repeat) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (draft.key, draft.name, draft.content_path, draft.content_hash, draft.content, draft.templates,
                 draft.template, draft.subject, draft.list_name, pack(draft.tags), str(status),
                 draft.scheduled_at, now, draft.letter, int(draft.allow_repeat)),
            )
        assert cur.lastrowid is not None
        return self.require(cur.lastrowid)

    def update_snapshot(self, campaign: Campaign) -> None:
        """Take the content and templates again (only before the campaign has started)."""
        marks, values = _in(NOT_STARTED)
        with self.db.transaction():
            self.conn.execute(
                "UPDATE campaigns SET content = ?, content_hash = ?, templates = ?, subject = ?, template = ?, "
                f"letter = ? WHERE id = ? AND status IN ({marks})",
                (campaign.content, campaign.content_hash, campaign.templates, campaign.subject,
                 campaign.template, campaign.letter, campaign.id, *values),
            )

    def set_letter(self, campaign_id: int, letter: str) -> None:
        """Keep the letter's normalised text (for a campaign stored before it was kept)."""
        with self.db.transaction():
            self.conn.execute("UPDATE campaigns SET letter = ? WHERE id = ?", (letter, campaign_id))

    def allow_repeat(self, campaign_id: int) -> None:
        """A person said to send this campaign even though the same letter went out lately."""
        with self.db.transaction():
            self.conn.execute("UPDATE campaigns SET allow_repeat = 1 WHERE id = ?", (campaign_id,))

    # -- what went out ------------------------------------------------------------------

    def sent_since(self, since: str) -> builtins.list[tuple[Campaign, SentSpan]]:
        """Campaigns that reached somebody with a message sent at or after `since` (UTC ISO), oldest first."""
        rows = self.conn.execute(
            "SELECT campaign_id, min(sent_at) AS first, max(sent_at) AS last, count(*) AS n FROM deliveries "
            "WHERE status = 'sent' AND sent_at >= ? GROUP BY campaign_id ORDER BY campaign_id",
            (since,),
        ).fetchall()
        return [(self.require(r["campaign_id"]), SentSpan(r["first"], r["last"], r["n"])) for r in rows]

    def sent_spans(self) -> dict[int, SentSpan]:
        """For every campaign that sent something: its first and last message sent, and how many."""
        rows = self.conn.execute(
            "SELECT campaign_id, min(sent_at) AS first, max(sent_at) AS last, count(*) AS n FROM deliveries "
            "WHERE status = 'sent' GROUP BY campaign_id"
        )
        return {r["campaign_id"]: SentSpan(r["first"], r["last"], r["n"]) for r in rows}

    def last_sent_with_subject(self, subject: str, exclude: int = 0) -> tuple[Campaign, SentSpan] | None:
        """The campaign with this subject (compared without case) that most recently sent a message."""
        row = self.conn.execute(
            "SELECT d.campaign_id, min(d.sent_at) AS first, max(d.sent_at) AS last, count(*) AS n "
            "FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id "
            "WHERE d.status = 'sent' AND lower(trim(c.subject)) = lower(trim(?)) AND c.id != ? "
            "GROUP BY d.campaign_id ORDER BY last DESC LIMIT 1",
            (subject, exclude),
        ).fetchone()
        return (self.require(row["campaign_id"]), SentSpan(row["first"], row["last"], row["n"])) if row else None

    def reached(self, earlier_id: int, list_name: str, tags: Iterable[str]) -> int:
        """How many of the active subscribers on this list (and tags) a campaign was sent to
        (or may have reached: unknown)."""
        where, params = filters(SubscriberStatus.ACTIVE, list_name, tags, None)
        return int(self.conn.execute(
            f"SELECT count(*) FROM subscribers{where} AND id IN "
            "(SELECT subscriber_id FROM deliveries WHERE campaign_id = ? AND status IN ('sent', 'unknown'))",
            (*params, earlier_id),
        ).fetchone()[0])

    # -- transitions ------------------------------------------------------------------

    def _change(self, campaign_id: int, name: str, sets: dict[str, str]) -> Campaign:
        """Apply a transition of the table inside the current transaction, or raise TransitionError."""
        t: Transition = campaign_transition(name)
        (target,) = t.targets
        marks, sources = _in(t.sources)
        assignments = ", ".join(["status = ?"] + [f"{k} = ?" for k in sets])
        cur = self.conn.execute(
            f"UPDATE campaigns SET {assignments} WHERE id = ? AND status IN ({marks})",
            (target, *sets.values(), campaign_id, *sources),
        )
        if cur.rowcount != 1:
            row = self.conn.execute("SELECT status FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
            raise forbidden("campaign", campaign_id, t, row["status"] if row else None)
        return self.require(campaign_id)

    def _transition(self, campaign_id: int, name: str, **sets: str) -> Campaign:
        with self.db.transaction():
            return self._change(campaign_id, name, sets)

    def schedule(self, campaign_id: int, at: str) -> Campaign:
        """draft|scheduled -> scheduled at a time (UTC ISO)."""
        return self._transition(campaign_id, "schedule", scheduled_at=at, status_reason="")

    def unschedule(self, campaign_id: int) -> Campaign:
        """scheduled -> draft."""
        return self._transition(campaign_id, "unschedule", scheduled_at="", status_reason="")

    def start(self, campaign: Campaign, now: str) -> Campaign:
        """draft|scheduled -> sending, fixing the audience: one pending delivery per active subscriber.

        Both happen in one transaction, so an audience is fixed exactly once.
        """
        with self.db.transaction():
            where, params = filters(SubscriberStatus.ACTIVE, campaign.list_name, campaign.tags, None)
            started = self._change(campaign.id, "start", {"started_at": now, "status_reason": ""})
            self.conn.execute(
                "INSERT INTO deliveries (campaign_id, subscriber_id, seq, email, updated_at) "
                f"SELECT ?, id, row_number() OVER (ORDER BY id), email, ? FROM subscribers{where} ORDER BY id",
                (campaign.id, now, *params),
            )
            return started

    def pause(self, campaign_id: int, reason: str) -> Campaign:
        """sending -> paused, saying why (only a person's `mailer send ID` resumes it)."""
        return self._transition(campaign_id, "pause", status_reason=mask_addresses(reason))

    def resume(self, campaign_id: int) -> Campaign:
        """paused|done -> sending: a person asked to go on, or to retry what failed."""
        return self._transition(campaign_id, "resume", status_reason="", finished_at="")

    def finish(self, campaign_id: int, now: str) -> Campaign:
        """sending -> done."""
        return self._transition(campaign_id, "finish", finished_at=now)

    def cancel(self, campaign_id: int, now: str) -> Campaign:
        """Any unfinished state -> cancelled: it sends nothing more."""
        return self._transition(campaign_id, "cancel", finished_at=now)

    def mark_late(self, campaign_id: int, reason: str) -> None:
        """A scheduled campaign whose time passed too long ago: say so, and leave it for a person."""
        with self.db.transaction():
            self.conn.execute(
                "UPDATE campaigns SET status_reason = ? WHERE id = ? AND status = ?",
                (reason, campaign_id, str(S.SCHEDULED)),
            )
