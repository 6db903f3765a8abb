"""Small frozen dataclasses that travel between the core modules."""

from __future__ import annotations

from dataclasses import dataclass, field

from .lifecycle import CampaignStatus, DeliveryStatus, SubscriberStatus

STATUSES = tuple(SubscriberStatus)
DEFAULT_LISTS = ("news", "specials")
# How a person came to agree to be mailed: the consent record's method.
CONSENT_METHODS = ("form", "double-opt-in", "front-desk", "import")


@dataclass(frozen=True)
class Subscriber:
    """A person on the mailing list, as stored (or about to be stored)."""

    email: str  # normalised, the address we send to
    email_key: str = ""  # case-folded normalised address: one person, one key
    email_entered: str = ""  # as it stood in the file or on the command line
    first_name: str = ""
    last_name: str = ""
    status: SubscriberStatus = SubscriberStatus.ACTIVE
    lists: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    source: str = ""
    optin_time: str = ""
    optin_ip: str = ""
    created_at: str = ""
    updated_at: str = ""
    unsubscribed_at: str = ""
    unsubscribed_reason: str = ""
    id: int | None = None
    # The consent record, beside source, opt-in time and IP.
    consent_method: str = ""  # one of CONSENT_METHODS, or "" (not known: stored before it was asked)
    consent_text: str = ""  # what they agreed to, in the words they saw
    consent_version: str = ""  # which version of that text
    consent_url: str = ""  # the form's page
    consent_user_agent: str = ""
    left_lists: tuple[str, ...] = ()  # lists they left on purpose: an import never joins them again

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)

    @property
    def has_consent_facts(self) -> bool:
        """Is anything known about how they agreed (a time, an IP, a form, the words)?"""
        return any((self.optin_time, self.optin_ip, self.consent_text, self.consent_url, self.consent_user_agent))


@dataclass(frozen=True)
class Reject:
    """A row that could not be imported, with where it was and why."""

    line: int
    value: str
    reason: str
    row: tuple[str, ...] = ()


@dataclass(frozen=True)
class Typo:
    """An address whose domain looks like a slip of a common provider's (gmial.com)."""

    line: int
    email: str  # as it was read
    suggestion: str  # the address with the provider's domain
    fixed: bool = False  # --fix-typos stored the suggestion instead


@dataclass
class ImportSummary:
    """What an import (or a validation) found and did."""

    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    invalid: int = 0
    suppressed: int = 0
    rejects: list[Reject] = field(default_factory=list)
    detected: str = ""  # what the reader found: encoding, delimiter, columns
    typos: list[Typo] = field(default_factory=list)
    no_consent: int = 0  # rows without any consent fact: stored with method 'import'

    def as_json(self) -> dict:
        return {
            "read": self.read,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "suppressed": self.suppressed,
            "rejects": [{"line": r.line, "value": r.value, "reason": r.reason} for r in self.rejects],
            "typos": [{"line": t.line, "email": t.email, "suggestion": t.suggestion, "fixed": t.fixed} for t in self.typos],
            "no_consent": self.no_consent,
        }


DELIVERY_STATUSES = tuple(DeliveryStatus)


@dataclass(frozen=True)
class Campaign:
    """A message (content + templates snapshot) for an audience, and where its sending stands."""

    id: int
    key: str
    name: str
    content_path: str
    content_hash: str
    content: str
    templates: str  # JSON {template file name: source}
    template: str
    subject: str
    list_name: str
    tags: tuple[str, ...]
    status: CampaignStatus
    status_reason: str
    scheduled_at: str
    created_at: str
    started_at: str
    finished_at: str
    letter: str = ""  # subject and body as a sample subscriber reads them, normalised (mailer.repeats)
    allow_repeat: bool = False  # a person said: send it even if the same letter went out lately

    @property
    def finished(self) -> bool:
        return self.status in (CampaignStatus.DONE, CampaignStatus.CANCELLED)

    @property
    def started(self) -> bool:
        """Its audience is fixed and its snapshot is what goes out."""
        return self.status not in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED)


@dataclass(frozen=True)
class SentSpan:
    """When a campaign's messages went out: the first and last sent (UTC ISO), and how many."""

    first: str
    last: str
    count: int


@dataclass(frozen=True)
class Delivery:
    """One recipient of one campaign: the delivery log's row."""

    id: int
    campaign_id: int
    subscriber_id: int | None
    seq: int
    email: str
    status: DeliveryStatus
    attempts: int
    reply: str
    message_id: str
    updated_at: str
    attempted_at: str
    sent_at: str
    next_attempt_at: str = ""  # after a temporary refusal: not tried again before this time (UTC)
    deferred_since: str = ""  # the first temporary refusal: given up [sending] give_up_after later


@dataclass(frozen=True)
class Outcome:
    """What became of one message: the engine's result, committed to the delivery log."""

    delivery: Delivery
    status: DeliveryStatus
    reply: str  # the server's reply, or why it was not sent
    time: str  # UTC ISO, when it was decided
    bounce: bool = False  # the address does not exist: the subscriber is suppressed too
    next_attempt_at: str = ""  # status pending after a temporary refusal: not before this time (UTC)
    mailbox_full: bool = False  # failed because the mailbox is full: counts towards suppressing the address
    envelope_refused: bool = False  # the reply refused MAIL or RCPT: a try without a hand-over, counted here


@dataclass(frozen=True)
class HistoryItem:
    """One line of `subscribers show`'s history: an event of the person, or a delivery to them."""

    time: str  # UTC ISO
    kind: str  # added, consent, joined, left, unsubscribed, resubscribed, bounced, delivery, ...
    list_name: str = ""
    campaign_id: int | None = None
    campaign_name: str = ""
    status: str = ""  # a delivery's status
    detail: str = ""  # a delivery's server reply, or what the event was about
