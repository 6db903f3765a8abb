"""Provider presets: the SMTP relays a small practice uses, as data.

One table feeds `mailer init --provider NAME` ([smtp] and the [sending] limits), the
sender-authentication check (the SPF include to expect of each relay, the free-mail
domains only a provider's own relay may send as) and the HIPAA check (which providers
offer a business associate agreement). The README's provider table is generated from it
(`python -m mailer.providers --markdown`), and a test keeps the two equal.

Limits are set below each provider's published figure, on purpose: the practitioner's
own mail from the same account counts against the same quota, and a relay that sees its
limit reached suspends the account, not just the campaign. Every figure cites its page.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any


@dataclass(frozen=True)
class Provider:
    """One relay's settings and facts, as `mailer init --provider NAME` uses them."""

    name: str  # the preset name: `--provider gmail`
    label: str  # in sentences and the README: "personal Gmail"
    operator: str  # who runs the relay; presets of one operator share its servers
    host: str
    port: int
    security: str  # ssl | starttls
    rate: float  # messages per minute
    per_day: int
    spf_include: str  # the `include:` the From domain's SPF record needs for this relay
    baa: bool  # does the provider offer a HIPAA business associate agreement?
    baa_note: str  # how, or why not, in a few words
    notes: str  # the README's notes column
    hosts: tuple[str, ...] = ()  # host names (or suffixes after a dot) of this relay
    own_domains: frozenset[str] = frozenset()  # free-mail From domains that are this provider's own
    dkim_selectors: tuple[str, ...] = ()  # fixed selectors the relay signs with, when it has some

    def matches_host(self, host: str) -> bool:
        """Is `host` one of this relay's SMTP servers?"""
        host = _norm(host)
        return any(host == h or host.endswith("." + h) or _pattern(h, host) for h in self.hosts or (self.host,))


def _pattern(pattern: str, host: str) -> bool:
    # "email-smtp.*.amazonaws.com": one label of any region in place of the star.
    return "*" in pattern and re.fullmatch(re.escape(pattern).replace(r"\*", r"[a-z0-9-]+"), host) is not None


def _norm(host: str) -> str:
    return host.strip().rstrip(".").lower()


PROVIDERS: tuple[Provider, ...] = (
    # Gmail sending limits (personal accounts): 500 recipients a day; over SMTP at most
    # 100 recipients per message. https://support.google.com/mail/answer/22839 (as quoted
    # by https://ggappslegacy.com/gmail-doesnt-send-email-messages/: "500 for consumer
    # Gmail"). Google publishes no per-minute figure; 20 a minute spreads 400 over 20
    # minutes. BAA: Google signs none for free @gmail.com accounts:
    # https://support.google.com/a/answer/3407054 (BAA for Google Workspace customers
    # only) and https://www.hipaasecurenow.com/index.php/google-will-sign-a-baa-but-it-will-cost-you/
    Provider(
        name="gmail", label="personal Gmail", operator="Google",
        host="smtp.gmail.com", port=587, security="starttls", rate=20, per_day=400,
        spf_include="_spf.google.com",
        baa=False, baa_note="Google signs no BAA for free @gmail.com accounts",
        notes="app password; Google allows 500 a day, 400 leaves room for your own mail",
        hosts=("smtp.gmail.com", "smtp.googlemail.com"),
        own_domains=frozenset({"gmail.com", "googlemail.com"}),
    ),
    # Gmail sending limits in Google Workspace: 2,000 messages a day, 500 for trial
    # accounts, and a new paid account keeps the trial limits until the domain has paid
    # USD 100 and 60 days have passed: https://support.google.com/a/answer/166852 and
    # https://knowledge.workspace.google.com/kb/how-to-confirm-gmail-sending-limits-after-upgrading-from-a-free-trial-account-to-a-paid-subscription-000006733
    # So the preset assumes the 500: a small practice takes months to reach USD 100.
    # BAA: accepted in the Admin console: https://support.google.com/a/answer/3407054
    Provider(
        name="workspace", label="Google Workspace", operator="Google",
        host="smtp.gmail.com", port=587, security="starttls", rate=20, per_day=400,
        spf_include="_spf.google.com",
        baa=True, baa_note="accept the HIPAA Business Associate Amendment in the Admin console",
        notes="app password; 500 a day until your domain has paid USD 100 for 60 days, then 2,000: raise per_day then",
        hosts=("smtp.gmail.com", "smtp-relay.gmail.com", "smtp.googlemail.com"),
        dkim_selectors=("google",),
    ),
    # Sending limits in Outlook.com: Microsoft 365 subscribers 5,000 recipients a day
    # (1,000 of them new), "lower for non-subscribers":
    # https://support.microsoft.com/office/sending-limits-in-outlook-com-279ee200-594c-40f0-9ec8-bb6af7735c2e
    # The free account's figure, 300 a day, is from https://www.msoutlook.info/question/235
    # BAA: Microsoft's BAA covers its commercial cloud services, not consumer Outlook.com:
    # https://www.hipaajournal.com/microsoft-outlook-hipaa-compliant/
    Provider(
        name="outlook", label="Outlook.com", operator="Microsoft",
        host="smtp-mail.outlook.com", port=587, security="starttls", rate=20, per_day=250,
        spf_include="spf.protection.outlook.com",
        baa=False, baa_note="Microsoft's BAA does not cover consumer Outlook.com accounts",
        notes="about 300 a day for a free account (5,000 with a Microsoft 365 subscription)",
        hosts=("smtp-mail.outlook.com", "smtp.live.com"),
        own_domains=frozenset({
            "outlook.com", "hotmail.com", "live.com", "msn.com",
            "hotmail.co.uk", "hotmail.fr", "live.co.uk", "outlook.fr",
        }),
    ),
    # Exchange Online limits: 30 messages a minute (SMTP client submission) and 10,000
    # recipients a day per mailbox:
    # https://learn.microsoft.com/office365/servicedescriptions/exchange-online-service-description/exchange-online-limits#sending-limits-1
    # BAA: part of Microsoft's Online Services terms for Office 365 / Microsoft 365:
    # https://www.hipaajournal.com/microsoft-outlook-hipaa-compliant/
    Provider(
        name="m365", label="Microsoft 365", operator="Microsoft",
        host="smtp.office365.com", port=587, security="starttls", rate=25, per_day=8000,
        spf_include="spf.protection.outlook.com",
        baa=True, baa_note="included in Microsoft's Online Services terms for Microsoft 365",
        notes="30 a minute and 10,000 recipients a day per mailbox; Microsoft asks bulk senders to use a bulk service",
        hosts=("smtp.office365.com", "outlook.office365.com"),
        dkim_selectors=("selector1", "selector2"),
    ),
    # Service quotas in Amazon SES: in the sandbox 200 messages per 24 hours and 1 a
    # second; out of it, whatever AWS grants the account:
    # https://docs.aws.amazon.com/ses/latest/dg/quotas.html
    # SPF for a custom MAIL FROM domain: include:amazonses.com.
    # BAA: SES is a HIPAA-eligible service under the AWS BAA (since 2019):
    # https://luxsci.com/blog/is-amazon-simple-email-service-hipaa-compliant.html
    Provider(
        name="ses", label="Amazon SES", operator="Amazon",
        host="email-smtp.REGION.amazonaws.com", port=587, security="starttls", rate=50, per_day=200,
        spf_include="amazonses.com",
        baa=True, baa_note="SES is HIPAA-eligible under the AWS Business Associate Addendum, accepted in AWS Artifact",
        notes="replace REGION (e.g. us-east-1); SMTP credentials, not AWS keys; the sandbox allows 200 a day: raise per_day to your quota",
        hosts=("email-smtp.*.amazonaws.com",),
    ),
    # Mailgun: volume by plan; the free plan is capped per day (100) and Mailgun
    # notifies at 75% of it: https://www.mailgun.com/blog/weekly-product-update-improved-notifications-for-email-limits/
    # and plan volumes at https://help.mailgun.com/hc/en-us/articles/6745531451547
    # BAA: Mailgun publishes a HIPAA Business Associate Addendum to its Terms of Service
    # (https://www.mailgun.com/legal/hipaa-baa/, mirrored at
    # https://mailingeasy.com/legal/hipaa-baa) and says PHI needs a signed BAA:
    # https://www.mailgun.com/resources/learn/glossary/hipaa
    Provider(
        name="mailgun", label="Mailgun", operator="Mailgun",
        host="smtp.mailgun.org", port=587, security="starttls", rate=60, per_day=100,
        spf_include="mailgun.org",
        baa=True, baa_note="Mailgun's HIPAA Business Associate Addendum, signed with your plan",
        notes="per_day fits the free plan; raise it to your plan's volume",
        hosts=("smtp.mailgun.org", "smtp.eu.mailgun.org"),
    ),
    # Fastmail: "fair use" sending limits by plan, no figure on the page I could read:
    # https://www.fastmail.com/help/account/limits.html . Without a published number
    # the preset stays at personal-mailbox levels (300 a day, 20 a minute).
    # BAA: Fastmail's privacy page names GDPR and the Australian Privacy Principles, not
    # HIPAA (https://fastmail.help/hc/en-us/articles/6049922252943-Fastmail-privacy);
    # "explicitly not available": https://businessemailhosting.net/glossary/baa/
    Provider(
        name="fastmail", label="Fastmail", operator="Fastmail",
        host="smtp.fastmail.com", port=465, security="ssl", rate=20, per_day=300,
        spf_include="spf.messagingengine.com",
        baa=False, baa_note="Fastmail does not sign BAAs",
        notes="app password; Fastmail publishes no daily figure, so per_day is kept low",
        hosts=("smtp.fastmail.com", "smtp.messagingengine.com"),
        own_domains=frozenset({"fastmail.com", "fastmail.fm"}),
        dkim_selectors=("fm1", "fm2", "fm3"),
    ),
    # Postmark: volume by monthly plan, no published per-second or daily limit for SMTP
    # (https://postmarkapp.com/support/article/do-we-have-rate-limits-for-smtp).
    # Newsletters go through a Broadcast message stream, whose SMTP server is
    # smtp-broadcasts.postmarkapp.com (587, STARTTLS):
    # https://postmarkapp.com/support/article/811-what-are-the-smtp-details-api-tokens-i-should-be-using
    # BAA: none offered; Postmark's security and privacy pages
    # (https://postmarkapp.com/eu-privacy) offer a GDPR DPA, no HIPAA BAA.
    Provider(
        name="postmark", label="Postmark", operator="Postmark",
        host="smtp-broadcasts.postmarkapp.com", port=587, security="starttls", rate=60, per_day=0,
        spf_include="spf.mtasv.net",
        baa=False, baa_note="Postmark does not sign BAAs",
        notes="use a Broadcast stream's SMTP token; volume by monthly plan, no daily cap",
        hosts=("smtp.postmarkapp.com", "smtp-broadcasts.postmarkapp.com"),
    ),
)

BY_NAME: dict[str, Provider] = {p.name: p for p in PROVIDERS}

# Free mail services: a `From:` at one of these domains passes DMARC only through the
# service's own servers (they publish p=reject or p=quarantine: Gmail and Yahoo since
# 2024), so sending as gmail.com through SES or Mailgun is refused (5.7.26).
FREE_MAIL_DOMAINS: frozenset[str] = frozenset({
    "gmail.com", "googlemail.com",
    "yahoo.com", "ymail.com", "rocketmail.com", "yahoo.co.uk", "yahoo.fr", "yahoo.ca",
    "outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk", "hotmail.fr", "live.co.uk", "outlook.fr",
    "aol.com", "aim.com",
    "icloud.com", "me.com", "mac.com",
    "proton.me", "protonmail.com", "pm.me",
    "gmx.com", "gmx.net", "gmx.de", "mail.com",
    "zoho.com", "yandex.com", "yandex.ru",
    "fastmail.com", "fastmail.fm",
    "comcast.net", "verizon.net", "att.net", "sbcglobal.net", "optonline.net", "cox.net",
})

# The SMTP servers of free-mail services that have no preset: host suffixes that are each
# domain's own relay.
_OTHER_RELAYS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("yahoo.com", "ymail.com", "rocketmail.com", "yahoo.co.uk", "yahoo.fr", "yahoo.ca"), ("mail.yahoo.com",)),
    **dict.fromkeys(("aol.com", "aim.com"), ("aol.com",)),
    **dict.fromkeys(("icloud.com", "me.com", "mac.com"), ("mail.me.com",)),
    **dict.fromkeys(("proton.me", "protonmail.com", "pm.me"), ("protonmail.ch", "proton.me")),
    **dict.fromkeys(("gmx.com", "gmx.net", "gmx.de"), ("gmx.com", "gmx.net")),
    "mail.com": ("mail.com",),
    "zoho.com": ("zoho.com",),
    **dict.fromkeys(("yandex.com", "yandex.ru"), ("yandex.com", "yandex.ru")),
    "comcast.net": ("comcast.net",),
    "verizon.net": ("verizon.net", "aol.com"),
    **dict.fromkeys(("att.net", "sbcglobal.net"), ("att.yahoo.com", "mail.yahoo.com")),
    "optonline.net": ("optonline.net",),
    "cox.net": ("cox.net",),
}


def names() -> list[str]:
    """The preset names, in the order `--provider` lists them."""
    return [p.name for p in PROVIDERS]


def provider_for_host(host: str) -> Provider | None:
    """The preset whose relay `host` is, or None for a relay mailer does not know.

    Two presets may share servers (personal Gmail and Google Workspace both use
    smtp.gmail.com); the first in `PROVIDERS` is returned, and `providers_for_host`
    gives them all. Their SPF include is the same.
    """
    found = providers_for_host(host)
    return found[0] if found else None


def providers_for_host(host: str) -> list[Provider]:
    """Every preset whose relay `host` is (the same servers can serve two plans)."""
    if not host.strip():
        return []
    return [p for p in PROVIDERS if p.matches_host(host)]


def is_loopback(host: str) -> bool:
    """Is `host` this machine (localhost, 127.0.0.0/8, ::1)?"""
    host = _norm(host).strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _domain_of(email: str) -> str:
    address = parseaddr(email)[1] or email  # "Jane <jane@gmail.com>" as well as the bare address
    return address.rpartition("@")[2].strip().rstrip(".").lower()


def _own_relay(domain: str) -> tuple[list[Provider], tuple[str, ...]]:
    """The presets and other host suffixes that are `domain`'s own relay."""
    presets = [p for p in PROVIDERS if domain in p.own_domains]
    operators = {p.operator for p in presets}
    # Google Workspace's servers are Gmail's servers: any preset of the same operator.
    presets = [p for p in PROVIDERS if p.operator in operators]
    return presets, _OTHER_RELAYS.get(domain, ())


def free_mail_problem(from_email: str, smtp_host: str) -> str | None:
    """The sentence to show when a free-mail `From:` goes out through someone else's relay.

    A gmail.com (yahoo.com, outlook.com, ...) address sent through a relay that is not
    that service's own fails DMARC at every receiver, and Gmail refuses it with 5.7.26.
    None when the From address is not free mail, when the relay is the service's own, or
    when the relay is this machine (a local server such as Proton Mail Bridge, whose
    onward route mailer cannot see).
    """
    domain = _domain_of(from_email)
    if domain not in FREE_MAIL_DOMAINS or not smtp_host.strip() or is_loopback(smtp_host):
        return None
    presets, suffixes = _own_relay(domain)
    host = _norm(smtp_host)
    if any(p.matches_host(host) for p in presets) or any(host == s or host.endswith("." + s) for s in suffixes):
        return None
    own = presets[0].host if presets else (f"{domain}'s own SMTP server")
    return (
        f"[sender] from_email is a {domain} address, but [smtp] host {smtp_host} is not {domain}'s own server, "
        f"so receivers will fail its DMARC check and refuse it (Gmail answers 5.7.26). "
        f"Send from an address at your own domain, or send through {own}."
    )


def apply_preset(config: Any, name: str) -> Any:
    """config with [smtp] host/port/security and [sending] rate/per_day from preset `name`.

    `config` is a `mailer.config.Config`; the other settings are kept as they are.
    """
    p = BY_NAME[name]
    return dataclasses.replace(
        config,
        smtp=dataclasses.replace(config.smtp, host=p.host, port=p.port, security=p.security),
        sending=dataclasses.replace(config.sending, rate=float(p.rate), per_day=p.per_day),
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _limits(p: Provider) -> str:
    rate = f"{p.rate:,.0f} a minute" if p.rate else "no rate limit"
    day = f"{p.per_day:,} a day" if p.per_day else "no daily cap"
    return f"{rate}, {day}"


def markdown_table(providers: Iterable[Provider] = PROVIDERS) -> str:
    """The README's provider table, made from the presets (a test keeps the README equal)."""
    rows = [
        "| provider | host | port / security | rate, per_day | SPF include | HIPAA BAA | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in providers:
        rows.append(
            f"| `{p.name}`: {_cell(p.label)} | {p.host} | {p.port} {p.security} "
            f"| {_limits(p)} | `include:{p.spf_include}` "
            f"| {'yes' if p.baa else 'no'}: {_cell(p.baa_note)} | {_cell(p.notes)} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m mailer.providers --markdown`: print the README's provider table."""
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["--markdown"]:
        sys.stderr.write("usage: python -m mailer.providers --markdown\n")
        return 2
    sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
