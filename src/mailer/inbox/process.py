"""The mailbox loop: read each message, classify it, match it, act on it once.

The rules live here, in one place; the store only carries them out through the small
`MailboxActions` interface (each method one state change, named as a user would):

- a permanent bounce marks the subscriber bounced (suppressed);
- a temporary bounce is counted; the third one on a different campaign suppresses;
- an unsubscribe mail or reply unsubscribes from everything, the token's list as reason;
- a complaint is counted against its campaign and unsubscribes;
- an auto-reply, a forged token, and anything else change nothing;
- a valid token (or a delivery) whose subscriber was erased is counted, nothing changes.

Idempotent: every message is remembered by its Message-ID (or a hash of its headers) in
the `ProcessedLog`, in the same transaction as its actions, so the same mailbox read
twice changes nothing the second time. A dry run classifies, matches and reports what it
would do, and changes nothing anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, runtime_checkable

from ..clock import Clock, iso
from .classify import Failure, Kind, Verdict, classify
from .sources import Incoming, Source, later_position

SOFT_BOUNCE_LIMIT = 3  # temporary bounces, on different campaigns, before an address is suppressed


@dataclass(frozen=True)
class DeliveryRef:
    """One delivery (a campaign sent to a subscriber), as far as the inbox needs it."""

    id: int
    campaign_id: int
    subscriber_id: int | None  # None: the subscriber was erased since
    email: str


@dataclass(frozen=True)
class SubscriberRef:
    """A subscriber, as far as the inbox needs it."""

    id: int
    email: str
    status: str  # active | unsubscribed | bounced


@runtime_checkable
class MailboxActions(Protocol):
    """What the inbox loop asks of the store. Each change is one state transition; the
    rules that decide which to call live in process.py, not behind this interface."""

    def find_delivery_by_message_id(self, message_id: str) -> DeliveryRef | None:
        """The delivery that went out with this Message-ID ("<...@domain>"), if any."""
        ...

    def find_delivery(self, delivery_id: int) -> DeliveryRef | None:
        """The delivery a VERP token names, if it still exists."""
        ...

    def find_subscriber(self, *, email: str | None = None, subscriber_id: int | None = None) -> SubscriberRef | None:
        """The subscriber with this address (case-insensitive) or id; None when there is
        none (never was, or erased)."""
        ...

    def last_delivery_to(self, subscriber: SubscriberRef, since: str) -> DeliveryRef | None:
        """The newest message that went to this subscriber since this time (UTC ISO; sent, or of unknown fate)."""
        ...

    def hard_bounce(self, subscriber: SubscriberRef, delivery: DeliveryRef | None, reason: str, when: str) -> bool:
        """Mark the subscriber bounced (suppressed) and the delivery, if known, bounced;
        record the event with its campaign. True if the subscriber's status changed."""
        ...

    def soft_bounce(self, subscriber: SubscriberRef, delivery: DeliveryRef | None, reason: str, when: str) -> int:
        """Record a temporary bounce; return on how many different campaigns this
        subscriber has now bounced temporarily (a bounce without a campaign adds none)."""
        ...

    def unsubscribe(self, subscriber: SubscriberRef, delivery: DeliveryRef | None, reason: str, when: str) -> bool:
        """Unsubscribe from every list, recording the reason and campaign. True if changed."""
        ...

    def complaint(self, subscriber: SubscriberRef, delivery: DeliveryRef | None, reason: str, when: str) -> None:
        """Record a spam complaint against the delivery's campaign (for its complaint rate)."""
        ...

    def atomic(self) -> AbstractContextManager:
        """A transaction: everything done for one message, its remember() included,
        commits together or not at all."""
        ...


@runtime_checkable
class ProcessedLog(Protocol):
    """Which messages were already processed, and where an IMAP folder was left."""

    def already_processed(self, key: str) -> bool:
        """Was the message with this key (Message-ID or sha256:...) processed before?"""
        ...

    def remember(self, key: str, verdict: Verdict, outcome: str, when: str) -> None:
        """Record that the message was processed, with what it was and what was done."""
        ...

    def cursor(self, name: str) -> str | None:
        """The saved position of a resumable source (IMAP "UIDVALIDITY:UID")."""
        ...

    def save_cursor(self, name: str, position: str, when: str) -> None:
        """Remember where the source was left."""
        ...


@dataclass(frozen=True)
class MessageReport:
    """One message's line for `-v`: what it was and what was done."""

    source_key: str
    key: str
    kind: str
    outcome: str
    reason: str
    sender: str = ""
    subject: str = ""
    subscriber: str = ""  # the address acted on
    campaign_id: int | None = None

    def as_json(self) -> dict:
        """The line as a JSON object (`--json -v`)."""
        return {
            "where": self.source_key, "message": self.key, "kind": self.kind, "outcome": self.outcome,
            "reason": self.reason, "from": self.sender, "subject": self.subject,
            "subscriber": self.subscriber or None, "campaign": self.campaign_id,
        }


@dataclass
class InboxSummary:
    """What one pass over a mailbox found and did."""

    source: str = ""
    dry_run: bool = False
    read: int = 0
    bounces_hard: int = 0
    bounces_soft: int = 0
    suppressed: int = 0  # of the soft bounces: the one that reached the limit
    unsubscribes: int = 0
    complaints: int = 0
    auto_replies: int = 0
    unmatched: int = 0
    forged: int = 0
    to_read: int = 0  # replies that speak of leaving, but not plainly: a person decides
    matched_erased: int = 0
    ignored: int = 0
    already_processed: int = 0
    unreadable: int = 0
    moved: int = 0

    def as_json(self) -> dict:
        """The counts as one JSON document (`--json`)."""
        return {
            "source": self.source, "dry_run": self.dry_run, "read": self.read,
            "bounces": {"hard": self.bounces_hard, "soft": self.bounces_soft, "suppressed": self.suppressed},
            "unsubscribes": self.unsubscribes, "complaints": self.complaints, "auto_replies": self.auto_replies,
            "unmatched": self.unmatched, "forged": self.forged, "to_read": self.to_read,
            "matched_erased": self.matched_erased,
            "ignored": self.ignored, "already_processed": self.already_processed,
            "unreadable": self.unreadable, "moved": self.moved,
        }


@dataclass(frozen=True)
class _Target:
    """Who a message is about, once matched."""

    subscriber: SubscriberRef | None  # None with erased=True: matched, but erased
    delivery: DeliveryRef | None
    erased: bool = False
    failure: Failure | None = None  # bounces matched by address: that recipient's failure
    by_address: bool = False  # names none of our messages: only an address, which anyone could write


# A bounce or complaint that names only an address counts for someone mailed in these days.
RECENT_DAYS = 30


def process_inbox(
    source: Source,
    secret: bytes,
    actions: MailboxActions,
    state: ProcessedLog,
    *,
    clock: Clock,
    dry_run: bool = False,
    on_message: Callable[[MessageReport], None] | None = None,
) -> InboxSummary:
    """Read every message of `source` once: classify, match, act (unless dry_run), remember.

    `on_message` gets each message's report as it is done (for `-v`); the summary itself
    holds only counts, so memory stays flat however big the mailbox.
    """
    summary = InboxSummary(source=source.name, dry_run=dry_run)
    after = state.cursor(source.cursor_name) if source.cursor_name else None
    seen_this_run: set[str] = set()
    position = None
    try:
        for item in source.messages(after):
            summary.read += 1
            report = _one(item, secret, actions, state, clock, dry_run, seen_this_run, summary)
            if item.position:
                position = item.position
            if report.outcome in _APPLIED and not dry_run and source.handled(item):
                summary.moved += 1
            if on_message is not None:
                on_message(report)
    finally:
        # A --since run may end below where the last run left off: never move back.
        if position and source.cursor_name and not dry_run and later_position(position, after):
            state.save_cursor(source.cursor_name, position, iso(clock.now()))
        source.close()
    return summary


_LEFT = {  # kinds never acted on: the summary's counter, and the outcome
    Kind.AUTO_REPLY: ("auto_replies", "left alone"),
    Kind.FORGED: ("forged", "refused"),
    Kind.UNCLEAR: ("to_read", "left for a person"),
    Kind.OTHER: ("ignored", "left alone"),
}
_APPLIED = frozenset({"bounced", "soft bounce counted", "suppressed", "unsubscribed", "complaint", "matched-erased"})


def _one(
    item: Incoming, secret: bytes, actions: MailboxActions, state: ProcessedLog, clock: Clock,
    dry_run: bool, seen: set[str], summary: InboxSummary,
) -> MessageReport:
    try:
        verdict = classify(item.data, secret)
    except Exception as exc:  # a classifier bug must not stop an unattended run at one message
        summary.unreadable += 1
        return MessageReport(item.key, "", "unreadable", "left alone", f"could not be read: {type(exc).__name__}: {exc}")

    def report(outcome: str, target: _Target | None = None, reason: str | None = None) -> MessageReport:
        return MessageReport(
            source_key=item.key, key=verdict.key, kind=verdict.kind.value, outcome=outcome,
            reason=reason or verdict.reason, sender=verdict.sender, subject=verdict.subject,
            subscriber=target.subscriber.email if target and target.subscriber else "",
            campaign_id=target.delivery.campaign_id if target and target.delivery else None,
        )

    if verdict.key in seen or state.already_processed(verdict.key):
        summary.already_processed += 1
        return report("already processed")
    seen.add(verdict.key)
    when = iso(clock.now())

    if verdict.kind in _LEFT:
        counter, outcome = _LEFT[verdict.kind]
        setattr(summary, counter, getattr(summary, counter) + 1)
        if not dry_run:
            with actions.atomic():
                state.remember(verdict.key, verdict, outcome, when)
        return report(outcome)

    targets = _match(verdict, actions, iso(clock.now() - timedelta(days=RECENT_DAYS)))
    if not targets:
        summary.unmatched += 1
        if not dry_run:
            with actions.atomic():
                state.remember(verdict.key, verdict, "unmatched", when)
        return report("unmatched")
    if all(t.erased for t in targets):
        summary.matched_erased += 1
        if not dry_run:
            with actions.atomic():
                state.remember(verdict.key, verdict, "matched-erased", when)
        return report("matched-erased", reason=verdict.reason + "; the subscriber was erased, nothing changed")

    live = [t for t in targets if not t.erased]
    if dry_run:
        outcome = _would(verdict, live)
        _count(summary, verdict, outcome)
        return report(outcome, live[0])
    with actions.atomic():
        outcomes = [_act(verdict, target, actions, when) for target in live]
        outcome = _worst(outcomes)
        state.remember(verdict.key, verdict, outcome, when)
    _count(summary, verdict, outcome)
    return report(outcome, live[0])


def _match(verdict: Verdict, actions: MailboxActions, since: str) -> list[_Target]:
    """Who the message is about: by VERP delivery, original Message-ID, token, or address."""
    delivery = None
    if verdict.verp_delivery_id is not None:
        delivery = actions.find_delivery(verdict.verp_delivery_id)
    for message_id in verdict.original_message_ids:
        if delivery is not None:
            break
        delivery = actions.find_delivery_by_message_id(message_id)

    if verdict.kind == Kind.UNSUBSCRIBE:
        if verdict.subscriber_id is not None:  # the token names them, whoever sent it
            subscriber = actions.find_subscriber(subscriber_id=verdict.subscriber_id)
        else:  # a reply asking to leave: the sender leaves
            subscriber = actions.find_subscriber(email=verdict.sender)
            if subscriber is None:
                return []
        if subscriber is None:
            return [_Target(None, delivery, erased=True)]
        same = delivery is not None and delivery.subscriber_id == subscriber.id
        return [_Target(subscriber, delivery if same else None)]

    # bounces and complaints
    if delivery is not None:
        if delivery.subscriber_id is None:
            return [_Target(None, delivery, erased=True)]
        subscriber = actions.find_subscriber(subscriber_id=delivery.subscriber_id)
        return [_Target(subscriber, delivery)] if subscriber else [_Target(None, delivery, erased=True)]
    if verdict.subscriber_id is not None:
        subscriber = actions.find_subscriber(subscriber_id=verdict.subscriber_id)
        return [_Target(subscriber, None)] if subscriber else [_Target(None, None, erased=True)]
    targets: list[_Target] = []
    failures = {f.address: f for f in verdict.failures if f.address}
    for address in verdict.addresses:
        subscriber = actions.find_subscriber(email=address)
        # Matched by its address alone, a report could be forged by anyone to remove anyone:
        # it counts only for someone we really mailed lately, and against that message.
        last = actions.last_delivery_to(subscriber, since) if subscriber is not None else None
        if subscriber is None or last is None:
            continue
        if all(t.subscriber.id != subscriber.id for t in targets if t.subscriber):
            targets.append(_Target(subscriber, last, failure=failures.get(address), by_address=True))
    return targets


def _act(verdict: Verdict, target: _Target, actions: MailboxActions, when: str) -> str:
    subscriber, delivery = target.subscriber, target.delivery
    assert subscriber is not None
    if verdict.is_bounce:
        permanent = target.failure.permanent if target.failure else verdict.kind == Kind.BOUNCE_HARD
        reason = _bounce_reason(verdict, target.failure)
        if permanent and target.by_address:
            # No Message-ID, token or VERP address of ours: anyone could have written it. It
            # counts like a temporary bounce, so three campaigns in a row are needed to suppress.
            reason = f"{reason} (names no message of ours, so counted as temporary)"
            permanent = False
        if permanent:
            actions.hard_bounce(subscriber, delivery, reason, when)
            return "bounced"
        campaigns = actions.soft_bounce(subscriber, delivery, reason, when)
        if campaigns >= SOFT_BOUNCE_LIMIT:
            actions.hard_bounce(
                subscriber, delivery,
                f"{campaigns} temporary bounces on different campaigns (the last: {reason})", when,
            )
            return "suppressed"
        return "soft bounce counted"
    if verdict.kind == Kind.UNSUBSCRIBE:
        actions.unsubscribe(subscriber, delivery, _unsubscribe_reason(verdict), when)
        return "unsubscribed"
    if verdict.kind == Kind.COMPLAINT:
        reason = f"spam complaint ({verdict.feedback_type or 'abuse'})"
        if target.by_address:  # unsubscribed all the same, but not counted against a campaign it may not be about
            delivery = None
            reason += ", naming no message of ours"
        actions.complaint(subscriber, delivery, reason, when)
        actions.unsubscribe(subscriber, delivery, reason, when)
        return "complaint"
    raise AssertionError(f"no action for {verdict.kind}")  # pragma: no cover


def _bounce_reason(verdict: Verdict, failure: Failure | None) -> str:
    failure = failure or (verdict.failures[0] if verdict.failures else None)
    if failure is None:
        return verdict.reason
    text = failure.status or ("permanent" if failure.permanent else "temporary")
    if failure.diagnostic:
        text += f" {failure.diagnostic[:160]}"
    return f"bounce: {text}"


def _unsubscribe_reason(verdict: Verdict) -> str:
    if verdict.list_name:
        return f"unsubscribe mail ({verdict.list_name})"
    return f"unsubscribe reply ({verdict.reason.split(': ', 1)[-1]})"


def _worst(outcomes: Iterable[str]) -> str:
    order = ["bounced", "suppressed", "complaint", "unsubscribed", "soft bounce counted"]
    found = set(outcomes)
    return next((o for o in order if o in found), "left alone")


def _would(verdict: Verdict, targets: list[_Target]) -> str:
    if verdict.kind == Kind.BOUNCE_HARD and all(t.by_address for t in targets):
        return "soft bounce counted"
    return {
        Kind.BOUNCE_HARD: "bounced", Kind.BOUNCE_SOFT: "soft bounce counted",
        Kind.UNSUBSCRIBE: "unsubscribed", Kind.COMPLAINT: "complaint",
    }[verdict.kind]


def _count(summary: InboxSummary, verdict: Verdict, outcome: str) -> None:
    if verdict.is_bounce:
        if outcome == "bounced":
            summary.bounces_hard += 1
        else:
            summary.bounces_soft += 1
            if outcome == "suppressed":
                summary.suppressed += 1
    elif verdict.kind == Kind.UNSUBSCRIBE:
        summary.unsubscribes += 1
    elif verdict.kind == Kind.COMPLAINT:
        summary.complaints += 1
