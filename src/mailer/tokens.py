"""Unsubscribe tokens: short, URL-safe, signed with the workspace secret, checked offline.

A token names a subscriber (by id), the list the message went to and the day it was
issued, and carries an HMAC-SHA256 over those three. Anyone holding secret.key can
verify a token without the network or the database; nobody without it can make one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from datetime import date
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import InputError
from .text import LIST_NAME

# Domain separation: the same secret also keys the erased-address hashes.
_PURPOSE = b"mailer unsubscribe token v1\x00"
_MAC_BYTES = 12  # 96 bits: far beyond guessing, and keeps the link short
_SHAPE = re.compile(r"^[A-Za-z0-9_-]{4,200}\.[A-Za-z0-9_-]{16}$")


class TokenInfo(NamedTuple):
    """What a valid token says."""

    subscriber_id: int
    list_name: str
    issued: date


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _payload(subscriber_id: int, list_name: str, issued: date) -> bytes:
    return f"{subscriber_id}:{list_name}:{issued:%Y%m%d}".encode("ascii")


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _PURPOSE + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def make_token(secret: bytes, subscriber_id: int, list_name: str, issued: date) -> str:
    """A signed unsubscribe token for one subscriber, list and issue date (URL-safe, ~40 characters)."""
    if not isinstance(subscriber_id, int) or subscriber_id < 0:
        raise ValueError(f"subscriber_id must be a non-negative int, not {subscriber_id!r}")
    if not LIST_NAME.match(list_name):
        raise ValueError(f"not a list name: {list_name!r}")
    payload = _payload(subscriber_id, list_name, issued)
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def verify_token(secret: bytes, token: str) -> TokenInfo:
    """Check a token's signature and read it; InputError if it was altered or is not a token."""
    bad = InputError(
        "This unsubscribe token is not valid: it was changed, cut short, or made for another workspace.",
        hint="Copy the whole token from the link (everything after 'token=' or 'unsubscribe ').",
    )
    token = token.strip()
    if not _SHAPE.match(token):
        raise bad
    body, _, _ = token.partition(".")
    try:
        payload = _unb64(body)
        id_text, list_name, day = payload.decode("ascii").split(":")
        info = TokenInfo(int(id_text), list_name, date(int(day[:4]), int(day[4:6]), int(day[6:8])))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    try:
        expected = make_token(secret, info.subscriber_id, info.list_name, info.issued)
    except ValueError:
        raise bad from None
    # Comparing the whole re-made token (not just the MAC) also rejects a token whose
    # base64 differs only in unused padding bits: every changed byte makes it invalid.
    if not hmac.compare_digest(expected.encode("ascii"), token.encode("ascii")):
        raise bad
    return info


# -- VERP: the bounce address names the delivery ------------------------------------------

_VERP_PURPOSE = b"mailer verp token v1\x00"
_VERP_MAC_BYTES = 10  # 80 bits, 16 base32 characters
# Lower case only: some relays and mailbox servers change the case of a local part, so
# the token must read the same whatever case it comes back in.
_VERP_SHAPE = re.compile(r"^d([0-9a-z]{1,13})-([a-z2-7]{16})$")


def _verp_mac(secret: bytes, delivery_id: int) -> str:
    digest = hmac.new(secret, _VERP_PURPOSE + str(delivery_id).encode("ascii"), hashlib.sha256).digest()
    return base64.b32encode(digest[:_VERP_MAC_BYTES]).decode("ascii").lower()


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def make_verp_token(secret: bytes, delivery_id: int) -> str:
    """A signed token naming one delivery, for a bounce address `bounces+TOKEN@domain`.

    Letters, digits and one hyphen, lower case: valid in any local part and unharmed
    by servers that fold its case. At most 31 characters.
    """
    if not isinstance(delivery_id, int) or delivery_id < 0 or delivery_id >= 36**13:
        raise ValueError(f"delivery_id must be a non-negative int, not {delivery_id!r}")
    return f"d{_base36(delivery_id)}-{_verp_mac(secret, delivery_id)}"


def looks_like_verp_token(text: str) -> bool:
    """Has text the shape of a VERP token (whether or not its signature is good)?"""
    return bool(_VERP_SHAPE.match(text.strip().lower()))


def verify_verp_token(secret: bytes, token: str) -> int:
    """The delivery id a VERP token names; InputError if it was altered or is not one."""
    bad = InputError("This bounce address token is not valid: it was changed or made for another workspace.")
    match = _VERP_SHAPE.match(token.strip().lower())
    if not match:
        raise bad
    delivery_id = int(match.group(1), 36)
    # Only the canonical spelling (no leading zeros) is one we made.
    if match.group(1) != _base36(delivery_id) or delivery_id >= 36**13 or not hmac.compare_digest(_verp_mac(secret, delivery_id), match.group(2)):
        raise bad
    return delivery_id
_SUBJECT = re.compile(r"unsubscribe(?:\s+|%20)([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", re.IGNORECASE)
_LINK = re.compile(r"<?(?:mailto:|https?://)[^\s<>]+>?", re.IGNORECASE)


def token_from(pasted: str) -> str:
    """The token in what a person pasted: the bare token, an unsubscribe mail's subject
    ("unsubscribe TOKEN", also after "Re:"), the whole mailto: link, or the https link
    with token=. Anything else is returned as it is (verify_token then says it is not valid).
    """
    text = pasted.strip().strip("<>").strip()
    # A whole line pasted from a message ("Unsubscribe: mailto:...", "... <https://...>"):
    # the link in it is what counts.
    inner = _LINK.search(text)
    if inner and inner.start() > 0:
        text = inner.group(0).strip("<>")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        found = parse_qs(parts.query).get("token")
        if found:
            return found[0].strip()
    elif scheme == "mailto":
        query = parse_qs(parts.query)
        text = (query.get("subject") or [unquote(parts.query)])[0]
    match = _SUBJECT.search(text)
    return match.group(1) if match else text
