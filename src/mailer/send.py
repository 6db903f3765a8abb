"""The send engine: pending deliveries -> render -> transport -> delivery log.

It takes a clock (for time, pauses and rates) and yields progress events; it never
prints. Each SMTP connection is a worker thread running a `_Connection`; they share the
delivery log, the rate, the caps, the hold after a rate reply and the decision to stop.

The order of events on one connection, which is what the delivery log's promises rest on:

    1. mark       a helping of the next messages (8) is rendered and marked 'sending' in
                  one commit; a thread that holds no lock syncs it to disk, and the first
                  byte of any of them (MAIL FROM included) waits until it has;
    2. hand over  just before a message's data is written, one commit records it as
                  handed, together with every reply read since (not synced: it survives a
                  killed process, see lifecycle.after_crash for a power cut);
    3. write      its data (with pipelining, in the same write as the next envelope);
    4. read       its reply, committed with the next hand-over, or before any wait or stop.

So at any moment at most one row per connection is on disk as handed and unanswered: the
one whose data is on the wire. After a crash it is `unknown` (reported, never resent
blindly) and every other row the run left in 'sending' is pending again. The rendering of
the next message and the marking of the next helping happen while the network carries
the last write; only the unsynced hand-over sits between a reply and the next data.
"""

from __future__ import annotations

import ctypes
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Protocol, TypedDict, Unpack

from .clock import Clock, iso, parse_iso
from .errors import ConfigError, MailerError, SmtpError, TemplateError
from .lifecycle import CampaignStatus, DeliveryStatus, SubscriberStatus
from .models import DELIVERY_STATUSES, Campaign, Delivery, Outcome, Subscriber
from .replies import Kind, classify, mailbox_full
from .schedule import workspace_timezone
from .store import Store
from .tokens import make_verp_token
from .transport import (
    ConnectionLost,
    Envelope,
    Outgoing,
    Reply,
    ServerBusy,
    Transport,
    envelope_address,
)

if TYPE_CHECKING:
    from .render import RenderedMessage

D = DeliveryStatus

__all__ = [
    "AudienceLog", "CampaignSender", "DeliveryLog", "Event", "SendOptions", "SendResult", "StoreLog", "classify",
]


RENDER_SECONDS = 10.0  # as long as `check` gives a sample message; a normal one takes a millisecond


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
    give_up_after: float = 4 * 86400.0  # seconds a temporarily refused message is tried again across runs
    retry_later: float = 1800.0  # the least wait before a later run tries a temporary refusal again
    hold: float = 60.0  # every connection's wait after a rate or reputation reply; doubled each time
    reserve: int = 8  # messages marked 'sending' ahead in one disk sync
    # One person's message taking longer than this to render is stopped (a loop in a loop).
    render_seconds: float = field(default_factory=lambda: RENDER_SECONDS)


class RenderTooLong(TemplateError):
    """Raised inside a connection thread whose render ran past SendOptions.render_seconds."""

    def __init__(self) -> None:
        super().__init__(
            "rendering the message for this person took too long (a loop inside a loop for some people?), "
            "so it was stopped"
        )


class _RenderWatch:
    """Which connection threads are rendering since when, so that the reading thread can stop
    one that runs away: a template loop for one person must not hang a send (and its lock)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.lock = threading.Lock()
        self.started: dict[int, float] = {}  # thread ident -> time.monotonic() its render began

    def __enter__(self) -> None:
        with self.lock:
            self.started[threading.get_ident()] = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        # Under the lock: once this returns, stop_overdue() can no longer aim at this thread, and
        # a stop aimed at it that has not been raised yet is withdrawn (NULL clears it).
        ident = threading.get_ident()
        with self.lock:
            if self.started.pop(ident, None) is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)

    def stop_overdue(self) -> None:
        """Raise RenderTooLong in each thread rendering for longer than allowed (pure-Python loops
        see it at their next step; the thread's own `with` catches it around that one render).
        A render that swallows it and goes on gets it again after as long again."""
        now = time.monotonic()
        with self.lock:
            for ident, began in list(self.started.items()):
                if now - began > self.seconds:
                    self.started[ident] = now
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(RenderTooLong))


@dataclass(frozen=True)
class Event:
    """Something the engine did, for progress bars and log lines."""

    kind: str  # "delivery" | "retry" | "reconnect" | "pause" | "notice" | "stop"
    message: str = ""
    delivery: Delivery | None = None
    status: DeliveryStatus | None = None


@dataclass
class SendResult:
    handed_over: int = 0  # messages given to the transport in this run
    stopped: str = ""  # why the run ended before the end of the list ("" = it reached the end)
    paused: bool = False  # the campaign was paused (policy refusal, or a relay that kept limiting us)
    quota_left: bool = False  # stopped by --limit, the daily cap or the relay's quota: the rest waits for a later run
    server_lost: bool = False  # the server went away and could not be reached again
    connections_refused: int = 0  # connections the relay refused ("too many"): the run went on with fewer
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys((str(s) for s in DELIVERY_STATUSES), 0))


class DeliveryLog(Protocol):
    """Where the engine reads its work and writes what happened (safe to share between threads).

    Each writing method is one commit of transitions of the delivery lifecycle (mailer.lifecycle).
    """

    def next_batch(self, limit: int, now: str) -> list[Delivery]: ...
    def still_sending(self) -> bool: ...
    def subscribers(self, batch: list[Delivery]) -> dict[int, Subscriber]: ...
    def reserve(self, marks: list[tuple[Delivery, str]], now: str, finish: list[Outcome]) -> Callable[[], None]:
        """Mark messages 'sending'; returns a wait() that returns once the marks are on disk."""
    def hand_over(self, delivery: Delivery, now: str, finish: list[Outcome]) -> None: ...
    def record(self, outcomes: list[Outcome]) -> None: ...
    def unreserve(self, deliveries: list[Delivery], now: str) -> None: ...
    def skip(self, delivery: Delivery, status: DeliveryStatus, reason: str, now: str) -> None: ...
    def mark_unknown(self, delivery: Delivery, reason: str, now: str) -> None: ...
    def expired(self, deferred_before: str) -> list[Delivery]: ...
    def give_up(self, delivery: Delivery, reason: str, now: str, mailbox_full: bool) -> None: ...
    def attempted_since(self, since: str) -> int: ...
    def quota_reached_on(self) -> str: ...
    def record_quota(self, day_start: str) -> None: ...
    def pause(self, reason: str) -> None: ...


FETCH = 500  # deliveries read at a time: memory stays flat whatever the list's size


class StoreLog:
    """The real delivery log in the database.

    Its methods take a lock: the connections of one run share it (and one SQLite
    connection), and each transaction must be theirs alone.
    """

    def __init__(self, store: Store, campaign: Campaign):
        self.deliveries = store.deliveries
        self.store = store
        self.campaign = campaign
        self.lock = threading.RLock()
        self._cursor = 0  # the last seq handed out in this run: no row is given to two connections

    def next_batch(self, limit: int, now: str) -> list[Delivery]:
        with self.lock:
            if not self.still_sending():
                return []
            batch = self.deliveries.pending(self.campaign.id, min(limit, FETCH), self._cursor, due=now)
            if batch:
                self._cursor = batch[-1].seq
            return batch

    def still_sending(self) -> bool:
        """False once someone else has cancelled or paused the campaign while we were sending."""
        with self.lock:
            return self.store.campaigns.status(self.campaign.id) == CampaignStatus.SENDING

    def subscribers(self, batch: list[Delivery]) -> dict[int, Subscriber]:
        with self.lock:
            return self.store.subscribers.by_ids([d.subscriber_id for d in batch if d.subscriber_id is not None])

    def reserve(self, marks: list[tuple[Delivery, str]], now: str, finish: list[Outcome]) -> Callable[[], None]:
        with self.lock:
            # Committed without waiting for the disk, then synced in the background: the
            # connections go on committing hand-overs meanwhile.
            self.deliveries.reserve([(d.id, mid) for d, mid in marks], now, finish=finish, synced=False)
            return self.store.sync_soon()

    def hand_over(self, delivery: Delivery, now: str, finish: list[Outcome]) -> None:
        with self.lock:
            self.deliveries.hand_over(delivery.id, now, finish=finish)

    def record(self, outcomes: list[Outcome]) -> None:
        with self.lock:
            self.deliveries.record_outcomes(outcomes)

    def unreserve(self, deliveries: list[Delivery], now: str) -> None:
        with self.lock:
            self.deliveries.unreserve([d.id for d in deliveries], now)

    def skip(self, delivery: Delivery, status: DeliveryStatus, reason: str, now: str) -> None:
        with self.lock:
            self.deliveries.skip(delivery.id, status, reason, now)

    def mark_unknown(self, delivery: Delivery, reason: str, now: str) -> None:
        with self.lock:
            self.deliveries.mark_unknown(delivery.id, reason, now)

    def expired(self, deferred_before: str) -> list[Delivery]:
        with self.lock:
            return self.deliveries.expired(self.campaign.id, deferred_before)

    def give_up(self, delivery: Delivery, reason: str, now: str, mailbox_full: bool) -> None:
        with self.lock:
            self.deliveries.give_up(delivery, reason, now, mailbox_full=mailbox_full)

    def attempted_since(self, since: str) -> int:
        with self.lock:
            return self.deliveries.attempted_since(since)

    def quota_reached_on(self) -> str:
        with self.lock:
            return self.deliveries.quota_reached_on()

    def record_quota(self, day_start: str) -> None:
        with self.lock:
            self.deliveries.record_quota(day_start)

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
        self.lock = threading.Lock()

    def _from_audience(self) -> Iterator[Delivery]:
        subs = self.store.subscribers.stream(
            status=SubscriberStatus.ACTIVE, list_name=self.campaign.list_name, tags=self.campaign.tags
        )
        for seq, s in enumerate(subs, start=1):
            yield Delivery(
                id=seq, campaign_id=self.campaign.id, subscriber_id=s.id, seq=seq, email=s.email, status=D.PENDING,
                attempts=0, reply="", message_id="", updated_at="", attempted_at="", sent_at="",
            )

    def next_batch(self, limit: int, now: str) -> list[Delivery]:
        with self.lock:
            batch = []
            for d in self._source:
                batch.append(d)
                if len(batch) >= min(limit, FETCH):
                    break
            return batch

    def still_sending(self) -> bool:
        return True

    def subscribers(self, batch: list[Delivery]) -> dict[int, Subscriber]:
        with self.lock:
            return self.store.subscribers.by_ids([d.subscriber_id for d in batch if d.subscriber_id is not None])

    def reserve(self, marks: list[tuple[Delivery, str]], now: str, finish: list[Outcome]) -> Callable[[], None]:
        self.record(finish)
        return lambda: None

    def hand_over(self, delivery: Delivery, now: str, finish: list[Outcome]) -> None:
        self.record(finish)

    def record(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            self.recorded[outcome.delivery.seq] = outcome.status

    def unreserve(self, deliveries: list[Delivery], now: str) -> None:
        for d in deliveries:
            self.recorded[d.seq] = D.PENDING

    def skip(self, delivery: Delivery, status: DeliveryStatus, reason: str, now: str) -> None:
        self.recorded[delivery.seq] = status

    def mark_unknown(self, delivery: Delivery, reason: str, now: str) -> None:
        self.recorded[delivery.seq] = D.UNKNOWN

    def expired(self, deferred_before: str) -> list[Delivery]:
        return []

    def give_up(self, delivery: Delivery, reason: str, now: str, mailbox_full: bool) -> None:
        self.recorded[delivery.seq] = D.FAILED

    def attempted_since(self, since: str) -> int:
        return self.store.deliveries.attempted_since(since)

    def quota_reached_on(self) -> str:
        return ""

    def record_quota(self, day_start: str) -> None:
        pass

    def pause(self, reason: str) -> None:
        pass


class Renderer(Protocol):
    """What the engine renders with: a CompiledCampaign, or one whose messages are DKIM-signed."""

    def render(self, subscriber: Subscriber) -> RenderedMessage: ...


def day_start(now: datetime, timezone: str) -> datetime:
    """Midnight of today in the workspace's time zone (the daily cap's day)."""
    tz = workspace_timezone(timezone)
    local = now.astimezone(tz)
    return datetime.combine(local.date(), dtime(0), tzinfo=tz)


class _Shared:
    """What the connections of one run share: counters, the rate limiter, the hold, the stop."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.result = SendResult()
        self.next_slot = 0.0
        self.consecutive_failures = 0
        self.day: datetime | None = None
        self.day_end: datetime | None = None
        self.day_count = 0
        self.quota_today = False
        self.reserved = 0  # marked 'sending' ahead, not yet handed over (all connections)
        self.hold_until = 0.0  # monotonic: no connection sends before this (a rate or reputation reply)
        self.holds = 0  # rate or reputation replies since a message sent after the last of them went through
        self.hold_epoch = 0  # counts rate or reputation replies
        self.live = 0  # connections still working (not retired, not finished)
        self.orphans: list[Outgoing] = []  # marked 'sending' by a connection the relay refused: for the others
        self.paused_campaign = False


class _OutcomeDetails(TypedDict, total=False):
    """The optional fields of an Outcome, as _settle passes them on."""

    bounce: bool
    next_attempt_at: str
    mailbox_full: bool
    envelope_refused: bool


@dataclass(eq=False)
class _Work:
    """The engine's side of one message on its way."""

    delivery: Delivery
    subscriber: Subscriber
    message_id: str
    tries: int = 0  # temporary refusals so far in this run
    counted: bool = False  # counted against --limit and the daily cap (at its first hand-over)
    marked: bool = False  # marked 'sending' on disk in this run
    reserved: bool = False  # counted in the run's reservations (from its mark to its first hand-over or release)
    handed: bool = False  # its hand-over is committed and its reply is not
    epoch: int = 0  # rate or reputation replies before its envelope went out
    on_disk: Callable[[], None] = lambda: None  # returns once its 'sending' mark is synced
    unhanded_reply: bool = False  # the reply being settled refused its envelope (no hand-over this try)

    @property
    def email(self) -> str:
        return self.subscriber.email


class CampaignSender:
    """Sends one campaign's pending deliveries; iterate `run()` for progress, then read `result`.

    With `connections` > 1 (a transport per connection from `transport_factory`) each
    connection takes its own small helpings of the list.
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
        campaign_key: str = "",
        verp_secret: bytes | None = None,
    ):
        self.log = log
        self.renderer = renderer
        self.transport = transport
        self.transport_factory = transport_factory
        self.clock = clock
        self.options = options
        # The sender as SMTP carries it: an IDN domain as its A-label (checked here, before anything is marked).
        self.sender, self.sender_utf8 = envelope_address(sender)
        # VERP: a sender ending in "+" before the @ (bounces+@example.com) carries each
        # delivery's signed token (bounces+d1k-...@example.com), so a bounce names its delivery.
        local, _, domain = self.sender.rpartition("@")
        self._verp = (local, domain) if verp_secret is not None and local.endswith("+") else None
        self._verp_secret = verp_secret or b""
        self.campaign_key = campaign_key
        self.rng = rng or random.Random()
        self.shared = _Shared()
        self._events: queue.Queue = queue.Queue()  # lists of events from the connections; None: one has ended
        self._held: list[Event] = []
        self._held_since = 0.0
        self._held_lock = threading.Lock()
        self.wake = threading.Event()  # set when the run stops: no connection waits any longer
        self.render_watch = _RenderWatch(options.render_seconds)

    def sender_for(self, delivery: Delivery) -> str:
        """MAIL FROM for one delivery: the sender, or with VERP the sender carrying its token."""
        if self._verp is None:
            return self.sender
        local, domain = self._verp
        return f"{local}{make_verp_token(self._verp_secret, delivery.id)}@{domain}"

    @property
    def result(self) -> SendResult:
        return self.shared.result

    def emit(self, event: Event) -> None:
        """Pass an event on; progress ("delivery") is passed in bunches, at most 20 a second:
        waking the reading thread for each message would cost the sending one its time."""
        now = time.monotonic()
        with self._held_lock:
            self._held.append(event)
            if event.kind == "delivery" and now - self._held_since < 0.05:
                return
            held, self._held, self._held_since = self._held, [], now
        self._events.put(held)

    def _flush_events(self) -> None:
        with self._held_lock:
            held, self._held = self._held, []
        if held:
            self._events.put(held)

    def stop(self, why: str, **flags: bool) -> bool:
        """End the run for every connection (the first reason is kept); True if this call stopped it."""
        with self.shared.lock:
            r = self.shared.result
            first = not r.stopped
            if first:
                r.stopped = why
            for k, v in flags.items():
                setattr(r, k, v)
        self.wake.set()
        return first

    def run(self) -> Iterator[Event]:
        """Send until the list, the caps or the server says stop."""
        yield from self._give_up_expired()
        transports = [self.transport]
        if (factory := self.transport_factory) is not None:
            transports += [factory() for _ in range(self.options.connections - 1)]
        connections = [_Connection(self, t, i + 1) for i, t in enumerate(transports)]
        self.shared.live = len(connections)
        errors: list[BaseException] = []

        def work(connection: _Connection) -> None:
            try:
                connection.run()
            except BaseException as exc:  # handed to the main thread, which raises it
                errors.append(exc)
                self.stop(str(exc) or type(exc).__name__)
            finally:
                with self.shared.lock:
                    if not (connection.retired or connection.finished):
                        self.shared.live -= 1
                self._flush_events()
                self._events.put(None)

        threads = [threading.Thread(target=work, args=(c,), name=f"smtp-{c.number}", daemon=True) for c in connections]
        for t in threads:
            t.start()
        running = len(threads)
        finished = False
        look = min(1.0, self.options.render_seconds / 4)
        try:
            while running:
                try:
                    events = self._events.get(timeout=look)
                except queue.Empty:
                    self.render_watch.stop_overdue()
                    continue
                if events is None:
                    running -= 1
                else:
                    yield from events
            finished = True
        finally:
            if not finished:  # Ctrl-C, or a reader that stopped early: each connection finishes the
                self.stop("interrupted")  # message on the wire, releases the rest, and commits
            for t in threads:
                while t.is_alive():
                    t.join(look)
                    self.render_watch.stop_overdue()
            if self.shared.orphans:  # left by a refused connection when the others had stopped
                orphans, self.shared.orphans = self.shared.orphans, []
                self.log.unreserve([o.ref.delivery for o in orphans if o.ref.marked], iso(self.clock.now()))
        self._flush_events()
        while not self._events.empty():
            events = self._events.get()
            if events is not None:
                yield from events
        if errors:
            raise errors[0]

    def _give_up_expired(self) -> Iterator[Event]:
        """Deliveries temporarily refused for longer than give_up_after: failed, with their last reply."""
        now = self.clock.now()
        days = self.options.give_up_after / 86400
        for d in self.log.expired(iso(now - timedelta(seconds=self.options.give_up_after))):
            self.log.give_up(d, f"given up after {days:g} days of temporary refusals", iso(now),
                             mailbox_full(_last_reply(d.reply)))
            with self.shared.lock:
                self.shared.result.outcomes[D.FAILED] += 1
            yield Event("delivery", f"{d.email}: failed (given up after {days:g} days: {d.reply})", d, D.FAILED)


def _last_reply(text: str) -> Reply:
    code, _, rest = text.partition(" ")
    return Reply(int(code) if code.isdigit() else 0, rest)


class _Connection:
    """One SMTP connection's loop (in its own thread); the transport's listener."""

    def __init__(self, sender: CampaignSender, transport: Transport, number: int):
        self.s = sender
        self.shared = sender.shared
        self.log = sender.log
        self.transport = transport
        self.clock = sender.clock
        self.options = sender.options
        self.number = number
        self.ready: deque[Outgoing] = deque()  # reserved (marked 'sending' on disk), not yet submitted
        self.prepared: deque[Outgoing] = deque()  # rendered, not yet marked (still pending on disk)
        self.fetched: deque[tuple[Delivery, Subscriber | None]] = deque()  # taken from the list, not rendered
        self.later: list[Outgoing] = []  # refused for now: submitted again after a wait
        self.later_wait = 0.0
        self.settled: list[Outcome] = []  # decided, committed with the next hand-over or before a wait
        self.connected = False
        self.opened = False  # this connection was open at least once
        self.retired = False  # the relay refused it ("too many connections"): the others go on
        self.finished = False  # found nothing more to do (no longer counted as live)
        self.in_batch = 0
        self.reconnects = 0  # in a row, without a reply in between
        self.busy_tries = 0  # greeted with 421 in a row while no other connection was left
        self.pause_reason = ""
        self.quota_day = ""
        self.fatal: MailerError | None = None

    # -- small pieces -------------------------------------------------------------------

    def _now(self) -> str:
        return iso(self.clock.now())

    def _stopped(self) -> bool:
        return bool(self.shared.result.stopped)

    def _emit(self, kind: str, message: str, work: _Work | None = None, status: DeliveryStatus | None = None) -> None:
        self.s.emit(Event(kind, message, work.delivery if work else None, status))

    def _count(self, status: DeliveryStatus) -> None:
        with self.shared.lock:
            self.shared.result.outcomes[status] += 1

    def _settle(self, work: _Work, status: DeliveryStatus, reply: str, **extra: Unpack[_OutcomeDetails]) -> None:
        if work.unhanded_reply:
            extra["envelope_refused"] = True
            work.unhanded_reply = False
        self.settled.append(Outcome(work.delivery, status, reply, self._now(), **extra))
        work.handed = False

    def _take_settled(self) -> list[Outcome]:
        settled, self.settled = self.settled, []
        return settled

    def _flush(self) -> None:
        """Commit the replies read so far (before waiting, stopping or leaving)."""
        if self.settled:
            self.log.record(self._take_settled())

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and not self._stopped():  # a stop (even Ctrl-C) cuts any wait short
            self._flush()
            self.clock.sleep(seconds, self.s.wake)

    def _failure(self, reply: Reply | str, *, permanent: bool = True) -> None:
        with self.shared.lock:
            self.shared.consecutive_failures += 1
            n = self.shared.consecutive_failures
        if n < self.options.max_consecutive_failures:
            return
        if not permanent:  # refused for now: a later run tries them (and the rest) again
            self.s.stop(f"Stopped after {n} failures in a row (last: {reply}); "
                        "the rest is left pending so the list is not burnt.")
            return
        # Different people failing for good, one after another, is the message or the relay, not
        # them: the campaign pauses, so that cron does not fail ten more at every run.
        reason = f"{n} messages in a row failed (last: {reply})"
        if self.s.stop(f"Campaign paused: {reason}; the rest is left pending so the list is not burnt.",
                       paused=True):
            self.pause_reason = self.pause_reason or reason

    def _success(self, work: _Work) -> None:
        with self.shared.lock:
            self.shared.consecutive_failures = 0
            if work.epoch == self.shared.hold_epoch:  # sent after the last rate reply: the relay lets us go on
                self.shared.holds = 0

    # -- the caps ------------------------------------------------------------------------

    def _refresh_day(self) -> datetime:
        # Called with the shared lock held.
        now = self.clock.now()
        if self.shared.day is not None and self.shared.day_end is not None and now < self.shared.day_end:
            return self.shared.day
        start = day_start(now, self.options.timezone)
        if start != self.shared.day:  # first message, or midnight passed during the run
            self.shared.day = start
            self.shared.day_end = day_start(start + timedelta(hours=36), self.options.timezone)
            self.shared.day_count = self.log.attempted_since(iso(start)) if self.options.per_day else 0
            self.shared.quota_today = self.log.quota_reached_on() == iso(start)
        return start

    def _cap(self, take: bool) -> str:
        """Which cap (--limit, the daily one, the relay's quota) forbids one more message, or ''."""
        o = self.options
        with self.shared.lock:
            r = self.shared.result
            self._refresh_day()
            if self.shared.quota_today:
                return "the relay's sending quota for today was reached earlier"
            if o.limit is not None and r.handed_over >= o.limit:
                return f"handed over the {o.limit} messages --limit allowed"
            if o.per_day and self.shared.day_count >= o.per_day:
                return f"reached today's cap of {o.per_day} messages"
            if take:
                self.shared.day_count += 1
                r.handed_over += 1
        return ""

    def _room(self) -> int:
        """How many more messages may be reserved now without passing a cap."""
        o = self.options
        with self.shared.lock:
            self._refresh_day()
            if self.shared.quota_today:
                return 0
            room = 1 << 30
            taken = self.shared.result.handed_over + self.shared.reserved
            if o.limit is not None:
                room = o.limit - taken
            if o.per_day:
                room = min(room, o.per_day - self.shared.day_count - self.shared.reserved)
            return room

    def _wait_for_rate(self) -> None:
        if self.options.rate <= 0:
            return
        with self.shared.lock:
            now = self.clock.monotonic()
            slot = max(now, self.shared.next_slot)
            self.shared.next_slot = slot + 60.0 / self.options.rate
        if slot > now:
            self._drain()  # nothing waits on the wire while we wait
            self._sleep(slot - now)

    def _wait_for_hold(self) -> None:
        with self.shared.lock:
            wait = self.shared.hold_until - self.clock.monotonic()
        if wait > 0:
            self._drain()
            self._sleep(wait)

    # -- the connection ------------------------------------------------------------------

    def _connect(self) -> bool:
        if self.connected:
            return True
        if self.reconnects > 1:
            self._backoff(self.reconnects - 1)
        try:
            self.transport.open()
        except ServerBusy as err:
            with self.shared.lock:  # the same lock under which a connection with nothing left finishes
                others = self.shared.live > 1
                if others:
                    self.retired = True
                    self.shared.live -= 1
                    self.shared.result.connections_refused += 1
                    # Already rendered (and marked): another connection sends them.
                    self.shared.orphans.extend([*self.ready, *self.prepared])
                    self.ready.clear()
                    self.prepared.clear()
                    left = self.shared.live
            if others:
                self._emit("notice", f"The SMTP server refused connection {self.number} ({err.message}); "
                                     f"going on with {left} connection(s) for the rest of the run.")
                return False
            # The only connection left: the others may just have closed, so wait and try again.
            self.busy_tries += 1
            if self.busy_tries <= self.options.reconnects:
                self._emit("reconnect", f"{err.message} Trying again.")
                self._backoff(self.busy_tries)
                return False
            if not self.opened:
                raise
            self._server_gone(err.message)
            return False
        except SmtpError as err:
            if not self.opened:
                raise  # cannot reach or log in: the run ends, exit 3
            self._server_gone(err.message)
            return False
        self.connected = self.opened = True
        self.in_batch = self.busy_tries = 0
        if self.s.sender_utf8 and not self.transport.smtputf8:
            raise ConfigError(
                f"The envelope sender {self.s.sender} has non-ASCII characters before the @, and the SMTP "
                "server does not offer SMTPUTF8 to carry them.",
                hint="Use an ASCII address for [smtp] envelope_from (or [sender] from_email).",
            )
        return True

    def _disconnect(self) -> None:
        """Close the connection (politely when nothing is in flight); what it still held is judged."""
        lost = self.transport.abandon()
        self.connected = False
        self._judge(lost.unknown, "the connection closed after its data was written, before the reply")
        self._release(lost.unsent)

    def _backoff(self, attempt: int) -> None:
        delay = self.options.backoff * (2 ** (attempt - 1))
        self._sleep(delay * (1 + self.s.rng.random()))

    def _server_gone(self, why: str) -> None:
        self.s.stop(f"The SMTP server went away: {why}. The rest is left pending for the next run.", server_lost=True)
        self._emit("stop", self.shared.result.stopped)

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
            self._drain()
            self._act()  # what the last replies asked for (a paused campaign, a login error)
        except BaseException:
            self._end_abruptly()
            raise
        self._end()

    def _loop(self) -> None:
        while True:
            self._top_up()  # the next message rendered and marked 'sending' on disk
            self._collect()  # the replies owed (and the hand-over of the next data)
            self._act()
            if self._stopped() or self.retired:
                return
            if not self.ready:
                self._drain()  # the last replies may ask for another try
                self._act()
                if self._stopped() or self.retired:
                    return
                if not self.ready and not self.prepared and not self._adopt_or_finish():
                    return
                continue
            item = self.ready[0]
            if not self._may_submit(item):
                continue
            self.ready.popleft()
            try:
                self.transport.submit(item, self)
            except ConnectionLost as exc:
                self._lost(exc)
                continue
            self.in_batch += 1
            self._render_ahead()  # while the network carries what was just written

    def _adopt(self) -> bool:
        """Take what a refused connection left; called with the shared lock held."""
        if not self.shared.orphans:
            return False
        for item in self.shared.orphans:
            (self.ready if item.ref.marked else self.prepared).append(item)
        self.shared.orphans = []
        return True

    def _adopt_or_finish(self) -> bool:
        """Take what a refused connection left (True), or finish: nothing more for this one."""
        with self.shared.lock:
            if self._adopt():
                return True
            self.finished = True
            self.shared.live -= 1
            return False

    def _ahead(self) -> int:
        """Messages rendered and marked ahead of the wire: one at a time under a rate."""
        return 1 if self.options.rate > 0 else self.options.reserve

    def _planned(self) -> int:
        return self.in_batch + len(self.ready) + len(self.prepared) + len(self.fetched)

    def _fetch(self, want: int) -> bool:
        """Take the next rows of the list, and their people as they stand now (after any pause)."""
        o = self.options
        fresh = self.in_batch >= o.batch_size and not (self.ready or self.prepared or self.fetched)
        if not fresh:
            want = min(want, o.batch_size - self._planned())
        if want <= 0:
            return False
        rows = self.log.next_batch(want, self._now())
        if not rows:
            return False
        if fresh:  # only now that there is more, so a run never ends on a pause
            self._drain()
            if self._stopped():
                return False  # the rows taken stay pending
            self._disconnect()
            self.in_batch = 0
            if o.pause > 0:
                self._emit("pause", f"Batch of {o.batch_size} done; pausing {o.pause:g} s.")
                self._sleep(o.pause)
                if not self.log.still_sending():  # cancelled or paused during the pause
                    self.retired = True  # the rows taken stay pending
                    return False
        people = self.log.subscribers(rows)  # read now: an unsubscribe during the pause counts
        self.fetched.extend((d, people.get(d.subscriber_id) if d.subscriber_id is not None else None) for d in rows)
        return True

    def _render_one(self) -> bool:
        """Render the next message of the batch into `prepared`; False when there is none."""
        while True:
            if not self.fetched and not self._fetch(self._ahead()):
                return False
            d, sub = self.fetched.popleft()
            item = self._prepare(d, sub)
            if item is not None:
                self.prepared.append(item)
                return True

    def _render_ahead(self) -> None:
        """While the network carries the last group: render one message more (none past the batch),
        and mark the next helping before this one runs out, so that its disk sync is done by then."""
        if self._stopped() or self.retired:
            return
        ahead = self._ahead()
        if len(self.ready) + len(self.prepared) < 2 * ahead and (self.fetched or self._planned() < self.options.batch_size):
            self._render_one()
        if len(self.ready) <= ahead and len(self.prepared) >= ahead:
            self._mark(min(ahead, self._room()))

    def _top_up(self) -> None:
        """Make sure the next message is ready: rendered, and marked 'sending' on disk."""
        if self.ready or self.later or self._stopped() or self.retired:
            return
        with self.shared.lock:
            if self._adopt() and self.ready:
                return
        room = self._room()
        if room <= 0:
            # The other connections hold what is left under the cap (this one has nothing to
            # do), or the cap is reached: only a run with more to send is said to stop for it.
            reason = self._cap(take=False)
            if reason and (self.prepared or self.fetched or self.log.next_batch(1, self._now())):
                if self.s.stop(reason, quota_left=True):
                    self._emit("stop", f"Stopped: {reason}; the rest waits for the next run.")
            elif not reason:
                # Under the cap, but its room is held by the other connections' messages on
                # their way: wait for their replies instead of spinning.
                self.s.wake.wait(0.01)
            return
        want = min(self._ahead(), room)
        while len(self.prepared) < want and self._render_one():
            pass
        if not (self.retired or self._stopped()):
            self._mark(want)

    def _mark(self, count: int) -> None:
        """Mark up to `count` rendered messages 'sending' (one commit, synced in the background)."""
        items = [self.prepared.popleft() for _ in range(min(count, len(self.prepared)))]
        if not items:
            return
        synced = self.log.reserve([(i.ref.delivery, i.ref.message_id) for i in items], self._now(),
                                  self._take_settled())
        with self.shared.lock:
            self.shared.reserved += len(items)
        for i in items:
            i.ref.marked = i.ref.reserved = True
            i.ref.on_disk = synced
        self.ready.extend(items)

    def _prepare(self, d: Delivery, sub: Subscriber | None) -> Outgoing | None:
        """The message for one delivery, or None when it is skipped or cannot be made (recorded at once)."""
        if sub is None or sub.status != SubscriberStatus.ACTIVE:
            why = "erased" if sub is None else sub.status
            self._flush()
            self.log.skip(d, D.SKIPPED, f"{why} after the audience was fixed", self._now())
            self._count(D.SKIPPED)
            self.s.emit(Event("delivery", f"{d.email}: skipped ({why})", d, D.SKIPPED))
            return None
        try:
            with self.s.render_watch:
                message = self.s.renderer.render(sub)
            recipient, needs_utf8 = envelope_address(sub.email)
        except MailerError as exc:  # this subscriber's data cannot make a message; the rest can
            self._flush()
            self.log.skip(d, D.FAILED, f"cannot be rendered: {exc.message}", self._now())
            self._count(D.FAILED)
            self.s.emit(Event("delivery", f"{sub.email}: failed ({exc.message})", d, D.FAILED))
            self._failure(exc.message)
            return None
        envid = f"{self.s.campaign_key}-{d.id}" if self.s.campaign_key else ""
        envelope = Envelope(self.s.sender_for(d), recipient, needs_utf8 or self.s.sender_utf8, d.seq, envid)
        return Outgoing(envelope, message.data, _Work(d, sub, message.message_id))

    def _may_submit(self, item: Outgoing) -> bool:
        """Wait for the rate and any hold, check the caps and the connection; False to look again."""
        work: _Work = item.ref
        if not work.counted:
            reason = self._cap(take=False)
            if reason:
                if self.s.stop(reason, quota_left=True):
                    self._emit("stop", f"Stopped: {reason}; the rest waits for the next run.")
                return False
        self._wait_for_rate()
        self._wait_for_hold()
        if self._stopped() or not self._connect():
            return False
        work.on_disk()  # its 'sending' mark synced before a byte of it goes out (long done, as a rule)
        work.epoch = self.shared.hold_epoch
        if item.envelope.smtputf8 and not self.s.sender_utf8 and not self.transport.smtputf8:
            self.ready.popleft()
            self._unreserved(work)
            reply = "needs-smtputf8: the address has non-ASCII characters before the @ and the server does not offer SMTPUTF8"
            self._settle(work, D.FAILED, reply)
            self._count(D.FAILED)
            self._emit("delivery", f"{work.email}: needs-smtputf8", work, D.FAILED)
            return False
        return True

    def _unreserved(self, work: _Work) -> None:
        if work.reserved:
            work.reserved = False
            with self.shared.lock:
                self.shared.reserved -= 1

    def _collect(self) -> None:
        if self.connected:
            try:
                self.transport.collect(self)
            except ConnectionLost as exc:
                self._lost(exc)

    def _drain(self) -> None:
        """Nothing in flight afterwards: the last data sent (or kept back) and its reply read."""
        if self.connected:
            try:
                self.transport.drain(self)
            except ConnectionLost as exc:
                self._lost(exc)

    def _act(self) -> None:
        """Do what the replies asked for: a paused campaign, a login error, waits before trying again."""
        if self.quota_day:
            self._flush()
            self.log.record_quota(self.quota_day)
            self.quota_day = ""
        if self.pause_reason:
            self._flush()
            reason, self.pause_reason = self.pause_reason, ""
            with self.shared.lock:  # one connection pauses the campaign; the others' reasons are the same story
                first = not self.shared.paused_campaign
                self.shared.paused_campaign = True
            if first:
                self.log.pause(reason)
        if self.fatal is not None:
            self._flush()
            raise self.fatal
        while self.later:
            if self._stopped():
                self.ready.extendleft(reversed(self.later))  # released at the end
                self.later = []
                return
            self._drain()  # nothing waits on the wire while we wait
            wait, self.later_wait = self.later_wait, 0.0
            later, self.later = self.later, []
            self._sleep(wait)
            self.ready.extendleft(reversed(later))

    # -- the transport's listener ----------------------------------------------------------

    def before_data(self, item: Outgoing) -> bool:
        """Just before the data is written: count it, and commit its hand-over with the replies read since."""
        work: _Work = item.ref
        if self._stopped():
            return False
        if not work.counted:
            reason = self._cap(take=True)
            if reason:
                if self.s.stop(reason, quota_left=True):
                    self._emit("stop", f"Stopped: {reason}; the rest waits for the next run.")
                return False
            work.counted = True
            self._unreserved(work)
        self.log.hand_over(work.delivery, self._now(), self._take_settled())
        work.handed = True
        return True

    def answered(self, item: Outgoing, reply: Reply) -> None:
        """A final reply: decide the message's fate (committed later, with the next hand-over)."""
        work: _Work = item.ref
        work.unhanded_reply = not work.handed
        self._unreserved(work)  # refused before its data (never counted): its place under a cap is free again
        self.reconnects = 0
        kind = classify(reply)
        text = str(reply)
        if kind == Kind.SENT:
            self._settle(work, D.SENT, text)
            self._count(D.SENT)
            self._success(work)
            self._emit("delivery", f"{work.email}: sent", work, D.SENT)
        elif kind in (Kind.BOUNCED, Kind.FAILED):
            status = D.BOUNCED if kind == Kind.BOUNCED else D.FAILED
            self._settle(work, status, text, bounce=kind == Kind.BOUNCED, mailbox_full=mailbox_full(reply))
            self._count(status)
            self._failure(reply)
            self._emit("delivery", f"{work.email}: {status} ({reply})", work, status)
        elif kind == Kind.TEMPORARY:
            self._temporary(item, reply)
        elif kind == Kind.RATE:
            self._rate(item, reply)
        elif kind == Kind.QUOTA:
            self._quota(work, reply)
        elif kind in (Kind.POLICY, Kind.MESSAGE):
            self._settle(work, D.PENDING, text)
            reason = (f"the server refused the message as a matter of policy ({reply})" if kind == Kind.POLICY else
                      f"the server refuses the message itself, as it would for everyone ({reply}): too big, "
                      "or a form or a command it does not take")
            way_on = ""
            if kind == Kind.POLICY and reply.stage == "rcpt":
                # Refused at RCPT it may be this address (or its domain) alone: say how to go past it.
                way_on = (f" If the server refuses only {work.email}, take them off the list "
                          f"(`mailer subscribers unsubscribe {work.email}`) and send again: the rest goes on.")
            self.s.stop(f"Campaign paused: {reason}. Nobody was marked bounced.{way_on}", paused=True)
            self.pause_reason = self.pause_reason or reason
            self._emit("stop", self.shared.result.stopped, work, D.PENDING)
        else:  # Kind.AUTH
            self._settle(work, D.PENDING, text)
            self.s.stop(f"The SMTP server asks for a login: {reply}.")
            self.fatal = SmtpError(f"The SMTP server asks for a login: {reply}.", hint="Check [smtp] username and password.")

    def _try_later(self, item: Outgoing, reply: Reply, wait: float) -> None:
        work: _Work = item.ref
        self._settle(work, D.SENDING, str(reply))  # still 'sending', no longer handed
        self.later.append(item)
        self.later_wait = max(self.later_wait, wait)

    def _temporary(self, item: Outgoing, reply: Reply) -> None:
        work: _Work = item.ref
        work.tries += 1
        if work.tries <= self.options.retries:
            delay = self.options.backoff * (2 ** (work.tries - 1)) * (1 + self.s.rng.random())
            self._try_later(item, reply, delay)
            self._emit("retry", f"{work.email}: {reply}; trying again ({work.tries}/{self.options.retries}).", work)
            return
        self._defer(work, reply)

    def _defer(self, work: _Work, reply: Reply) -> None:
        """Refused for now after the in-run tries: a later run tries again, until the window closes."""
        now = self.clock.now()
        since = parse_iso(work.delivery.deferred_since) if work.delivery.deferred_since else now
        deadline = since + timedelta(seconds=self.options.give_up_after)
        if now >= deadline:
            days = self.options.give_up_after / 86400
            self._settle(work, D.FAILED, f"{reply} (given up after {days:g} days of temporary refusals)",
                         mailbox_full=mailbox_full(reply))
            self._count(D.FAILED)
            self._emit("delivery", f"{work.email}: failed ({reply}; given up after {days:g} days)", work, D.FAILED)
        else:
            wait = max(timedelta(seconds=self.options.retry_later), now - since)  # the spacing grows
            later = min(now + wait, deadline)
            self._settle(work, D.PENDING, str(reply), next_attempt_at=iso(later))
            self._count(D.PENDING)
            self._emit("delivery", f"{work.email}: {reply} (tried again by a run after {iso(later)})", work, D.PENDING)
        self._failure(reply, permanent=False)

    def _rate(self, item: Outgoing, reply: Reply) -> None:
        """The relay limits how fast we send: every connection waits, longer each time, then goes on.

        Only a reply to a message sent after the last such reply counts as the relay saying
        it again: the other connections' messages already on their way get the same answer.
        """
        work: _Work = item.ref
        with self.shared.lock:
            again = work.epoch == self.shared.hold_epoch
            if again:
                self.shared.holds += 1
                self.shared.hold_epoch += 1
            k = self.shared.holds
            wait = self.options.hold * (2 ** (k - 1))
            if again and k <= self.options.retries:
                self.shared.hold_until = max(self.shared.hold_until, self.clock.monotonic() + wait)
        work.tries += 1
        if k <= self.options.retries and work.tries > self.options.retries:
            self._defer(work, reply)  # the relay lets the others through, not this one: a later run tries it
            return
        if k <= self.options.retries:
            self._try_later(item, reply, 0.0)
            if again:
                self._emit("retry", f"The relay is limiting how fast we send ({reply}); every connection waits "
                                    f"{wait:g} s, then {work.email} is tried again.", work)
            return
        self._settle(work, D.PENDING, str(reply))
        reason = f"the relay kept limiting how fast we send ({reply})"
        self.s.stop(f"Campaign paused: {reason}. The rest is left pending; `mailer send` continues it "
                    "when the relay allows more.", paused=True)
        self.pause_reason = self.pause_reason or reason
        self._emit("stop", self.shared.result.stopped, work, D.PENDING)

    def _quota(self, work: _Work, reply: Reply) -> None:
        """The relay's sending quota is used up: stop, leave the rest pending for tomorrow, suggest per_day."""
        self._settle(work, D.PENDING, str(reply))
        self._count(D.PENDING)
        with self.shared.lock:
            start = self._refresh_day()
            self.shared.quota_today = True
        took = max(0, self.log.attempted_since(iso(start)) - 1)  # today's hand-overs but this one
        self.quota_day = iso(start)
        if self.s.stop(
            f"Stopped: the relay's sending quota is used up for today ({reply}); the rest is left pending for "
            f"tomorrow. The relay took {took} message(s) today: set [sending] per_day = {took} (or less) so that "
            "runs stop before its quota.",
            quota_left=True,
        ):
            self._emit("stop", self.shared.result.stopped, work, D.PENDING)

    # -- what the wire could not finish ------------------------------------------------------

    def _lost(self, exc: ConnectionLost) -> None:
        """The connection is gone: messages whose data may have arrived are unknown, the rest go again."""
        lost = self.transport.abandon()
        self.connected = False
        for item in lost.unsent:
            work: _Work = item.ref
            if work.handed:  # handed over, but its data never left: no longer handed
                self._settle(work, D.SENDING, f"connection lost before its data: {exc}")
        self.ready.extendleft(reversed(lost.unsent))
        if lost.unknown:
            self._flush()
            for item in lost.unknown:
                work = item.ref
                self.log.mark_unknown(work.delivery, f"{exc}; not sent again (--retry-unknown sends it)", self._now())
                work.handed = False
                self._count(D.UNKNOWN)
                self.s.stop(
                    f"The SMTP server gave no proper answer after receiving the message to {work.email} ({exc}); "
                    "it may have been accepted, so it is not sent again. The rest is left pending for the next run.",
                    server_lost=True,
                )
                self._emit("stop", self.shared.result.stopped, work, D.UNKNOWN)
            return
        if self._stopped():
            return
        self.reconnects += 1
        if self.reconnects > self.options.reconnects:
            self._server_gone(f"connection lost: {exc}")
            return
        again = f" and sending {lost.unsent[0].ref.email} again" if lost.unsent else ""
        self._emit("reconnect", f"Connection lost ({exc}); reconnecting{again}.",
                   lost.unsent[0].ref if lost.unsent else None)

    def _end(self) -> None:
        """A normal end: goodbye said, replies committed, messages marked ahead released."""
        self._disconnect()
        self._flush()
        held = list(self.ready) + self.later
        self.ready.clear()
        self.later = []
        self._release(held)

    def _end_abruptly(self) -> None:
        """Something raised: judge what was in flight by how far it got, then release the rest.

        Each step on its own: a failure here must not hide the error that brought us here
        (and what cannot be written now, the next run's recovery reads from each row).
        """
        held = list(self.ready) + self.later
        self.ready.clear()
        self.later = []
        for step in (self._abandon_in_flight, self._flush, lambda: self._release(held)):
            try:
                step()
            except Exception:
                pass

    def _abandon_in_flight(self) -> None:
        lost = self.transport.abandon()
        self.connected = False
        self._judge(lost.unknown, "the run stopped after its data was written, before the reply")
        self._release(lost.unsent)

    def _judge(self, unknown: list[Outgoing], why: str) -> None:
        """Messages whose data may have reached the server: unknown, never sent again blindly."""
        if not unknown:
            return
        self._flush()
        for item in unknown:
            self.log.mark_unknown(item.ref.delivery, f"{why}; not sent again (--retry-unknown sends it)", self._now())
            item.ref.handed = False
            self._count(D.UNKNOWN)

    def _release(self, items: list[Outgoing]) -> None:
        """Back to pending: none of their data left."""
        if not items:
            return
        for item in items:
            self._unreserved(item.ref)
        self._flush()
        self.log.unreserve([i.ref.delivery for i in items], self._now())
