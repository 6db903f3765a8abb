"""Ordered, named schema migrations. Append only: never edit one that has shipped."""

from __future__ import annotations

M001_INITIAL = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE subscribers (
    -- AUTOINCREMENT: an id is never given again, so an old unsubscribe link (it names the
    -- id) can never reach someone added after an erasure.
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    email               TEXT NOT NULL,              -- normalised: what we send to
    email_key           TEXT NOT NULL UNIQUE,       -- lower-cased normalised: one person
    email_entered       TEXT NOT NULL DEFAULT '',   -- as it stood in the file
    first_name          TEXT NOT NULL DEFAULT '',
    last_name           TEXT NOT NULL DEFAULT '',
    status              TEXT NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'unsubscribed', 'bounced')),
    lists               TEXT NOT NULL DEFAULT ',',  -- ',news,specials,': instr() finds ',news,'
    tags                TEXT NOT NULL DEFAULT ',',
    source              TEXT NOT NULL DEFAULT '',
    optin_time          TEXT NOT NULL DEFAULT '',
    optin_ip            TEXT NOT NULL DEFAULT '',
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    unsubscribed_at     TEXT NOT NULL DEFAULT '',
    unsubscribed_reason TEXT NOT NULL DEFAULT ''
);

-- Erased people: only a keyed hash (HMAC-SHA256 of the address key) remains.
CREATE TABLE suppressions (
    hash       TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
"""

M002_CAMPAIGNS = """
CREATE TABLE campaigns (
    id            INTEGER PRIMARY KEY,
    key           TEXT NOT NULL UNIQUE,        -- random; part of every Message-ID of the campaign
    name          TEXT NOT NULL,
    content_path  TEXT NOT NULL DEFAULT '',    -- the file it was made from (absolute)
    content_hash  TEXT NOT NULL,               -- sha256 of the snapshot
    content       TEXT NOT NULL,               -- snapshot of the content file
    templates     TEXT NOT NULL,               -- JSON snapshot {template name: source}
    template      TEXT NOT NULL,               -- news | specials
    subject       TEXT NOT NULL,
    list_name     TEXT NOT NULL,
    tags          TEXT NOT NULL DEFAULT ',',
    status        TEXT NOT NULL DEFAULT 'draft'
                  CHECK (status IN ('draft', 'scheduled', 'sending', 'paused', 'done', 'cancelled')),
    status_reason TEXT NOT NULL DEFAULT '',
    scheduled_at  TEXT NOT NULL DEFAULT '',    -- UTC
    created_at    TEXT NOT NULL,
    started_at    TEXT NOT NULL DEFAULT '',
    finished_at   TEXT NOT NULL DEFAULT ''
);

-- One row per (campaign, recipient), fixed when sending starts; committed after every reply.
CREATE TABLE deliveries (
    id             INTEGER PRIMARY KEY,
    campaign_id    INTEGER NOT NULL REFERENCES campaigns (id),
    subscriber_id  INTEGER REFERENCES subscribers (id) ON DELETE SET NULL,
    seq            INTEGER NOT NULL,            -- order of sending; n of outbox/<campaign>/<n>-<address>.eml
    email          TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'bounced', 'skipped', 'unknown')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    reply          TEXT NOT NULL DEFAULT '',    -- the server's last reply, or why it was skipped
    message_id     TEXT NOT NULL DEFAULT '',
    updated_at     TEXT NOT NULL,
    attempted_at   TEXT NOT NULL DEFAULT '',    -- last time it was handed to a server (daily cap)
    sent_at        TEXT NOT NULL DEFAULT '',
    UNIQUE (campaign_id, subscriber_id)
);
CREATE INDEX deliveries_todo ON deliveries (campaign_id, status, seq);
"""

# How far a message in 'sending' got, so that a crash is judged exactly (lifecycle.after_crash).
MXXX_DELIVERY_HANDOVER = """
-- 0: its 'sending' mark is on disk, nothing of its data has left; 1: its data may have.
ALTER TABLE deliveries ADD COLUMN handed INTEGER NOT NULL DEFAULT 0;
-- The machine's boot (Linux boot_id) when it was marked: a hand-over is recorded without
-- a disk sync, so after a restart an unhanded row cannot be trusted to be unsent.
ALTER TABLE deliveries ADD COLUMN marked_boot TEXT NOT NULL DEFAULT '';
"""

# Temporary refusals tried again across runs, and full mailboxes counted per person.
MXXX_DEFERRED_DELIVERIES = """
-- After a temporary refusal: not tried again before this time (UTC; '' = whenever a run comes).
ALTER TABLE deliveries ADD COLUMN next_attempt_at TEXT NOT NULL DEFAULT '';
-- The first temporary refusal; [sending] give_up_after later the delivery counts as failed.
ALTER TABLE deliveries ADD COLUMN deferred_since TEXT NOT NULL DEFAULT '';
-- Campaigns in a row that found this person's mailbox full, and the last one counted;
-- at 3 the address is suppressed (status bounced).
ALTER TABLE subscribers ADD COLUMN full_mailbox_campaigns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscribers ADD COLUMN full_mailbox_last_campaign INTEGER NOT NULL DEFAULT 0;
"""

# (name, SQL script). The position in this list is the schema version.
MIGRATIONS: list[tuple[str, str]] = [
    ("m001_initial", M001_INITIAL),
    ("m002_campaigns", M002_CAMPAIGNS),
    # Numbers given at merge: append only.
    ("mxxx_delivery_handover", MXXX_DELIVERY_HANDOVER),
    ("mxxx_deferred_deliveries", MXXX_DEFERRED_DELIVERIES),
]
