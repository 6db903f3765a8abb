"""The mailbox samples of tests/data/inbox, with their tokens made valid at load time.

Each sample is a message written the way a real server or mail program writes it, with
placeholders where a signed token goes (a token depends on the workspace secret, so it
cannot be written down once):

    {{TOKEN:12:news:2026-11-25}}   an unsubscribe token for subscriber 12, list news, issued that day
    {{FORGED:25:news:2026-11-25}}  the same shape with a signature that does not verify
    {{VERP:4242}}                  a VERP token naming delivery 4242

`sample(name)` returns the bytes with every placeholder filled for SECRET.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from mailer.tokens import make_token, make_verp_token

SECRET = bytes(range(100, 132))
INBOX = Path(__file__).parent / "data" / "inbox"

_PLACEHOLDER = re.compile(r"\{\{(TOKEN|FORGED):(\d+):([a-z0-9_-]+):(\d{4}-\d\d-\d\d)\}\}|\{\{VERP:(\d+)\}\}")


def token(subscriber_id: int, list_name: str, issued: str = "2026-11-25", secret: bytes = SECRET) -> str:
    """The unsubscribe token a sample's placeholder stands for."""
    return make_token(secret, subscriber_id, list_name, date.fromisoformat(issued))


def forged(subscriber_id: int, list_name: str, issued: str = "2026-11-25") -> str:
    """A token whose payload is real but whose signature was made with another key."""
    return token(subscriber_id, list_name, issued, secret=b"somebody else's key")


def fill(text: str, secret: bytes = SECRET) -> str:
    """Replace every placeholder with a token signed with `secret`."""

    def one(match: re.Match) -> str:
        if match.group(5):
            return make_verp_token(secret, int(match.group(5)))
        kind, sub, list_name, issued = match.group(1, 2, 3, 4)
        if kind == "FORGED":
            return forged(int(sub), list_name, issued)
        return token(int(sub), list_name, issued, secret=secret)

    return _PLACEHOLDER.sub(one, text)


def sample(name: str, secret: bytes = SECRET) -> bytes:
    """The sample tests/data/inbox/<name>.txt (a mail with token placeholders), tokens filled in, as raw bytes."""
    text = (INBOX / f"{name}.txt").read_text(encoding="utf-8")
    return fill(text, secret).encode("utf-8")


def names() -> list[str]:
    """Every sample's name, sorted."""
    return sorted(p.stem for p in INBOX.glob("*.txt"))
