"""The send engine: pending deliveries -> render -> batches -> transport -> delivery log.

It takes a clock (for time, pauses and rates) and yields progress events; it never
prints. A message is marked 'sending' in a committed transaction before it is handed
over; the server's reply is committed in the same transaction as the next message's
mark (one disk sync per message), or at once before any pause, wait or stop. So a
crash leaves at most the message in flight, and the one just answered, as 'unknown':
reported, never resent blindly.
"""

from __future__ import annotations

import queue
import random
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, time as dtime
from typing import Callable, Iterator, Protocol

from .clock import Clock, iso
from .errors import MailerError, SmtpError
from .lifecycle import CampaignStatus, DeliveryStatus, SubscriberStatus
from .models import DELIVERY_STATUSES, Campaign, Delivery, Outcome, Subscriber
from .schedule import workspace_timezone
from .store import Store
from .transport import ConnectionLost, Envelope, FateUnknown, Reply, Transport, envelope_address

D = DeliveryStatus


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
    connections: int = 1  # SMTP connections at once (real relays throttle: 1 is the safe default)


@dataclass(frozen=True)
class Event:
    """Something the engine did, for progress bars and log lines."""

    kind: str  # "delivery" | "retry" | "reconnect" | "pause" | "stop"
    message: str = ""
    delivery: Delivery | None = None
    status: DeliveryStatus | None = None


@dataclass
class SendResult:
    handed_over: int = 0  # messages given to the transport in this run
    stopped: str = ""  # why the run ended before the end of the list ("" = it reached the end)
    paused: bool = False  # the campaign was paused (policy refusal)
    quota_left: bool = False  # stopped by --limit or the daily cap: the rest waits for the next run
    server_lost: bool = False  # the server went away and could not be reached again
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys((str(s) for s in DELIVERY_STATUSES), 0))


class DeliveryLog(Protocol):
    """Where the engine reads its work and writes what happened (safe to share between threads).

    Each method is one transition of the delivery lifecycle (mailer.lifecycle).
    """

    def next_batch(self, limit: int) -> list[Delivery]: ...
    def still_sending(self) -> bool: ...
    def subscribers(self, batch: list[Delivery]) -> dict[int, Subscriber]: ...
    def mark_sending(self, delivery: Delivery, message_id: str, now: str, finish: Outcome | None = None) -> None: ...
    def record(self, outcome: Outcome) -> None: ...
    def skip(self, delivery: Delivery, status: DeliveryStatus, reason: str, now: str) -> None: ...
    def release(self, delivery: Delivery, reason: str, now: str) -> None: ...
    def mark_unknown(self, delivery: Delivery, reason: str, now: str) -> None: ...
    def attempted_since(self, since: str) -> int: ...
    def retried(self, delivery: Delivery, now: str) -> None: ...
    def pause(self, reason: str) -> None: ...


FETCH = 500  # deliveries read at a time: memory stays flat whatever the list's size


class StoreLog:
    """The real delivery log in the database; each change is committed at once.

    Its methods take a lock: the connections of one run share it (and one SQLite
    connection), and each transaction must be theirs alone.
    """

    def __init__(self, store: Store, campaign: Campaign):
        self.deliveries = store.deliveries
        self.store = store
        self.campaign = campaign
        self.lock = threading.RLock()
        self._cursor = 0  # the last seq handed out in this run: no row is given to two connections

    def next_batch(self, limit: int) -> list[Delivery]:
        with self.lock:
            if not self.still_sending():
                return []
            batch = self.deliveries.pending(self.campaign.id, min(limit, FETCH), self._cursor)
            if batch:
                self._cursor = batch[-1].seq
            return batch

    def still_sending(self) -> bool:
        """False once someone else has cancelled or paused the campaign while we were sending."""
        with self.lock:
            return self.store.campaigns.require(self.campaign.id).status == CampaignStatus.SENDING

    def subscribers(self, batch: list[Delivery]) -> dict[int, Subscriber]:
        with self.lock:
            return self.store.subscribers.by_ids([d.subscriber_id for d in batch if d.subscriber_id is not None])

    def mark_sending(self, delivery: Delivery, message_id: str, now: str, finish: Outcome | None = None) -> None:
        with self.lock:
            self.deliveries.mark_sending(delivery.id, message_id, now, finish=finish)

    def record(self, outcome: Outcome) -> None:
        with self.lock:
            self.deliveries.record_outcome(outcome)

    def skip(self, delivery: Delivery, status: DeliveryStatus, reason: str, now: str) -> None:
        with self.lock:
            self.deliveries.skip(delivery.id, status, reason, now)

    def release(self, delivery: Delivery, reason: str, now: str) -> None:
        with self.lock:
            self.deliveries.release(delivery.id, reason, now)

    def mark_unknown(self, delivery: Delivery, reason: str, now: str) -> None:
        with self.lock:
            self.deliveries.mark_unknown(delivery.id, reason, now)

    def attempted_since(self, since: str) -> int:
        with self.lock:
            return self.deliveries.attempted_since(since)

    def retried(self, delivery: Delivery, now: str) -> None:
        with self.lock:
            self.deliveries.count_attempt(delivery.id, now)

    def pause(self, reason: str) -> None:
        with self.lock:
            self.store.campaigns.pause(self.campaign.id, reason)


class AudienceLog:
    """A delivery log in memory over the audience as it stands now: for dry-runs.

    It reads the store and writes nothing to it.
    """

    def __init__(self, store: Store, campaign: Campaign):
        self.store = store
        self.campaign = campaign
        self._source: Iterator[Delivery]
        if not campaign.started:
            self._source = self._from_audience()
        else:  # a started campaign: what a real send would do now
            self._source = store.deliveries.of_campaign(campaign.id, [D.PENDING])
        self.recorded: dict[int, DeliveryStatus] = {}

    def _from_audience(self) -> Iterator[Delivery]:
        subs = self.store.subscribers.stream(
            status=SubscriberStatus.ACTIVE, list_name=self.campaign.list_name, tags=self.campaign.tags
        )
        for seq, s in enumerate(subs, start=1):
            yield Delivery(
                id=seq, campaign_id=self.campaign.id, subscriber_id=s.id, seq=seq, email=s.email, status=D.PENDING,
                attempts=0, reply="", message_id="", updated_at="", attempted_at="", sent_at="",
            )

    def next_batch(self, limit: int) -> list[Delivery]:
        batch = []
        for d in self._source:
            batch.append(d)
            if len(batch) >= min(limit, FETCH):
                break
        return batch

    def still_sending(self) -> bool:
        return True

    def subscribers(self, batch: list[Delivery]) -> dict[int, Subscriber]:
        return self.store.subscribers.by_ids([d.subscriber_id for d in batch if d.subscriber_id is not None])

    def mark_sending(self, delivery: Delivery, message_id: str, now: str, finish: Outcome | None = None) -> None:
        if finish is not None:
            self.record(finish)

    def record(self, outcome: Outcome) -> None:
        self.recorded[outcome.delivery.seq] = outcome.status

    def skip(self, delivery: Delivery, status: DeliveryStatus, reason: str, now: str) -> None:
        self.recorded[delivery.seq] = status

    def release(self, delivery: Delivery, reason: str, now: str) -> None:
        self.recorded[delivery.seq] = D.PENDING

    def mark_unknown(self, delivery: Delivery, reason: str, now: str) -> None:
        self.recorded[delivery.seq] = D.UNKNOWN

    def attempted_since(self, since: str) -> int:
        return self.store.deliveries.attempted_since(since)

    def retried(self, delivery: Delivery, now: str) -> None:
        pass

    def pause(self, reason: str) -> None:
        pass


class Renderer(Protocol):
    def render(self, subscriber: Subscriber): ...


_BOUNCE_WORDS = re.compile(r"user|mailbox|recipient|address|account|no such|unknown|not exist|disabled", re.I)
_POLICY_WORDS = re.compile(r"spam|policy|block|reputation|rejected|denied|blacklist|listed|abuse", re.I)


def classify(reply: Reply) -> str:
    """What a final reply means for the delivery.

    'sent' (250), 'temporary' (4xx: try again), 'bounced' (the address does not exist:
    5.1.x, 5.2.1), 'policy' (5.7.x, or any refusal of our MAIL FROM: the server refuses
    us, not the recipient), 'auth' (the server wants a login it does not have), or
    'failed' (any other permanent refusal).
    """
    code, enhanced = reply.code, reply.enhanced
    if code == 250:
        return "sent"
    if 400 <= code < 500:
        return "temporary"
    if code in (530, 535):
        return "auth"
    if reply.stage == "mail":
        return "policy"  # the server refuses our sender address: nothing to do with the recipient
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


class _Shared:
    """What the connections of one run share: counters, the rate limiter, the stop."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.result = SendResult()
        self.next_slot = 0.0
        self.consecutive_failures = 0
        self.day: datetime | None = None
        self.day_count = 0


class CampaignSender:
    """Sends one campaign's pending deliveries; iterate `run()` for progress, then read `result`.

    With `connections` > 1 (a transport per connection from `transport_factory`) each
    connection is a thread with its own batches; they share the delivery log, the rate,
    the caps and the decision to stop.
    """

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
        transport_factory: Callable[[], Transport] | None = None,
    ):
        self.log = log
        self.renderer = renderer
        self.transport = transport
        self.transport_factory = transport_factory
        self.clock = clock
        self.options = options
        self.sender = sender
        self.rng = rng or random.Random()
        self.shared = _Shared()

    @property
    def result(self) -> SendResult:
        return self.shared.result

    def run(self) -> Iterator[Event]:
        """Send until the list, the caps or the server says stop."""
        n = self.options.connections if self.transport_factory is not None else 1
        if n <= 1:
            yield from _Connection(self, self.transport).run()
            return
        events: queue.Queue = queue.Queue()
        errors: list[BaseException] = []
        transports = [self.transport] + [self.transport_factory() for _ in range(n - 1)]

        def work(transport: Transport) -> None:
            try:
                for event in _Connection(self, transport).run():
                    events.put(event)
            except BaseException as exc:  # handed to the main thread, which raises it
                errors.append(exc)
                with self.shared.lock:
                    self.shared.result.stopped = self.shared.result.stopped or str(exc)

        threads = [threading.Thread(target=work, args=(t,), name=f"smtp-{i}", daemon=True) for i, t in enumerate(transports)]
        for t in threads:
            t.start()
        finished = False
        try:
            while any(t.is_alive() for t in threads) or not events.empty():
                try:
                    yield events.get(timeout=0.05)
                except queue.Empty:
                    pass
            finished = True
        finally:
            if not finished:  # Ctrl-C, or a reader that stopped early: each connection ends
                with self.shared.lock:  # after the message in hand, its last reply committed
                    self.shared.result.stopped = self.shared.result.stopped or "interrupted"
            for t in threads:
                t.join()
        if errors:
            raise errors[0]


class _Connection:
    """One SMTP connection's loop: batches of pending deliveries over one connection each."""

    def __init__(self, sender: CampaignSender, transport: Transport):
        self.s = sender
        self.shared = sender.shared
        self.log = sender.log
        self.transport = transport
        self.clock = sender.clock
        self.options = sender.options
        self._connected = False
        self._in_batch = 0
        self._finish_later: Outcome | None = None  # the last reply, committed with the next mark

    # -- small pieces -------------------------------------------------------------------

    def _now(self) -> str:
        return iso(self.clock.now())

    def _stopped(self) -> bool:
        return bool(self.shared.result.stopped)

    def _stop(self, why: str, **flags: bool) -> None:
        with self.shared.lock:
            r = self.shared.result
            if not r.stopped:
                r.stopped = why
            for k, v in flags.items():
                setattr(r, k, v)

    def _count(self, status: DeliveryStatus) -> None:
        with self.shared.lock:
            self.shared.result.outcomes[status] += 1

    def _connect(self) -> None:
        if not self._connected:
            self.transport.open()
            self._connected = True
            self._in_batch = 0

    def _disconnect(self) -> None:
        if self._connected:
            self.transport.close()
            self._connected = False

    def _flush(self) -> None:
        """Commit the last reply now (before waiting, stopping or leaving)."""
        if self._finish_later is not None:
            outcome, self._finish_later = self._finish_later, None
            self.log.record(outcome)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._flush()
            self.clock.sleep(seconds)

    def _cap(self, take: bool) -> str:
        """Which cap (--limit, the daily one) forbids one more message, or ''; take=True counts it."""
        o = self.options
        with self.shared.lock:
            r = self.shared.result
            if o.limit is not None and r.handed_over >= o.limit:
                return f"sent the {o.limit} allowed by --limit"
            if o.per_day:
                start = day_start(self.clock.now(), o.timezone)
                if start != self.shared.day:  # first message, or midnight passed during the run
                    self.shared.day = start
                    self.shared.day_count = self.log.attempted_since(iso(start))
                if self.shared.day_count >= o.per_day:
                    return f"reached today's cap of {o.per_day} messages"
                if take:
                    self.shared.day_count += 1
            if take:
                r.handed_over += 1
        return ""

    def _wait_for_rate(self) -> None:
        if self.options.rate <= 0:
            return
        with self.shared.lock:
            now = self.clock.monotonic()
            slot = max(now, self.shared.next_slot)
            self.shared.next_slot = slot + 60.0 / self.options.rate
        self._sleep(slot - now)

    def _backoff(self, attempt: int) -> None:
        delay = self.options.backoff * (2 ** (attempt - 1))
        self._sleep(delay * (1 + self.s.rng.random()))

    def _failure(self, reply: Reply) -> None:
        with self.shared.lock:
            self.shared.consecutive_failures += 1
            n = self.shared.consecutive_failures
        if n >= self.options.max_consecutive_failures:
            self._stop(
                f"Stopped after {n} failures in a row (last: {reply}); "
                "the rest is left pending so the list is not burnt."
            )

    def _success(self) -> None:
        with self.shared.lock:
            self.shared.consecutive_failures = 0

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> Iterator[Event]:
        o = self.options
        try:
            while not self._stopped():
                # Several connections take small helpings, so that each gets its share.
                batch = self.log.next_batch(o.batch_size if o.connections <= 1 else min(o.batch_size, 10))
                if not batch:
                    return
                work = self._prepare(batch)
                for delivery, sub, skipped in work:
                    if self._stopped():
                        return
                    if sub is None:  # skipped: already recorded
                        yield skipped
                        continue
                    reason = self._cap(take=False)
                    if reason:
                        self._stop(reason, quota_left=True)
                        yield Event("stop", f"Stopped: {reason}; the rest waits for the next run.")
                        return
                    if self._in_batch >= o.batch_size:  # only now, so a run never ends on a pause
                        self._disconnect()
                        self._in_batch = 0
                        if o.pause > 0:
                            yield Event("pause", f"Batch of {o.batch_size} done; pausing {o.pause:g} s.")
                            self._sleep(o.pause)
                            if not self.log.still_sending():  # cancelled or paused during the pause
                                return
                    yield from self._deliver(delivery, sub)
        finally:
            try:
                self._flush()
            finally:
                self._disconnect()

    def _prepare(self, batch: list[Delivery]) -> Iterator[tuple[Delivery, Subscriber | None, Event | None]]:
        """The batch with each subscriber as they stand now (one query); those gone are skipped."""
        subs = self.log.subscribers(batch)
        for delivery in batch:
            sub = subs.get(delivery.subscriber_id) if delivery.subscriber_id is not None else None
            if sub is not None and sub.status == SubscriberStatus.ACTIVE:
                yield delivery, sub, None
                continue
            why = "erased" if sub is None else sub.status
            self._flush()
            self.log.skip(delivery, D.SKIPPED, f"{why} after the audience was fixed", self._now())
            self._count(D.SKIPPED)
            yield delivery, None, Event("delivery", f"{delivery.email}: skipped ({why})", delivery, D.SKIPPED)

    def _deliver(self, delivery: Delivery, sub: Subscriber) -> Iterator[Event]:
        self._connect()  # SmtpError (cannot reach or log in) ends the run: exit 3, nothing marked
        recipient, needs_utf8 = envelope_address(sub.email)
        if needs_utf8 and not self.transport.smtputf8:
            reply = "needs-smtputf8: the address has non-ASCII characters before the @ and the server does not offer SMTPUTF8"
            self._flush()
            self.log.skip(delivery, D.FAILED, reply, self._now())
            self._count(D.FAILED)
            yield Event("delivery", f"{sub.email}: needs-smtputf8", delivery, D.FAILED)
            return
        try:
            message = self.s.renderer.render(sub)
        except MailerError as exc:  # this subscriber's data cannot make a message; the rest can
            self._flush()
            self.log.skip(delivery, D.FAILED, f"cannot be rendered: {exc.message}", self._now())
            self._count(D.FAILED)
            yield Event("delivery", f"{sub.email}: failed ({exc.message})", delivery, D.FAILED)
            self._failure(Reply(0, exc.message))
            return
        envelope = Envelope(self.s.sender, recipient, needs_utf8, delivery.seq)
        self._wait_for_rate()
        reason = self._cap(take=True)  # another connection may have taken the last one
        if reason:
            self._stop(reason, quota_left=True)
            yield Event("stop", f"Stopped: {reason}; the rest waits for the next run.")
            return
        finish, self._finish_later = self._finish_later, None
        self.log.mark_sending(delivery, message.message_id, self._now(), finish=finish)
        tries = 0
        reconnects = 0
        while True:
            try:
                reply = self.transport.send(envelope, message.data)
            except FateUnknown as exc:
                self._connected = False
                self._flush()
                self.log.mark_unknown(delivery, f"{exc}; not sent again (--retry-unknown sends it)", self._now())
                self._count(D.UNKNOWN)
                self._stop(
                    f"The SMTP server fell silent after receiving the message to {sub.email} ({exc}); "
                    "it may have been accepted, so it is not sent again. The rest is left pending for the next run.",
                    server_lost=True,
                )
                yield Event("stop", self.shared.result.stopped, delivery, D.UNKNOWN)
                return
            except ConnectionLost as exc:
                self._connected = False
                reconnects += 1
                if reconnects > self.options.reconnects:
                    yield from self._give_up(delivery, f"connection lost: {exc}")
                    return
                yield Event("reconnect", f"Connection lost ({exc}); reconnecting and sending {sub.email} again.", delivery)
                if reconnects > 1:
                    self._backoff(reconnects - 1)
                try:
                    self._connect()
                except SmtpError as err:
                    yield from self._give_up(delivery, err.message)
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
                            yield from self._give_up(delivery, err.message)
                            return
                    self._wait_for_rate()  # a try again is one more message for the provider's limits
                    self.log.retried(delivery, self._now())
                    continue
                self._finish(delivery, D.PENDING, str(reply))
                yield Event("delivery", f"{sub.email}: {reply} (left for the next run)", delivery, D.PENDING)
                self._failure(reply)
                return
            if kind == "auth":
                self.log.release(delivery, str(reply), self._now())
                raise SmtpError(f"The SMTP server asks for a login: {reply}.", hint="Check [smtp] username and password.")
            if kind == "policy":
                self.log.release(delivery, str(reply), self._now())
                reason = f"the server refused the message as a matter of policy ({reply})"
                self.log.pause(reason)
                self._stop(f"Campaign paused: {reason}. Nobody was marked bounced.", paused=True)
                yield Event("stop", self.shared.result.stopped, delivery, D.PENDING)
                return
            status = DeliveryStatus(kind)
            self._finish(delivery, status, str(reply), bounce=status == D.BOUNCED)
            yield Event("delivery", f"{sub.email}: {status}" + ("" if status == D.SENT else f" ({reply})"), delivery, status)
            if status == D.SENT:
                self._success()
            else:
                self._failure(reply)
            return

    def _finish(self, delivery: Delivery, status: DeliveryStatus, reply: str, bounce: bool = False) -> None:
        # Committed together with the next message's 'sending' mark (one disk sync for
        # both), or by _flush before any wait; a crash in between leaves it 'unknown'.
        self._flush()
        self._finish_later = Outcome(delivery, status, reply, self._now(), bounce)
        self._count(status)

    def _give_up(self, delivery: Delivery, why: str) -> Iterator[Event]:
        # Not confirmed by the server: back to pending, to be sent again by the next run.
        self._flush()
        self.log.release(delivery, why, self._now())
        self._count(D.PENDING)
        self._stop(f"The SMTP server went away: {why}. The rest is left pending for the next run.", server_lost=True)
        yield Event("stop", self.shared.result.stopped)
