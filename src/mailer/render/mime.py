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
from email import policy
from email.message import EmailMessage
from typing import Any

from ..config import Config
from ..errors import ConfigError, TemplateError
from ..schedule import workspace_timezone
from ..validate import InvalidValue, ascii_domain

CRLF = b"\r\n"

# C0, DEL, C1 controls and the Unicode line separators: never allowed into a header.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
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
    return " ".join(_CONTROL.sub(" ", name).split())


def format_address(name: str, addr: str) -> str:
    """`"Jane Doe" <jane@example.com>` for a header, safe whatever the name holds.

    The name is quoted when it is plain printable ASCII, else (and whenever it holds
    `=?`, which a reader might decode) sent as one RFC 2047 encoded word. It can never
    add a line. A name too long for one header line is cut short there: readers join
    several encoded words differently, and the whole name is in the message anyway.
    """
    name = clean_name(name)
    if not name:
        return addr
    if _PRINTABLE_ASCII.match(name) and "=?" not in name:
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(quoted) + len(addr) + 8 <= 78:
            return f"{quoted} <{addr}>"
        if len(quoted) <= 72:
            return f"{quoted}\r\n <{addr}>"
    data = name.encode("utf-8", "replace")
    if len(data) > _WORD_BYTES:
        data = data[:_WORD_BYTES].decode("utf-8", "ignore").rstrip().encode("utf-8")
    return f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?=\r\n <{addr}>"


_WORD_BYTES = 45  # "To: " + "=?utf-8?b?" + 60 base64 characters + "?=" = 76 columns


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


def folded(headers: list[tuple[str, Any]]) -> bytes:
    """Headers folded and encoded by the email package (policy.SMTP: CRLF, RFC 2047)."""
    msg = EmailMessage(policy=policy.SMTP)
    for name, value in headers:
        msg[name] = value
    return b"".join(policy.SMTP.fold_binary(name, value) for name, value in msg.items())


def message_zone(config: Config) -> tzinfo:
    """The time zone of the Date header and of "today" in checks: [sending] timezone, else UTC.

    Without a configured zone the Date header is in UTC: the same message on every machine.
    """
    return workspace_timezone(config.sending.timezone) if config.sending.timezone else UTC


def check_uri(value: str, what: str) -> str:
    """A link from mailer.toml, refused when it holds spaces or characters a header cannot carry."""
    if _CONTROL.search(value) or re.search(r"[\s<>\"]", value):
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
        return f"{local}@{ascii_domain(domain)}"
    except InvalidValue as exc:
        raise ConfigError(f"{what} ({addr!r}) cannot be used. {exc}") from None


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
