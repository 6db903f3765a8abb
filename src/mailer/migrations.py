"""Ordered, named schema migrations. Append only: never edit one that has shipped."""

from __future__ import annotations

M001_INITIAL = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE subscribers (
    id                  INTEGER PRIMARY KEY,
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
CREATE INDEX subscribers_status ON subscribers (status);

-- Erased people: only a keyed hash (HMAC-SHA256 of the address key) remains.
CREATE TABLE suppressions (
    hash       TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
"""

# (name, SQL script). The position in this list is the schema version.
MIGRATIONS: list[tuple[str, str]] = [
    ("m001_initial", M001_INITIAL),
]
