"""`mailer check --dns`: are the From domain's SPF, DMARC and DKIM records right for this relay?

Receivers (Gmail and Yahoo since 2024) judge every message by three DNS records of the
sender's domain: SPF (may this relay send for the domain?), DKIM (is the signature's key
published?) and DMARC (what to do when neither matches the From domain). This module
looks them up with dnspython and says, record by record, what was found, whether it will
pass, and the TXT record to publish when it will not. It needs DNS: with no answer it
says so in one finding instead of guessing.

checkdmarc (PyPI) parses these records too, but brings a dozen dependencies (pyleri,
expiringdict, publicsuffixlist, requests, xmltodict, ...) and queries the public
internet itself; the few rules needed here are short enough to keep in view.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import dns.exception
import dns.resolver

from .dkim import GOOD_BITS, MIN_BITS, DkimKey, key_path, load_private_key
from .errors import MailerError
from .providers import FREE_MAIL_DOMAINS, Provider, free_mail_problem, provider_for_host, providers_for_host

if TYPE_CHECKING:
    from .config import Config

SPF_LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4: more DNS-querying terms than this is a permerror
DEFAULT_TIMEOUT = 5.0  # seconds for the whole check of one name


@dataclass(frozen=True)
class DnsFinding:
    """One row of `mailer check --dns`."""

    record: str  # "From domain" | "SPF" | "DMARC" | "DKIM" | "DNS"
    name: str  # the DNS name looked up
    found: str  # the record found, "" when there is none
    level: str  # "pass" | "warning" | "error" | "info" (not checked; no fault)
    verdict: str  # one sentence
    publish: str = ""  # the TXT record to publish (at `name`), "" when nothing is to change


class NoDnsAnswer(Exception):
    """No DNS server answered (no network, no resolver configured, or a timeout)."""


def make_resolver(nameserver: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> dns.resolver.Resolver:
    """A dnspython resolver: the system's, or the one at `nameserver` ("IP" or "IP:PORT").

    Raises NoDnsAnswer when the system has no resolver configured.
    """
    if nameserver:
        host, port = nameserver, 53
        if nameserver.count(":") == 1:  # "127.0.0.1:5353"; a bare IPv6 address has several
            host, _, p = nameserver.partition(":")
            port = int(p)
        elif nameserver.startswith("[") and "]:" in nameserver:  # "[::1]:5353"
            host, _, p = nameserver[1:].partition("]:")
            port = int(p)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    else:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            raise NoDnsAnswer("this machine has no DNS resolver configured") from None
    resolver.lifetime = timeout
    resolver.timeout = timeout
    return resolver


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[str] | None:
    """The TXT records at name (each one's strings joined); None when the name has none.

    Raises NoDnsAnswer when no server answers.
    """
    try:
        answer = resolver.resolve(name.rstrip(".") + ".", "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
        return None
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration, OSError) as exc:
        raise NoDnsAnswer(str(exc)) from None
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def dkim_dnsfunc(resolver: dns.resolver.Resolver) -> Callable[..., bytes | None]:
    """A `dnsfunc` for dkimpy's verify that looks keys up through `resolver`."""

    def get_txt(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii") if isinstance(name, bytes) else name
        try:
            records = txt_records(resolver, text)
        except NoDnsAnswer:
            return None
        return records[0].encode("utf-8") if records else None

    return get_txt


def _domain(email: str) -> str:
    domain = email.rpartition("@")[2].strip().rstrip(".").lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


# -- SPF ---------------------------------------------------------------------------------


@dataclass
class _SpfWalk:
    resolver: dns.resolver.Resolver
    expected: str | None
    lookups: int = 0
    included: bool = False
    problems: list[str] = field(default_factory=list)

    def walk(self, domain: str, record: str, seen: set[str]) -> None:
        """Count the DNS-querying terms of record and the records it includes, as a receiver would."""
        terms = record.split()[1:]
        has_all = any(t.lower().lstrip("+-~?") == "all" for t in terms)
        redirect = None
        for term in terms:
            t = term.lower()
            mech = t.lstrip("+-~?")
            if mech.startswith("include:"):
                self.lookups += 1
                target = mech[len("include:"):].rstrip(".")
                if self.expected and target == self.expected:
                    self.included = True
                self._follow(target, seen, "include")
            elif mech.startswith("redirect="):
                redirect = mech[len("redirect="):].rstrip(".")
            elif mech in ("a", "mx", "ptr") or mech.startswith(("a:", "a/", "mx:", "mx/", "ptr:", "exists:")):
                self.lookups += 1
        if redirect and not has_all:  # RFC 7208 §6.1: redirect is ignored when "all" is present
            self.lookups += 1
            if self.expected and redirect == self.expected:
                self.included = True
            self._follow(redirect, seen, "redirect")

    def _follow(self, target: str, seen: set[str], how: str) -> None:
        if target in seen or self.lookups > SPF_LOOKUP_LIMIT or "%" in target:
            return  # a loop, past the limit already, or a macro this check cannot expand
        seen.add(target)
        found = [r for r in (txt_records(self.resolver, target) or []) if _is_spf(r)]
        if len(found) != 1:
            self.problems.append(f"{how}:{target} has {'no' if not found else 'more than one'} SPF record")
            return
        self.walk(target, found[0], seen)


def _is_spf(text: str) -> bool:
    return text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")


def _with_include(record: str, include: str) -> str:
    head, _, rest = record.partition(" ")
    return f"{head} include:{include} {rest}".strip()


def check_spf(resolver: dns.resolver.Resolver, domain: str, relay: Provider | None, host: str) -> DnsFinding:
    """Does the SPF record of domain (the envelope sender's) let the relay send for it?"""
    expected = relay.spf_include if relay else None
    suggestion = f"v=spf1 include:{expected} ~all" if expected else ""
    records = [r for r in (txt_records(resolver, domain) or []) if _is_spf(r)]
    if not records:
        return DnsFinding(
            "SPF", domain, "", "error",
            f"{domain} has no SPF record, so receivers cannot tell that {host or 'your relay'} may send for it."
            + ("" if expected else " Ask your provider which include: to publish."),
            suggestion or "v=spf1 include:<your relay's SPF domain> ~all",
        )
    if len(records) > 1:
        return DnsFinding(
            "SPF", domain, " | ".join(records), "error",
            f"{domain} has {len(records)} SPF records; receivers treat that as an error (RFC 7208 §4.5): merge them into one.",
            suggestion,
        )
    record = records[0]
    walk = _SpfWalk(resolver, expected, problems=[])
    walk.walk(domain, record, {domain})
    terms = [t.lower() for t in record.split()[1:]]
    if "+all" in terms or "all" in terms:
        fixed = " ".join("~all" if t.lower() in ("+all", "all") else t for t in record.split())
        return DnsFinding(
            "SPF", domain, record, "error",
            f"The SPF record ends in {'+all' if '+all' in terms else 'all'}, which lets anyone send as {domain}: end it with ~all or -all.",
            _with_include(fixed, expected) if expected and not walk.included else fixed,
        )
    if walk.lookups > SPF_LOOKUP_LIMIT:
        return DnsFinding(
            "SPF", domain, record, "error",
            f"The SPF record needs more than {SPF_LOOKUP_LIMIT} DNS lookups ({walk.lookups} counted), so receivers treat it as an error "
            "(RFC 7208 §4.6.4): remove the include: of services you no longer use.",
        )
    if relay is not None and not walk.included:
        return DnsFinding(
            "SPF", domain, record, "error",
            f"The SPF record does not include {relay.spf_include}, so mail from {relay.label}'s servers fails SPF.",
            _with_include(record, relay.spf_include),
        )
    if walk.problems:
        return DnsFinding("SPF", domain, record, "error", f"The SPF record's {walk.problems[0]}, which receivers treat as an error (RFC 7208 §5.2).")
    if relay is None:
        return DnsFinding(
            "SPF", domain, record, "warning",
            f"Cannot tell whether this record covers your relay {host or '(no [smtp] host set)'}: mailer has no preset for it. "
            "Check its documentation for the include: to publish.",
        )
    ends = [t for t in terms if t.lstrip("~-?") == "all" or t.startswith("redirect=")]
    if not ends:
        return DnsFinding(
            "SPF", domain, record, "warning",
            f"The record includes {relay.spf_include} but has no ~all or -all at its end, so it says nothing about other senders.",
            record + " ~all",
        )
    return DnsFinding("SPF", domain, record, "pass", f"Includes {relay.spf_include} ({walk.lookups} of {SPF_LOOKUP_LIMIT} DNS lookups).")


# -- DMARC -------------------------------------------------------------------------------


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    return tags


def check_dmarc(resolver: dns.resolver.Resolver, domain: str) -> DnsFinding:
    """The DMARC policy that applies to domain: its own, or its parent's (organizational domain)."""
    labels = domain.split(".")
    # The organizational domain really comes from the public suffix list; walking up to
    # the last two labels finds it for the usual .com/.org/.net practice domains.
    for i in range(0, max(1, len(labels) - 1)):
        at = ".".join(labels[i:])
        records = [r for r in (txt_records(resolver, f"_dmarc.{at}") or []) if r.lower().replace(" ", "").startswith("v=dmarc1")]
        if records:
            break
    else:
        return DnsFinding(
            "DMARC", f"_dmarc.{domain}", "", "warning",
            f"{domain} has no DMARC record: Gmail and Yahoo require one of bulk senders, and without it anyone can send as {domain} unnoticed.",
            f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}",
        )
    name = f"_dmarc.{at}"
    if len(records) > 1:
        return DnsFinding("DMARC", name, " | ".join(records), "error", f"{name} has {len(records)} DMARC records; receivers ignore them all (RFC 7489 §6.6.3): keep one.")
    record = records[0]
    tags = _tags(record)
    policy = tags.get("sp", tags.get("p")) if at != domain else tags.get("p")
    if policy not in ("none", "quarantine", "reject"):
        return DnsFinding(
            "DMARC", name, record, "error",
            "The DMARC record has no valid p= policy (none, quarantine or reject), so receivers ignore it.",
            f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{at}",
        )
    whose = "" if at == domain else f" (the policy of {at}, which covers {domain})"
    if "rua" not in tags:
        return DnsFinding(
            "DMARC", name, record, "warning",
            f"p={policy}{whose}, but no rua= address: nobody receives the reports of who sends as your domain.",
            record.rstrip("; ") + f"; rua=mailto:dmarc-reports@{at}",
        )
    if policy == "none":
        return DnsFinding(
            "DMARC", name, record, "pass",
            f"p=none{whose}: enough for Gmail's and Yahoo's sender rules; reports go to {tags['rua']}. "
            "Once they show only your own relays, p=quarantine keeps others from sending as you.",
        )
    return DnsFinding("DMARC", name, record, "pass", f"p={policy}{whose}; reports go to {tags['rua']}.")


# -- DKIM --------------------------------------------------------------------------------


def _key_bits(p: str) -> int:
    from dkim.crypto import UnparsableKeyError, parse_public_key

    try:
        return parse_public_key(base64.b64decode(p, validate=False))["modulus"].bit_length()
    except (UnparsableKeyError, binascii.Error, ValueError, IndexError):
        return 0


def _key_modulus(p: str) -> int | None:
    from dkim.crypto import UnparsableKeyError, parse_public_key

    try:
        return parse_public_key(base64.b64decode(p))["modulus"]
    except (UnparsableKeyError, binascii.Error, ValueError, IndexError):
        return None


def check_dkim_key(
    resolver: dns.resolver.Resolver, domain: str, selector: str, key: DkimKey | None = None, publish: str = ""
) -> DnsFinding:
    """The public key at <selector>._domainkey.<domain>: there, RSA, 1024 bits or more, and `key`'s own."""
    name = f"{selector}._domainkey.{domain}"
    records = txt_records(resolver, name)
    if not records:
        return DnsFinding("DKIM", name, "", "error", f"No DKIM key is published at {name}, so receivers cannot verify the signatures.", publish)
    record = records[0]
    tags = _tags(record)
    p = "".join(tags.get("p", "").split())
    short = record if len(record) <= 60 else record[:57] + "..."
    if not p:
        return DnsFinding("DKIM", name, short, "error", "The key is revoked (empty p=): signatures made with this selector fail.", publish)
    if tags.get("k", "rsa").lower() != "rsa":
        return DnsFinding("DKIM", name, short, "error", f"The key is k={tags['k']}, not RSA; mailer signs with rsa-sha256.", publish)
    bits = _key_bits(p)
    if not bits:
        return DnsFinding("DKIM", name, short, "error", "The p= value is not an RSA public key; publish it again from the key file.", publish)
    if key is not None and _key_modulus(p) != key.modulus:
        return DnsFinding("DKIM", name, short, "error", f"The published key is not the public half of {key.path}, so every signature fails.", publish)
    if bits < MIN_BITS:
        return DnsFinding("DKIM", name, short, "error", f"The key has {bits} bits; receivers ignore keys under {MIN_BITS} bits (RFC 8301).", publish)
    if bits < GOOD_BITS:
        return DnsFinding("DKIM", name, short, "warning", f"The key has {bits} bits; it is accepted, but {GOOD_BITS} bits is what receivers now expect.", publish)
    return DnsFinding("DKIM", name, short, "pass", f"An RSA key of {bits} bits" + (f", the public half of {key.path.name}." if key else "."))


def _dkim_findings(config: Config, resolver: dns.resolver.Resolver, domain: str, relay: Provider | None, home: Path | None) -> list[DnsFinding]:
    if config.dkim.selector:
        try:
            key = load_private_key(key_path(config.dkim, home))
        except MailerError as exc:
            name = f"{config.dkim.selector}._domainkey.{domain}"
            return [DnsFinding("DKIM", name, "", "error", exc.message)]
        return [check_dkim_key(resolver, domain, config.dkim.selector, key, key.public_record())]
    # Presets sharing the relay's servers (personal Gmail, Workspace) pool their selectors:
    # a custom domain sent through smtp.gmail.com is a Workspace domain.
    signers = [p for p in providers_for_host(config.smtp.host) if p.dkim_selectors]
    selectors = [s for p in signers for s in p.dkim_selectors]
    if not selectors:
        who = relay.label if relay else "your relay"
        return [DnsFinding(
            "DKIM", f"<selector>._domainkey.{domain}", "", "info",
            f"Not checked: {who} signs with a selector of its own. Turn DKIM on in its console and publish the records it gives.",
        )]
    for selector in selectors:
        if txt_records(resolver, f"{selector}._domainkey.{domain}"):
            return [check_dkim_key(resolver, domain, selector)]
    label = signers[0].label
    return [DnsFinding(
        "DKIM", f"{selectors[0]}._domainkey.{domain}", "", "warning",
        f"No DKIM key for {label} at {', '.join(s + '._domainkey.' + domain for s in selectors)}: "
        f"turn DKIM signing on in {label}'s admin console and publish the record it gives.",
        "(the record your provider's console shows)",
    )]


# -- all together ------------------------------------------------------------------------


def check_sender_dns(config: Config, resolver: dns.resolver.Resolver | None = None, home: Path | None = None) -> list[DnsFinding]:
    """SPF, DMARC and DKIM of the From domain, judged against the relay in [smtp] host.

    `resolver` is a dnspython Resolver (default: the system's, see `make_resolver`);
    `home` is the workspace, for a relative [dkim] private_key_file. When no DNS server
    answers, the result is one "DNS" warning: the check needs DNS, and says so.
    """
    from_email = config.sender.from_email.strip()
    if not from_email or "@" not in from_email:
        return [DnsFinding("From domain", "", "", "error", "[sender] from_email is empty; set it to the address you send from.")]
    domain = _domain(from_email)
    host = config.smtp.host.strip()
    relay = provider_for_host(host) if host else None
    problem = free_mail_problem(from_email, host)
    if problem:
        return [DnsFinding("From domain", domain, "", "error", problem)]
    if domain in FREE_MAIL_DOMAINS:
        return [DnsFinding(
            "From domain", domain, "", "pass",
            f"{domain} is a free-mail domain sent through its own servers; its records are the provider's, not yours to publish.",
        )]
    envelope = _domain(config.smtp.envelope_from) if "@" in config.smtp.envelope_from else domain
    try:
        if resolver is None:
            resolver = make_resolver()
        findings = [check_spf(resolver, envelope, relay, host), check_dmarc(resolver, domain)]
        findings += _dkim_findings(config, resolver, domain, relay, home)
    except NoDnsAnswer as exc:
        return [DnsFinding(
            "DNS", domain, "", "warning",
            f"Cannot check: no DNS answer ({exc}). `mailer check --dns` needs to reach a DNS server; run it on a machine online.",
        )]
    return findings
