"""Optional DKIM signing, for people who run their own relay ([dkim] in mailer.toml).

A provider's relay (Gmail, Microsoft 365, SES, ...) signs for the practice; a relay of
one's own does not, and Gmail and Yahoo want every message signed. `Signer` loads the
private key once per campaign (a PEM file, mode 0600, never copied into the database)
and prepends a DKIM-Signature header to each rendered message with dkimpy:
rsa-sha256, relaxed/relaxed, over the headers a receiver judges a newsletter by.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dkim as dkimpy
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from .errors import ConfigError, InputError

if TYPE_CHECKING:
    from .config import Config, DkimConfig
    from .models import Subscriber
    from .render import RenderedMessage
    from .send import Renderer

# h=: what a receiver shows or acts on. Only those present are signed (signing an absent
# header would make any later, legitimate addition break the signature).
SIGNED_HEADERS: tuple[str, ...] = (
    "from", "to", "subject", "date", "message-id",
    "list-unsubscribe", "list-unsubscribe-post", "list-id",
)
MIN_BITS = 1024  # RFC 8301 §3.2: verifiers must not accept smaller RSA keys
GOOD_BITS = 2048  # what Google and Microsoft generate, and RFC 8301 recommends
_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")
_HEADER_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:", re.MULTILINE)


@dataclass(frozen=True)
class DkimKey:
    """An RSA private key read from its PEM file, and its public half."""

    path: Path
    pem: bytes
    modulus: int
    exponent: int

    @property
    def bits(self) -> int:
        """The key's size: 2048 is what receivers expect, under 1024 they ignore it."""
        return self.modulus.bit_length()

    def public_record(self) -> str:
        """The TXT record to publish at <selector>._domainkey.<domain> for this key."""
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(_spki(self.modulus, self.exponent)).decode("ascii")


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + body


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _spki(modulus: int, exponent: int) -> bytes:
    """DER SubjectPublicKeyInfo of an RSA key: the form DKIM's p= carries (RFC 6376 §3.6.1)."""
    rsa_oid = _der(0x06, bytes.fromhex("2a864886f70d010101")) + _der(0x05, b"")
    rsa_key = _der(0x30, _der_int(modulus) + _der_int(exponent))
    return _der(0x30, _der(0x30, rsa_oid) + _der(0x03, b"\x00" + rsa_key))


def load_private_key(path: Path) -> DkimKey:
    """Read and check a DKIM private key: it exists, only its owner can read it, it is RSA of 1024+ bits."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"[dkim] private_key_file {path} does not exist.",
            hint="Make one with `openssl genrsa -out dkim.pem 2048 && chmod 600 dkim.pem`, or empty [dkim] when your provider signs.",
        ) from None
    except OSError as exc:
        raise ConfigError(f"Cannot read the DKIM key {path}: {exc.strerror}.") from None
    if os.name != "nt" and st.st_mode & 0o077:
        raise ConfigError(
            f"The DKIM key {path} can be opened by other users of this machine (mode {stat.S_IMODE(st.st_mode):04o}), "
            f"so mailer will not use it: run `chmod 600 {path}`."
        )
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read the DKIM key {path}: {exc.strerror}.") from None
    try:
        key = parse_pem_private_key(pem.replace(b"\r\n", b"\n"))
    except (UnparsableKeyError, ValueError, IndexError):
        raise ConfigError(
            f"The DKIM key {path} is not an RSA private key in PEM form.",
            hint="Make one with `openssl genrsa -out dkim.pem 2048`.",
        ) from None
    found = DkimKey(path=path, pem=pem.replace(b"\r\n", b"\n"), modulus=key["modulus"], exponent=key["publicExponent"])
    if found.bits < MIN_BITS:
        raise ConfigError(
            f"The DKIM key {path} has {found.bits} bits; receivers ignore keys under {MIN_BITS} bits.",
            hint="Make a 2048-bit one with `openssl genrsa -out dkim.pem 2048` and publish its public key.",
        )
    return found


def key_path(config_dkim: DkimConfig, base_dir: Path | None = None) -> Path:
    """[dkim] private_key_file as a path; a relative one is relative to the workspace."""
    path = Path(config_dkim.private_key_file).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


class Signer:
    """Signs rendered messages for one campaign with the [dkim] key, loaded once."""

    def __init__(self, config_dkim: DkimConfig, domain: str, base_dir: Path | None = None):
        """Load and check the key of [dkim]; `domain` is the From domain (d=)."""
        selector = config_dkim.selector.strip()
        if not _SELECTOR.fullmatch(selector):
            raise ConfigError(f"[dkim] selector {selector!r} is not a DNS label like \"mail\" or \"2026a\".")
        try:
            self.domain = domain.strip().rstrip(".").encode("idna")
        except UnicodeError:
            raise ConfigError(f"The From domain {domain!r} is not a valid domain name.") from None
        self.selector = selector.encode("ascii")
        self.key = load_private_key(key_path(config_dkim, base_dir))

    def sign(self, data: bytes) -> bytes:
        """The message with a DKIM-Signature header prepended (its own line endings kept)."""
        head = data.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in data else data.split(b"\n\n", 1)[0]
        present = {m.group(1).lower().decode("ascii") for m in _HEADER_NAME.finditer(head)}
        if "from" not in present:
            raise InputError("A message without a From header cannot be signed.")
        include = [h.encode("ascii") for h in SIGNED_HEADERS if h in present]
        linesep = b"\r\n" if b"\r\n" in head else b"\n"
        signature = dkimpy.DKIM(data, linesep=linesep).sign(
            self.selector, self.domain, self.key.pem,
            signature_algorithm=b"rsa-sha256", canonicalize=(b"relaxed", b"relaxed"), include_headers=include,
        )
        return signature + data


def signer_for(config: Config, home: Path | None = None) -> Signer | None:
    """The campaign's Signer when [dkim] is configured, else None (the relay signs)."""
    if not config.dkim.selector:
        return None
    domain = config.sender.from_email.rpartition("@")[2]
    if not domain:
        raise ConfigError("[dkim] is set, but [sender] from_email is empty; DKIM signs for the From domain.")
    return Signer(config.dkim, domain, base_dir=home)


class SignedCampaign:
    """A compiled campaign whose every rendered message is DKIM-signed (the same interface)."""

    def __init__(self, compiled: Renderer, signer: Signer):
        self.compiled = compiled
        self.signer = signer

    def render(self, subscriber: Subscriber) -> RenderedMessage:
        """The compiled campaign's message for `subscriber`, with a DKIM-Signature header first."""
        message = self.compiled.render(subscriber)
        return dataclasses.replace(message, data=self.signer.sign(message.data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.compiled, name)
