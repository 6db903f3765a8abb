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

M003_HISTORY_MAILBOX_CONSENT = """
-- What happened to a person and why, newest last: consent given, lists joined and left,
-- unsubscribes, bounces (at send time or returned later), complaints. Kinds stay open.
-- An event never holds an address; erasure unlinks the person's events and clears their
-- words, so a complaint still counts against its campaign, naming nobody.
CREATE TABLE subscriber_events (
    id            INTEGER PRIMARY KEY,
    subscriber_id INTEGER REFERENCES subscribers (id) ON DELETE SET NULL,
    time          TEXT NOT NULL,                -- UTC
    kind          TEXT NOT NULL,                -- added, consent, joined, left, unsubscribed, bounced, soft-bounce, complaint, ...
    list_name     TEXT NOT NULL DEFAULT '',     -- '' = not about one list
    campaign_id   INTEGER REFERENCES campaigns (id),
    delivery_id   INTEGER REFERENCES deliveries (id),
    detail        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX subscriber_events_of ON subscriber_events (subscriber_id, time);
CREATE INDEX subscriber_events_by_campaign ON subscriber_events (campaign_id, kind) WHERE campaign_id IS NOT NULL;

-- Every mail the inbox loop has handled, by its Message-ID (or a hash of its headers):
-- the same mailbox read twice changes nothing the second time.
CREATE TABLE inbox_messages (
    key           TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    processed_at  TEXT NOT NULL
) WITHOUT ROWID;

-- Where a resumable mailbox (an IMAP folder) was left: "UIDVALIDITY:UID".
CREATE TABLE inbox_cursors (
    name        TEXT PRIMARY KEY,
    position    TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) WITHOUT ROWID;

-- A bounce names the message it returns by its Message-ID.
CREATE INDEX deliveries_by_message_id ON deliveries (message_id) WHERE message_id != '';

-- The consent record beside source, opt-in time and IP (method: form, double-opt-in,
-- front-desk, import).
ALTER TABLE subscribers ADD COLUMN consent_method TEXT NOT NULL DEFAULT '';
ALTER TABLE subscribers ADD COLUMN consent_text TEXT NOT NULL DEFAULT '';
ALTER TABLE subscribers ADD COLUMN consent_version TEXT NOT NULL DEFAULT '';
ALTER TABLE subscribers ADD COLUMN consent_url TEXT NOT NULL DEFAULT '';
ALTER TABLE subscribers ADD COLUMN consent_user_agent TEXT NOT NULL DEFAULT '';
-- Lists the person left on purpose (',specials,'): an import never joins them again.
ALTER TABLE subscribers ADD COLUMN left_lists TEXT NOT NULL DEFAULT ',';

-- The letter as people read it (subject and body for a sample subscriber, normalised),
-- to find the same letter sent again under a new file name.
ALTER TABLE campaigns ADD COLUMN letter TEXT NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN allow_repeat INTEGER NOT NULL DEFAULT 0;
"""

# How far a message in 'sending' got, so that a crash is judged exactly (lifecycle.after_crash).
M004_DELIVERY_HANDOVER = """
-- 0: its 'sending' mark is on disk, nothing of its data has left; 1: its data may have.
ALTER TABLE deliveries ADD COLUMN handed INTEGER NOT NULL DEFAULT 0;
-- The machine's boot (Linux boot_id) when it was marked: a hand-over is recorded without
-- a disk sync, so after a restart an unhanded row cannot be trusted to be unsent.
ALTER TABLE deliveries ADD COLUMN marked_boot TEXT NOT NULL DEFAULT '';
"""

# Temporary refusals tried again across runs, and full mailboxes counted per person.
M005_DEFERRED_DELIVERIES = """
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
    ("m003_history_mailbox_consent", M003_HISTORY_MAILBOX_CONSENT),
    ("m004_delivery_handover", M004_DELIVERY_HANDOVER),
    ("m005_deferred_deliveries", M005_DEFERRED_DELIVERIES),
]
