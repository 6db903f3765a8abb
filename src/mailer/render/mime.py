"""The message on the wire: header encoding and folding, addresses, quoted-printable.

Subscriber data reaches headers only through these encoders, which cannot produce a
line break.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from datetime import UTC, tzinfo

from ..config import Config
from ..errors import ConfigError, TemplateError
from ..schedule import workspace_timezone
from ..text import CONTROL
from ..validate import InvalidValue, ascii_domain

CRLF = b"\r\n"

# C0, DEL, C1 controls and the Unicode line separators: never allowed into a header.
_HEADER_SAFE_ADDR = re.compile(r"^[^\x00-\x20\x7f-\x9f]+@[\x21-\x7e]+$")
_ADDR_SPECIALS = re.compile(r'[<>()\[\]\\,;:"\s]')
_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]*$")
MESSAGE_ID = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>$")


class QuotedPrintable:
    """Quoted-printable, line by line, remembering lines already encoded.

    QP keeps every line under 76 octets and a raw .eml readable. It works on each line
    alone, so the lines every subscriber shares (nearly all of the HTML) are encoded
    once per campaign instead of once per message: the biggest saving after Jinja.
    """

    def __init__(self, limit: int = 20_000):
        self.lines: dict[str, bytes] = {}
        self.limit = limit

    def __call__(self, text: str) -> bytes:
        lines = self.lines
        out = []
        # CRLF only after encoding, so a stray CR in the text cannot survive as a bare CR.
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        for line in text.split("\n"):
            encoded = lines.get(line)
            if encoded is None:
                encoded = binascii.b2a_qp(line.encode("utf-8", "replace"), istext=True).replace(b"\n", CRLF)
                if len(lines) < self.limit:
                    lines[line] = encoded
            out.append(encoded)
        return CRLF.join(out)


def clean_name(name: str) -> str:
    """A display name as a reader sees it: a line break or control character is just a space."""
    return " ".join(CONTROL.sub(" ", name).split())


# -- headers ---------------------------------------------------------------------------
#
# Written here rather than by the email package: the To header is made for every
# message, and the package's folder costs more than the rest of the message. The
# property tests in tests/test_render_headers.py parse every kind of name and subject
# back with the package's parser; they are what lets us keep our own writer.
#
# A header is a list of segments: ("text", token) is written as it is, a space before
# it; ("encode", text) becomes RFC 2047 encoded words. Lines are folded at those spaces
# to at most 78 characters where the tokens allow; a single token longer than a line
# (a link, an address) stands on a line of its own and is never cut.

MAX_LINE = 78  # RFC 5322 2.1.1: SHOULD; 998 is the MUST, which no line of ours comes near
MAX_WORD = 75  # RFC 2047 2: an encoded word is at most 75 characters
_OVERHEAD = len("=?utf-8?q??=")
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/ ")
_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$")
_ENCODED_LOOKALIKE = re.compile(r"=\?")
Segment = tuple[str, str]


class _QTable(dict):
    """str.translate table for RFC 2047 Q encoding (phrase-safe), filled in as characters are met."""

    def __missing__(self, code: int) -> str:
        c = chr(code)
        value = "_" if c == " " else c if c in _Q_SAFE else "".join(f"={b:02X}" for b in c.encode("utf-8", "replace"))
        if len(self) < 10_000:
            self[code] = value
        return value


_Q_TABLE = _QTable()


def _encoded_word(text: str) -> str:
    """text as one encoded word: Q when it is about as short as B (readable), else B (as the email package chooses)."""
    q = text.translate(_Q_TABLE)
    b = base64.b64encode(text.encode("utf-8", "replace")).decode("ascii")  # a lone surrogate becomes "?"
    return f"=?utf-8?q?{q}?=" if len(q) - len(b) < 5 else f"=?utf-8?b?{b}?="


def _fitting(text: str, room: int) -> int:
    """How many characters of text fit in one encoded word of at most room characters.

    Cut after a space when one is within reach: a reader that (against RFC 2047 6.2)
    keeps the space between two encoded words then shows a double space in a name,
    not a space inside a word. Never inside a character, so never inside a UTF-8 sequence.
    """
    if _OVERHEAD + len(text) <= room and all(c in _Q_SAFE for c in text):
        return len(text)  # plain text that fits: the usual last piece
    q = nbytes = fits = after_space = 0
    for i, c in enumerate(text):
        if c in _Q_SAFE:
            q += 1
            nbytes += 1
        else:
            n = len(c.encode("utf-8", "replace"))
            q += 3 * n
            nbytes += n
        b = 4 * ((nbytes + 2) // 3)
        if _OVERHEAD + (q if q - b < 5 else b) > room:
            return after_space or fits
        fits = i + 1
        if c == " ":
            after_space = fits
    return fits


def fold(name: str, segments: list[Segment]) -> str:
    """`Name: value` folded to lines of at most 78 characters (CRLF between them, none at the end)."""
    lines: list[str] = []
    line = name + ":"
    fresh = True  # nothing written on this line yet: a token goes here whatever its length
    for kind, value in segments:
        if kind == "text":
            if not fresh and len(line) + 1 + len(value) > MAX_LINE:
                lines.append(line)
                line = ""
            line += " " + value
            fresh = False
            continue
        text = value
        while text:
            room = min(MAX_WORD, MAX_LINE - len(line) - 1)
            if room < _OVERHEAD + 8:  # too little left for a useful word
                if not fresh:
                    lines.append(line)
                    line, fresh = "", True
                    continue
                room = MAX_WORD
            n = _fitting(text, room)
            line += " " + _encoded_word(text[:n])
            text = text[n:]
            fresh = False
    lines.append(line)
    return "\r\n".join(lines)


def header_line(name: str, segments: list[Segment]) -> bytes:
    """A folded header with its CRLF, as bytes (UTF-8 only where an address's local part is UTF-8)."""
    return fold(name, segments).encode("utf-8") + CRLF


def phrase(name: str, *, always_quote: bool = False) -> list[Segment]:
    """A display name as header segments: atoms, a quoted string, or encoded words.

    Quoted (or bare atoms) when it is printable ASCII; encoded when it holds anything
    else, or `=?`, which a reader might take for an encoded word.
    """
    name = clean_name(name)
    if not name:
        return []
    if _PRINTABLE_ASCII.match(name) and not _ENCODED_LOOKALIKE.search(name):
        words = name.split(" ")
        if not always_quote and all(_ATOM.match(w) for w in words):
            tokens = words
        else:
            quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
            tokens = quoted.split(" ")  # folding whitespace inside quotes is part of the name
        if all(len(t) < MAX_LINE for t in tokens):
            return [("text", t) for t in tokens]
    return [("encode", name)]


def unstructured(text: str) -> list[Segment]:
    """A Subject as header segments: plain ASCII words as they are, runs of other words encoded.

    Runs of spaces and tabs between words become one space: the places where a long
    header is folded must be whitespace, and a reader shows any run as one space.
    """
    segments: list[Segment] = []
    run: list[str] = []
    for word in re.split(r"[ \t]+", text.strip(" \t")):
        if _PRINTABLE_ASCII.match(word) and not _ENCODED_LOOKALIKE.search(word) and len(word) < MAX_LINE - 1:
            if run:
                segments.append(("encode", " ".join(run)))
                run = []
            segments.append(("text", word))
        else:
            run.append(word)
    if run:
        segments.append(("encode", " ".join(run)))
    return segments


def format_address(name: str, addr: str, header: str = "To") -> str:
    """`"Jane Doe" <jane@example.com>`, folded to follow `header: `, safe whatever the name holds.

    The whole name is always there: a long one is split over several encoded words
    (each at most 75 characters, cut between characters), never cut short. It can
    never add a line of its own.
    """
    name = clean_name(name)
    if not name:
        return addr
    if _PRINTABLE_ASCII.match(name) and "=?" not in name:
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(header) + len(quoted) + len(addr) + 5 <= MAX_LINE:  # the common case, quickly
            return f"{quoted} <{addr}>"
    elif len(name) <= 40:  # the common case of a name with an accent: one encoded word
        word = _encoded_word(name)
        if len(word) <= MAX_WORD and len(header) + len(word) + 2 <= MAX_LINE:
            if len(header) + len(word) + len(addr) + 5 <= MAX_LINE:
                return f"{word} <{addr}>"
            return f"{word}\r\n <{addr}>"
    return fold(header, phrase(name, always_quote=True) + [("text", f"<{addr}>")])[len(header) + 2:]


def header_addr(addr: str) -> str:
    """The address as it may stand in a header: the domain as ASCII (IDNA A-label), no spaces or specials.

    A non-ASCII local part stays UTF-8 (RFC 6532): such a message only goes to a server
    that offers SMTPUTF8, which the send engine checks before handing it over.
    """
    local, _, domain = addr.rpartition("@")
    try:
        domain = ascii_domain(domain)
    except InvalidValue:
        pass
    out = f"{local}@{domain}"
    if not _HEADER_SAFE_ADDR.match(out) or _ADDR_SPECIALS.search(out.replace('"', "")) or not local:
        raise TemplateError(f"The address {addr!r} cannot be put in a To header.")
    return out


def message_zone(config: Config) -> tzinfo:
    """The time zone of the Date header and of "today" in checks: [sending] timezone, else UTC.

    Without a configured zone the Date header is in UTC: the same message on every machine.
    """
    return workspace_timezone(config.sending.timezone) if config.sending.timezone else UTC


def check_uri(value: str, what: str) -> str:
    """A link from mailer.toml, refused when it holds spaces or characters a header cannot carry."""
    if CONTROL.search(value) or re.search(r"[\s<>\"]", value):
        raise ConfigError(f"{what} {value!r} contains spaces or characters a link cannot hold.")
    return value


def ascii_address(addr: str, what: str) -> str:
    """An address from the settings as headers and mailto: links carry it: the domain as an IDNA 2008 A-label.

    The same encoder as the To header and RCPT TO (`validate.ascii_domain`), so that
    `straße.example` is `xn--strae-oqa.example` everywhere. ConfigError naming `what`
    (the setting) when the address cannot be written in ASCII.
    """
    local, at, domain = addr.strip().rpartition("@")
    if not at or not local or not domain:
        raise ConfigError(f"{what} {addr!r} is not an email address.")
    if not local.isascii():
        raise ConfigError(
            f"{what} {addr!r} has non-ASCII characters before the @, which most mail servers refuse; use an ASCII address."
        )
    try:
        out = f"{local}@{ascii_domain(domain)}"
    except InvalidValue as exc:
        raise ConfigError(f"{what} ({addr!r}) cannot be used. {exc}") from None
    if not _HEADER_SAFE_ADDR.match(out) or _ADDR_SPECIALS.search(out) or len(out) > 254:
        raise ConfigError(f"{what} ({addr!r}) is not an address a mail header can carry (no spaces, quotes, commas or brackets).")
    return out


def ascii_url(url: str, what: str) -> str:
    """An https link from the settings in ASCII: its host as an IDNA 2008 A-label, other non-ASCII percent-encoded."""
    if url.isascii():
        return url
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host, colon, port = hostport.partition(":")
    try:
        host = ascii_domain(host)
    except InvalidValue as exc:
        raise ConfigError(f"{what} ({url!r}) cannot be used. {exc}") from None
    safe = "".join(chr(c) for c in range(0x21, 0x7F))  # leave ASCII as written, encode the rest
    netloc = urllib.parse.quote(userinfo, safe=safe) + at + host + colon + port
    rest = urllib.parse.quote(urllib.parse.urlunsplit(("", "", parts.path, parts.query, parts.fragment)), safe=safe)
    return f"{parts.scheme}://{netloc}{rest}"
