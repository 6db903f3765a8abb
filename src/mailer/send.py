"""The send engine: pending deliveries -> render -> batches -> transport -> delivery log.

It takes a clock (for time, pauses and rates) and yields progress events; it never
prints. What happens to each message is committed to the delivery log as soon as the
server has answered, and a message is marked 'sending' (committed) before it is handed
over, so a crash leaves at most the message in flight as 'unknown', never resent blindly.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime, time as dtime
from typing import Iterator, Protocol

from .clock import Clock, iso
from .errors import MailerError, SmtpError
from .schedule import workspace_timezone
from .models import DELIVERY_STATUSES, Campaign, Delivery, Subscriber
from .store import Store
from .transport import ConnectionLost, Envelope, Reply, Transport, envelope_address


@dataclass(frozen=True)
class SendOptions:
    batch_size: int = 50
    pause: float = 10.0  # seconds between batches
    rate: float = 0.0  # messages per minute, 0 = no limit
    per_day: int = 0  # messages per day (workspace time zone), 0 = no cap
    limit: int | None = None  # at most this many messages in this run
    retries: int = 3  # tries again of a temporary failure within this run
    backoff: float = 2.0  # first retry delay (seconds); doubled each time, plus jitter
    max_consecutive_failures: int = 10
    reconnects: int = 3
    timezone: str = ""  # for the daily cap; "" = this machine's


@dataclass(frozen=True)
class Event:
    """Something the engine did, for progress bars and log lines."""

    kind: str  # "delivery" | "retry" | "reconnect" | "pause" | "stop"
    message: str = ""
    delivery: Delivery | None = None
    status: str = ""


@dataclass
class SendResult:
    handed_over: int = 0  # messages given to the transport in this run
    stopped: str = ""  # why the run ended before the end of the list ("" = it reached the end)
    paused: bool = False  # the campaign was paused (policy refusal)
    quota_left: bool = False  # stopped by --limit or the daily cap: the rest waits for the next run
    server_lost: bool = False  # the server went away and could not be reached again
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DELIVERY_STATUSES, 0))


class DeliveryLog(Protocol):
    """Where the engine reads its work and writes what happened."""

    def next_batch(self, limit: int, after_seq: int) -> list[Delivery]: ...
    def still_sending(self) -> bool: ...
    def subscriber(self, delivery: Delivery) -> Subscriber | None: ...
    def mark_sending(self, delivery: Delivery, message_id: str, now: str) -> None: ...
    def record(self, delivery: Delivery, status: str, reply: str, now: str, bounce: bool = False) -> None: ...
    def attempted_since(self, since: str) -> int: ...
    def pause(self, reason: str) -> None: ...


class StoreLog:
    """The real delivery log in the database; every change is its own commit."""

    def __init__(self, store: Store, campaign: Campaign):
        self.store = store
        self.campaign = campaign

    def next_batch(self, limit: int, after_seq: int) -> list[Delivery]:
        if not self.still_sending():
            return []
        return self.store.pending_deliveries(self.campaign.id, limit, after_seq)

    def still_sending(self) -> bool:
        """False once someone else has cancelled or paused the campaign while we were sending."""
        return self.store.require_campaign(self.campaign.id).status not in ("cancelled", "paused")

    def subscriber(self, delivery: Delivery) -> Subscriber | None:
        return self.store.get_by_id(delivery.subscriber_id) if delivery.subscriber_id is not None else None

    def mark_sending(self, delivery: Delivery, message_id: str, now: str) -> None:
        self.store.mark_sending(delivery.id, message_id, now)

    def record(self, delivery: Delivery, status: str, reply: str, now: str, bounce: bool = False) -> None:
        self.store.record(delivery.id, status, reply, now, bounce_subscriber=bounce)

    def attempted_since(self, since: str) -> int:
        return self.store.attempted_since(since)

    def pause(self, reason: str) -> None:
        self.store.update_campaign(self.campaign.id, status="paused", status_reason=reason)


class AudienceLog:
    """A delivery log in memory over the audience as it stands now: for dry-runs.

    It reads the store and writes nothing to it.
    """

    def __init__(self, store: Store, campaign: Campaign):
        self.store = store
        self.campaign = campaign
        if campaign.status in ("draft", "scheduled"):
            self._source = self._from_audience()
        else:  # a started campaign: what a real send would do now
            self._source = (d for d in store.deliveries(campaign.id, ["pending"]))
        self.recorded: dict[int, str] = {}

    def _from_audience(self) -> Iterator[Delivery]:
        subs = self.store.subscribers(status="active", list_name=self.campaign.list_name, tags=self.campaign.tags)
        for seq, s in enumerate(subs, start=1):
            yield Delivery(seq, self.campaign.id, s.id, seq, s.email, "pending", 0, "", "", "", "", "")

    def next_batch(self, limit: int, after_seq: int) -> list[Delivery]:
        batch = []
        for d in self._source:
            batch.append(d)
            if len(batch) >= limit:
                break
        return batch

    def still_sending(self) -> bool:
        return True

    def subscriber(self, delivery: Delivery) -> Subscriber | None:
        return self.store.get_by_id(delivery.subscriber_id) if delivery.subscriber_id is not None else None

    def mark_sending(self, delivery: Delivery, message_id: str, now: str) -> None:
        pass

    def record(self, delivery: Delivery, status: str, reply: str, now: str, bounce: bool = False) -> None:
        self.recorded[delivery.seq] = status

    def attempted_since(self, since: str) -> int:
        return self.store.attempted_since(since)

    def pause(self, reason: str) -> None:
        pass


class Renderer(Protocol):
    def render(self, subscriber: Subscriber): ...


_BOUNCE_WORDS = re.compile(r"user|mailbox|recipient|address|account|no such|unknown|not exist|disabled", re.I)
_POLICY_WORDS = re.compile(r"spam|policy|block|reputation|rejected|denied|blacklist|listed|abuse", re.I)


def classify(reply: Reply) -> str:
    """What a final reply means for the delivery.

    'sent' (250), 'temporary' (4xx: try again), 'bounced' (the address does not exist:
    5.1.x, 5.2.1), 'policy' (5.7.x: the server refuses us, not the recipient), 'auth'
    (the server wants a login it does not have), or 'failed' (any other permanent refusal).
    """
    code, enhanced = reply.code, reply.enhanced
    if code == 250:
        return "sent"
    if 400 <= code < 500:
        return "temporary"
    if code in (530, 535):
        return "auth"
    if enhanced.startswith("5.1.") or enhanced == "5.2.1":
        return "bounced"
    if enhanced.startswith("5.7."):
        return "policy"
    if not enhanced and code in (550, 551, 553) and _BOUNCE_WORDS.search(reply.text) and not _POLICY_WORDS.search(reply.text):
        return "bounced"
    if not enhanced and code in (550, 554) and _POLICY_WORDS.search(reply.text):
        return "policy"
    return "failed"


def day_start(now: datetime, timezone: str) -> datetime:
    """Midnight of today in the workspace's time zone (the daily cap's day)."""
    tz = workspace_timezone(timezone)
    local = now.astimezone(tz)
    return datetime.combine(local.date(), dtime(0), tzinfo=tz)


class CampaignSender:
    """Sends one campaign's pending deliveries; iterate `run()` for progress, then read `result`."""

    def __init__(
        self,
        log: DeliveryLog,
        renderer: Renderer,
        transport: Transport,
        clock: Clock,
        options: SendOptions,
        *,
        sender: str,
        rng: random.Random | None = None,
    ):
        self.log = log
        self.renderer = renderer
        self.transport = transport
        self.clock = clock
        self.options = options
        self.sender = sender
        self.rng = rng or random.Random()
        self.result = SendResult()
        self._connected = False
        self._in_batch = 0
        self._next_slot = 0.0
        self._consecutive_failures = 0

    def _now(self) -> str:
        return iso(self.clock.now())

    def _connect(self) -> None:
        if not self._connected:
            self.transport.open()
            self._connected = True
            self._in_batch = 0

    def _disconnect(self) -> None:
        if self._connected:
            self.transport.close()
            self._connected = False

    def _quota_reason(self) -> str:
        o = self.options
        if o.limit is not None and self.result.handed_over >= o.limit:
            return f"sent the {o.limit} allowed by --limit"
        if o.per_day:
            since = iso(day_start(self.clock.now(), o.timezone))
            if self.log.attempted_since(since) >= o.per_day:
                return f"reached today's cap of {o.per_day} messages"
        return ""

    def _wait_for_rate(self) -> None:
        if self.options.rate <= 0:
            return
        now = self.clock.monotonic()
        if self._next_slot > now:
            self.clock.sleep(self._next_slot - now)
            now = self._next_slot
        self._next_slot = now + 60.0 / self.options.rate

    def run(self) -> Iterator[Event]:
        """Send until the list, the quota or the server says stop."""
        o = self.options
        last_seq = 0
        try:
            while True:
                batch = self.log.next_batch(o.batch_size, last_seq)
                if not batch:
                    return
                for delivery in batch:
                    last_seq = delivery.seq
                    reason = self._quota_reason()
                    if reason:
                        self.result.stopped = reason
                        self.result.quota_left = True
                        yield Event("stop", f"Stopped: {reason}; the rest waits for the next run.")
                        return
                    if self._in_batch >= o.batch_size:  # only now, so a run never ends on a pause
                        self._disconnect()
                        self._in_batch = 0
                        if o.pause > 0:
                            yield Event("pause", f"Batch of {o.batch_size} done; pausing {o.pause:g} s.")
                            self.clock.sleep(o.pause)
                            if not self.log.still_sending():  # cancelled or paused during the pause
                                return
                    yield from self._deliver(delivery)
                    if self.result.stopped:
                        return
        finally:
            self._disconnect()

    def _deliver(self, delivery: Delivery) -> Iterator[Event]:
        sub = self.log.subscriber(delivery)
        if sub is None or sub.status != "active":
            why = "erased" if sub is None else sub.status
            self.log.record(delivery, "skipped", f"{why} after the audience was fixed", self._now())
            self.result.outcomes["skipped"] += 1
            yield Event("delivery", f"{delivery.email}: skipped ({why})", delivery, "skipped")
            return
        self._connect()  # SmtpError (cannot reach or log in) ends the run: exit 3, nothing marked
        recipient, needs_utf8 = envelope_address(sub.email)
        if needs_utf8 and not self.transport.smtputf8:
            reply = "needs-smtputf8: the address has non-ASCII characters before the @ and the server does not offer SMTPUTF8"
            self.log.record(delivery, "failed", reply, self._now())
            self.result.outcomes["failed"] += 1
            yield Event("delivery", f"{sub.email}: needs-smtputf8", delivery, "failed")
            return
        try:
            message = self.renderer.render(sub)
        except MailerError as exc:  # this subscriber's data cannot make a message; the rest can
            self.log.record(delivery, "failed", f"cannot be rendered: {exc.message}", self._now())
            self.result.outcomes["failed"] += 1
            yield Event("delivery", f"{sub.email}: failed ({exc.message})", delivery, "failed")
            self._failure(Reply(0, exc.message))
            return
        envelope = Envelope(self.sender, recipient, needs_utf8, delivery.seq)
        self._wait_for_rate()
        self.log.mark_sending(delivery, message.message_id, self._now())
        self.result.handed_over += 1
        tries = 0
        reconnects = 0
        while True:
            try:
                reply = self.transport.send(envelope, message.data)
            except ConnectionLost as exc:
                self._connected = False
                reconnects += 1
                if reconnects > self.options.reconnects:
                    self._give_up(delivery, f"connection lost: {exc}")
                    yield Event("stop", self.result.stopped)
                    return
                yield Event("reconnect", f"Connection lost ({exc}); reconnecting and sending {sub.email} again.")
                if reconnects > 1:
                    self._backoff(reconnects - 1)
                try:
                    self._connect()
                except SmtpError as err:
                    self._give_up(delivery, err.message)
                    yield Event("stop", self.result.stopped)
                    return
                continue
            self._in_batch += 1  # on the connection that carried it: after a reconnect, a new batch
            kind = classify(reply)
            if kind == "temporary":
                tries += 1
                if reply.code == 421:
                    self._connected = False  # the transport has closed it
                if tries <= self.options.retries:
                    yield Event("retry", f"{sub.email}: {reply}; trying again ({tries}/{self.options.retries}).", delivery)
                    self._backoff(tries)
                    if not self._connected:
                        try:
                            self._connect()
                        except SmtpError as err:
                            self._give_up(delivery, err.message)
                            yield Event("stop", self.result.stopped)
                            return
                    continue
                self._finish(delivery, "pending", str(reply))
                yield Event("delivery", f"{sub.email}: {reply} (left for the next run)", delivery, "pending")
                self._failure(reply)
                return
            if kind == "auth":
                self.log.record(delivery, "pending", str(reply), self._now())
                raise SmtpError(f"The SMTP server asks for a login: {reply}.", hint="Check [smtp] username and password.")
            if kind == "policy":
                self.log.record(delivery, "pending", str(reply), self._now())
                reason = f"the server refused the message as a matter of policy ({reply})"
                self.log.pause(reason)
                self.result.paused = True
                self.result.stopped = f"Campaign paused: {reason}. Nobody was marked bounced."
                yield Event("stop", self.result.stopped, delivery, "pending")
                return
            status = {"sent": "sent", "bounced": "bounced", "failed": "failed"}[kind]
            self._finish(delivery, status, str(reply), bounce=status == "bounced")
            yield Event("delivery", f"{sub.email}: {status}" + ("" if status == "sent" else f" ({reply})"), delivery, status)
            if status == "sent":
                self._consecutive_failures = 0
            else:
                self._failure(reply)
            return

    def _finish(self, delivery: Delivery, status: str, reply: str, bounce: bool = False) -> None:
        self.log.record(delivery, status, reply, self._now(), bounce)
        self.result.outcomes[status] += 1

    def _failure(self, reply: Reply) -> None:
        self._consecutive_failures += 1
        if self._consecutive_failures >= self.options.max_consecutive_failures:
            self.result.stopped = (
                f"Stopped after {self._consecutive_failures} failures in a row (last: {reply}); "
                "the rest is left pending so the list is not burnt."
            )

    def _give_up(self, delivery: Delivery, why: str) -> None:
        # Not confirmed by the server: back to pending, to be sent again by the next run.
        self.log.record(delivery, "pending", why, self._now())
        self.result.outcomes["pending"] += 1
        self.result.stopped = f"The SMTP server went away: {why}. The rest is left pending for the next run."
        self.result.server_lost = True

    def _backoff(self, attempt: int) -> None:
        delay = self.options.backoff * (2 ** (attempt - 1))
        self.clock.sleep(delay * (1 + self.rng.random()))
