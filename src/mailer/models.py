"""Small frozen dataclasses that travel between the core modules."""

from __future__ import annotations

from dataclasses import dataclass, field

from .lifecycle import CampaignStatus, DeliveryStatus, SubscriberStatus

STATUSES = tuple(SubscriberStatus)
DEFAULT_LISTS = ("news", "specials")


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

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)


@dataclass(frozen=True)
class Reject:
    """A row that could not be imported, with where it was and why."""

    line: int
    value: str
    reason: str
    row: tuple[str, ...] = ()


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

    @property
    def finished(self) -> bool:
        return self.status in (CampaignStatus.DONE, CampaignStatus.CANCELLED)

    @property
    def started(self) -> bool:
        """Its audience is fixed and its snapshot is what goes out."""
        return self.status not in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED)


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
