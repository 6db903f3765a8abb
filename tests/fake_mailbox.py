"""An in-memory store for the inbox loop: a fake of our own MailboxActions and ProcessedLog.

It keeps subscribers, deliveries, an event history, soft bounces per campaign and
complaints per campaign, and it is transactional like the real store: whatever happens
inside `atomic()` is undone if the block raises.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from mailer.inbox.process import DeliveryRef, SubscriberRef


@dataclass
class Event:
    subscriber_id: int
    what: str  # hard-bounce | soft-bounce | unsubscribe | complaint
    campaign_id: int | None
    reason: str
    when: str


@dataclass
class FakeMailboxStore:
    subscribers: dict[int, SubscriberRef] = field(default_factory=dict)
    deliveries: dict[int, DeliveryRef] = field(default_factory=dict)
    message_ids: dict[str, int] = field(default_factory=dict)  # Message-ID -> delivery id
    bounced_deliveries: set[int] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)
    soft: dict[int, set[int]] = field(default_factory=dict)  # subscriber -> campaigns
    complaints: dict[int, int] = field(default_factory=dict)  # campaign -> count
    processed: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (kind, outcome)
    cursors: dict[str, str] = field(default_factory=dict)
    fail_on: str | None = None  # an action name that raises once, to test atomicity
    mailed: set[int] | None = None  # subscribers mailed lately (None: everyone)

    # -- setting up ----------------------------------------------------------------------

    def add_subscriber(self, id: int, email: str, status: str = "active") -> SubscriberRef:
        self.subscribers[id] = SubscriberRef(id, email, status)
        return self.subscribers[id]

    def add_delivery(self, id: int, campaign_id: int, subscriber_id: int | None, message_id: str) -> DeliveryRef:
        email = self.subscribers[subscriber_id].email if subscriber_id in self.subscribers else ""
        self.deliveries[id] = DeliveryRef(id, campaign_id, subscriber_id, email)
        self.message_ids[message_id] = id
        return self.deliveries[id]

    def status(self, id: int) -> str:
        return self.subscribers[id].status

    def state(self) -> tuple:
        """Everything a run can change, to compare before and after."""
        return copy.deepcopy((self.subscribers, self.bounced_deliveries, self.events, self.soft,
                              self.complaints, self.processed, self.cursors))

    # -- MailboxActions ----------------------------------------------------------------

    def find_delivery_by_message_id(self, message_id: str) -> DeliveryRef | None:
        delivery_id = self.message_ids.get(message_id)
        return self.deliveries.get(delivery_id) if delivery_id is not None else None

    def find_delivery(self, delivery_id: int) -> DeliveryRef | None:
        return self.deliveries.get(delivery_id)

    def find_subscriber(self, *, email: str | None = None, subscriber_id: int | None = None) -> SubscriberRef | None:
        if subscriber_id is not None:
            return self.subscribers.get(subscriber_id)
        return next((s for s in self.subscribers.values() if s.email.lower() == (email or "").lower()), None)

    def _set_status(self, sub: SubscriberRef, status: str) -> bool:
        current = self.subscribers[sub.id]
        if current.status == status:
            return False
        self.subscribers[sub.id] = replace(current, status=status)
        return True

    def _maybe_fail(self, name: str) -> None:
        if self.fail_on == name:
            self.fail_on = None
            raise RuntimeError(f"the store failed during {name}")

    def last_delivery_to(self, subscriber, since) -> DeliveryRef | None:
        if self.mailed is not None and subscriber.id not in self.mailed:
            return None
        mine = [d for d in self.deliveries.values() if d.subscriber_id == subscriber.id]
        return max(mine, key=lambda d: d.id) if mine else None

    def hard_bounce(self, subscriber, delivery, reason, when) -> bool:
        self.events.append(Event(subscriber.id, "hard-bounce", delivery and delivery.campaign_id, reason, when))
        if delivery is not None:
            self.bounced_deliveries.add(delivery.id)
        self._maybe_fail("hard_bounce")
        return self._set_status(subscriber, "bounced")

    def soft_bounce(self, subscriber, delivery, reason, when) -> int:
        self.events.append(Event(subscriber.id, "soft-bounce", delivery and delivery.campaign_id, reason, when))
        campaigns = self.soft.setdefault(subscriber.id, set())
        if delivery is not None:
            campaigns.add(delivery.campaign_id)
        self._maybe_fail("soft_bounce")
        return len(campaigns)

    def unsubscribe(self, subscriber, delivery, reason, when) -> bool:
        self.events.append(Event(subscriber.id, "unsubscribe", delivery and delivery.campaign_id, reason, when))
        self._maybe_fail("unsubscribe")
        if self.subscribers[subscriber.id].status == "bounced":
            return False
        return self._set_status(subscriber, "unsubscribed")

    def complaint(self, subscriber, delivery, reason, when) -> None:
        self.events.append(Event(subscriber.id, "complaint", delivery and delivery.campaign_id, reason, when))
        if delivery is not None:
            self.complaints[delivery.campaign_id] = self.complaints.get(delivery.campaign_id, 0) + 1
        self._maybe_fail("complaint")

    @contextmanager
    def atomic(self):
        saved = copy.deepcopy((self.subscribers, self.bounced_deliveries, self.events, self.soft,
                               self.complaints, self.processed))
        try:
            yield
        except BaseException:
            (self.subscribers, self.bounced_deliveries, self.events, self.soft,
             self.complaints, self.processed) = saved
            raise

    # -- ProcessedLog --------------------------------------------------------------------

    def already_processed(self, key: str) -> bool:
        return key in self.processed

    def remember(self, key, verdict, outcome, when) -> None:
        self.processed[key] = (verdict.kind.value, outcome)

    def cursor(self, name: str) -> str | None:
        return self.cursors.get(name)

    def save_cursor(self, name: str, position: str, when: str) -> None:
        self.cursors[name] = position
