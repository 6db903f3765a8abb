"""Rules about text that several layers share: what may reach a mail header, a list's name."""

from __future__ import annotations

import re
import unicodedata

# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: none may reach
# a mail header (a line break there would add headers of its own) or a terminal.
# The bidirectional overrides and isolates (U+202A-E, U+2066-9) are refused with them: they
# make a terminal or a mail program show text other than what is stored.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# The same, but a tab is allowed (text fields of a content file).
CONTROL_BUT_TAB = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

# A list's name: it travels in unsubscribe tokens and List-Id headers.
LIST_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")


def has_control(text: str) -> bool:
    """Does text hold a line break or another control character?"""
    return CONTROL.search(text) is not None


def slug(text: str, max_len: int = 60) -> str:
    """A name that is safe as one file name: letters, digits, `.`, `-`, `_`; never `..` or a leading dot.

    Campaign names become folder names under outbox/, so `../../precious` must not climb out.
    """
    s = unicodedata.normalize("NFKC", text)
    s = re.sub(r"[^\w.-]+", "-", s)
    s = re.sub(r"\.{2,}", ".", s)
    s = re.sub(r"-{2,}", "-", s).strip(".-_")
    return s[:max_len].rstrip(".-_") or "campaign"


_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:@]+@[^\s<>()\[\]\"',;:]+")


def mask_addresses(text: str) -> str:
    """Every email address in a text (a server's reply, a bounce's words) replaced by `address`.

    Replies are kept for months in the delivery log and the run log; the row they belong
    to already names the person, and an erasure must leave no address behind.
    """
    return _ADDRESS.sub("address", text) if "@" in text else text
