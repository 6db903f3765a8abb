"""The send engine on its own: a fake delivery log, a scripted transport and the fake clock.

No server and no database: each test runs in milliseconds and says what happens to
every recipient for one kind of reply, with pipelining across messages on and off. The
fake log applies the lifecycle table itself, so the engine cannot make a transition the
table forbids. Log and transport write one journal together (every commit, every write
of a message's data, every reply), and `assert_any_crash_is_safe` replays it: cut at
any point, as a killed process or as a power cut, the disk must never hold a message
whose data left as pending (it would be sent twice), hold at most one `unknown` per
connection, and no data may have left before its `sending` mark was synced.
The wire (our framing against aiosmtpd) is tested in test_transport.py and test_send.py.
"""

from __future__ import annotations

import _thread
import functools
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from mailer.clock import FakeClock, iso
from mailer.errors import ConfigError, MailerError, SmtpError
from mailer.lifecycle import DELIVERY_TRANSITIONS, DeliveryStatus, SubscriberStatus, after_crash
from mailer.models import Delivery, Outcome, Subscriber
from mailer.send import CampaignSender, SendOptions
from mailer.transport import Abandoned, ConnectionLost, Outgoing, Reply, ServerBusy, Stage

D = DeliveryStatus
PIPELINING = pytest.mark.parametrize("pipelining", [False, True], ids=["one-at-a-time", "pipelined"])


def locked(method):
    @functools.wraps(method)
    def under_lock(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return under_lock


class FakeLog:
    """An in-memory delivery log that refuses any transition the lifecycle table forbids.

    Every commit goes into the journal with the rows it changed: (status, handed).
    """

    def __init__(self, people: list[Subscriber], journal: list | None = None):
        self.people = {p.id: p for p in people}
        self.rows = {
            p.id: Delivery(id=p.id, campaign_id=1, subscriber_id=p.id, seq=i, email=p.email, status=D.PENDING,
                           attempts=0, reply="", message_id="", updated_at="", attempted_at="", sent_at="")
            for i, p in enumerate(people, start=1)
        }
        self.handed: dict[int, bool] = dict.fromkeys(self.rows, False)
        self.journal = journal if journal is not None else []
        self.paused = ""
        self.cancelled = False
        self.quota_day = ""
        self.synced = 0  # commits synced to disk
        self.unsynced = 0
        self.syncs = 0  # background syncs of earlier commits
        self._cursor = 0
        self._changes: dict[int, tuple[DeliveryStatus, bool]] = {}
        self.lock = threading.RLock()  # the connections of a run share it, like the real one

    def _move(self, delivery: Delivery, transition: str, status: DeliveryStatus, reply: str | None = None, **kw) -> None:
        t = DELIVERY_TRANSITIONS[transition]
        row = self.rows[delivery.id]
        assert row.status in t.sources and status in t.targets, (transition, row.status, status)
        self.rows[delivery.id] = replace(row, status=status, reply=row.reply if reply is None else reply, **kw)
        self.handed[delivery.id] = False
        self._changes[delivery.id] = (status, False)

    def _commit(self, synced: bool) -> None:
        self.journal.append(("commit", synced, dict(self._changes)))
        self._changes = {}
        if synced:
            self.synced += 1
        else:
            self.unsynced += 1

    def status(self, email: str) -> DeliveryStatus:
        return next(r.status for r in self.rows.values() if r.email == email)

    def row(self, email: str) -> Delivery:
        return next(r for r in self.rows.values() if r.email == email)

    def _record(self, outcome: Outcome) -> None:
        d = self.rows[outcome.delivery.id]
        extra = {"attempts": d.attempts + 1} if outcome.envelope_refused else {}
        if outcome.status == D.SENDING:
            assert d.status == D.SENDING
            self.rows[d.id] = replace(d, reply=outcome.reply, **extra)
            self.handed[d.id] = False
            self._changes[d.id] = (D.SENDING, False)
            return
        if outcome.status == D.PENDING and outcome.next_attempt_at:
            extra |= {"next_attempt_at": outcome.next_attempt_at, "deferred_since": d.deferred_since or outcome.time}
        self._move(d, "record_outcome", outcome.status, outcome.reply, **extra)
        if outcome.bounce or (outcome.mailbox_full and outcome.status == D.FAILED):
            self.people[d.subscriber_id] = replace(self.people[d.subscriber_id], status=SubscriberStatus.BOUNCED)

    # the DeliveryLog protocol
    @locked
    def next_batch(self, limit: int, now: str) -> list[Delivery]:
        if self.paused or self.cancelled:
            return []
        todo = [r for r in self.rows.values()
                if r.status == D.PENDING and r.seq > self._cursor and r.next_attempt_at <= now]
        batch = todo[:limit]
        if batch:
            self._cursor = batch[-1].seq
        return batch

    def still_sending(self) -> bool:
        return not (self.paused or self.cancelled)

    @locked
    def subscribers(self, batch: list[Delivery]) -> dict[int, Subscriber]:
        return {d.subscriber_id: self.people[d.subscriber_id] for d in batch if d.subscriber_id in self.people}

    @locked
    def reserve(self, marks, now, finish):
        for outcome in finish:
            self._record(outcome)
        for delivery, message_id in marks:
            self._move(delivery, "mark_sending", D.SENDING, message_id=message_id)
        self._commit(synced=False)
        synced = []

        def on_disk() -> None:  # the background sync ends only when waited for: the latest it could
            with self.lock:
                if not synced:
                    synced.append(True)
                    self.journal.append(("sync",))
                    self.syncs += 1

        return on_disk

    @locked
    def hand_over(self, delivery, now, finish):
        for outcome in finish:
            self._record(outcome)
        row = self.rows[delivery.id]
        assert row.status == D.SENDING, (row.email, row.status)
        self.rows[delivery.id] = replace(row, attempts=row.attempts + 1, attempted_at=now)
        self.handed[delivery.id] = True
        self._changes[delivery.id] = (D.SENDING, True)
        self._commit(synced=False)

    @locked
    def record(self, outcomes):
        for outcome in outcomes:
            self._record(outcome)
        self._commit(synced=True)

    @locked
    def unreserve(self, deliveries, now):
        for d in deliveries:
            self._move(d, "release", D.PENDING)
        self._commit(synced=True)

    @locked
    def skip(self, delivery, status, reason, now):
        self._move(delivery, "skip", status, reason)
        self._commit(synced=True)

    @locked
    def mark_unknown(self, delivery, reason, now):
        self._move(delivery, "mark_unknown", D.UNKNOWN, reason)
        self._commit(synced=True)

    def expired(self, deferred_before):
        return [r for r in self.rows.values() if r.status == D.PENDING and r.deferred_since
                and r.deferred_since < deferred_before]

    @locked
    def give_up(self, delivery, reason, now, mailbox_full):
        self._move(delivery, "give_up", D.FAILED, f"{reason}: {delivery.reply}")
        self._commit(synced=True)

    def attempted_since(self, since: str) -> int:
        return sum(1 for r in self.rows.values() if r.attempted_at and r.attempted_at >= since)

    def quota_reached_on(self) -> str:
        return self.quota_day

    def record_quota(self, day_start: str) -> None:
        self.quota_day = day_start

    def pause(self, reason: str) -> None:
        self.paused = reason


@dataclass(frozen=True)
class Message:
    message_id: str
    data: bytes


class Renderer:
    def render(self, sub: Subscriber) -> Message:
        if sub.first_name == "BROKEN":
            raise MailerError("the template cannot be rendered for this person")
        if sub.first_name == "ENDLESS":  # a template loop that runs away for this person only
            n = 0
            while True:
                n += 1
        return Message(f"<{sub.id}@example.com>", f"To: {sub.email}\r\n\r\nHi\r\n".encode())


LOST_AFTER_DATA = "lost-after-data"  # the connection breaks while the reply to the data is awaited


@dataclass(frozen=True)
class Raise:
    """Raise `error` at a stage of a message: "env" (before anything of it), "data" (just before its
    data is written: nothing of it left), or "reply" (while its reply is awaited: its data has left)."""

    error: BaseException
    at: str


class Transport:
    """Answers from a script: {recipient: [answer, ...]}, one per try, 250 once the script runs out.

    An answer is a Reply (stage "mail"/"rcpt": a refused envelope; "data": the reply to the
    data), LOST_AFTER_DATA, a ConnectionLost (the connection breaks before its data), or a
    Raise. With `pipelining` the data of one message and the next envelope share a write
    and the replies come one step later, as RFC 2920 allows.
    """

    description = "fake"

    def __init__(self, log: FakeLog, script: dict | None = None, smtputf8: bool = True, pipelining: bool = False,
                 busy: int = 0, gate: threading.Event | threading.Barrier | None = None):
        self.log = log
        self.journal = log.journal
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.handed: list[str] = []  # recipients whose data was written, in order
        self.envelopes: list[Outgoing] = []
        self.opens = 0
        self.busy = busy  # the first opens answered 421 "too many connections"
        self.gate = gate  # when given, the first message waits for it (an event set, or a barrier passed)
        self._smtputf8 = smtputf8
        self.pipelining = pipelining
        self.connected = False
        self.in_flight: list[Outgoing] = []
        self.open_env: Outgoing | None = None  # envelope written, its replies not read
        self.awaiting: Outgoing | None = None  # data written, its reply not read
        self.next_data: Outgoing | None = None

    @property
    def smtputf8(self) -> bool:
        return self._smtputf8

    def open(self) -> None:
        self.opens += 1
        if self.busy:
            self.busy -= 1
            raise ServerBusy("421 4.7.0 Too many concurrent SMTP connections")
        self.connected = True

    def close(self) -> None:
        assert not self.in_flight, "closed with messages in flight (abandon() first)"
        self.connected = False

    def _answer(self, item: Outgoing):
        todo = self.script.get(item.envelope.recipient)
        answer = todo[0] if todo else Reply(250, "2.0.0 OK")
        return answer

    def _consume(self, item: Outgoing) -> None:
        todo = self.script.get(item.envelope.recipient)
        if todo:
            todo.pop(0)

    def _lose(self, why: str):
        self.connected = False
        self.open_env = self.awaiting = self.next_data = None
        raise ConnectionLost(why)

    def _write_env(self, item: Outgoing) -> None:
        answer = self._answer(item)
        if isinstance(answer, Raise) and answer.at == "env":
            self._consume(item)
            raise answer.error
        d = self.log.row(item.envelope.recipient)
        assert d.status == D.SENDING, "an envelope written before the message's 'sending' mark"
        item.stage = Stage.ENVELOPE
        self.journal.append(("env", d.id))
        self.envelopes.append(item)

    def _env_replies(self, item: Outgoing, listener) -> None:
        """The replies to MAIL, RCPT and DATA; then the hand-over of the data, if it goes."""
        answer = self._answer(item)
        if isinstance(answer, ConnectionLost):
            self._consume(item)
            self._lose(str(answer))
        if isinstance(answer, Reply) and answer.stage in ("mail", "rcpt"):
            self._consume(item)
            self._done(item, answer, listener)
            return
        if isinstance(answer, Raise) and answer.at == "data":
            self._consume(item)
            raise answer.error
        if not listener.before_data(item):
            self.connected = False
            self.open_env = self.awaiting = self.next_data = None
            return
        d = self.log.row(item.envelope.recipient)
        assert d.status == D.SENDING and self.log.handed[d.id], "data written before its hand-over was committed"
        self.next_data = item

    def _write_data(self, item: Outgoing) -> None:
        item.stage = Stage.DATA
        self.journal.append(("data", self.log.row(item.envelope.recipient).id))
        self.handed.append(item.envelope.recipient)
        self.awaiting = item

    def _data_reply(self, item: Outgoing, listener) -> None:
        answer = self._answer(item)
        self._consume(item)
        self.awaiting = None
        if answer == LOST_AFTER_DATA:
            self._lose("the server closed the connection without a reply")
        if isinstance(answer, Raise):
            raise answer.error
        self._done(item, answer, listener)
        if answer.code == 421:
            self._lose(f"the server closed the connection: {answer}")

    def _done(self, item: Outgoing, reply: Reply, listener) -> None:
        self.journal.append(("reply", self.log.row(item.envelope.recipient).id, reply.code))
        listener.answered(item, reply)
        item.stage = Stage.ANSWERED
        self.in_flight.remove(item)

    # the Transport protocol
    def submit(self, item: Outgoing, listener) -> None:
        if self.gate is not None:
            gate, self.gate = self.gate, None
            if isinstance(gate, threading.Barrier):
                gate.wait(5)
            else:
                assert gate.wait(5)
        item.stage = Stage.QUEUED
        self.in_flight.append(item)
        if not self.connected:
            raise ConnectionLost("not connected")
        if not self.pipelining:
            self._write_env(item)
            self._env_replies(item, listener)
            self.drain(listener)
            return
        if self.open_env is not None:
            self.collect(listener)
        answer = self._answer(item)
        if isinstance(answer, Raise) and answer.at == "env":  # the whole write is built before a byte goes
            self._consume(item)
            raise answer.error
        data, self.next_data = self.next_data, None
        if data is not None:  # one write: the data of the message before, then this envelope
            self._write_data(data)
        self._write_env(item)
        self.open_env = item

    def collect(self, listener) -> None:
        if self.awaiting is not None:
            self._data_reply(self.awaiting, listener)
        if self.open_env is not None:
            item, self.open_env = self.open_env, None
            self._env_replies(item, listener)

    def drain(self, listener) -> None:
        self.collect(listener)
        if self.next_data is not None:
            item, self.next_data = self.next_data, None
            self._write_data(item)
            self._data_reply(item, listener)

    def abandon(self) -> Abandoned:
        held, self.in_flight = self.in_flight, []
        self.connected = False
        self.open_env = self.awaiting = self.next_data = None
        return Abandoned([i for i in held if i.stage < Stage.DATA], [i for i in held if i.stage == Stage.DATA])


def people(n: int, **kw) -> list[Subscriber]:
    return [Subscriber(email=f"p{i}@example.com", email_key=f"p{i}@example.com", id=i, **kw) for i in range(1, n + 1)]


@pytest.fixture
def clock():
    return FakeClock(datetime(2026, 11, 25, 15, 0, tzinfo=UTC))


def run(log, transport, clock, **options):
    log._cursor = 0  # a new run reads the list from the start (the real log is made per run)
    options.setdefault("pause", 0)
    key = options.pop("campaign_key", "")
    factory = options.pop("factory", None)
    sender = CampaignSender(log, Renderer(), transport, clock, SendOptions(**options), sender="news@example.com",
                            campaign_key=key, transport_factory=factory)
    events = list(sender.run())
    return sender.result, events


def assert_any_crash_is_safe(log: FakeLog, connections: int = 1) -> None:
    """Cut the journal anywhere; read the disk as recovery would; nothing is sent twice or wrongly unknown."""
    journal = log.journal
    for cut in range(len(journal) + 1):
        prefix = journal[:cut]
        # Messages whose data may have reached the server: written, and not refused since.
        written = set()
        for e in prefix:
            if e[0] == "data":
                written.add(e[1])
            elif e[0] == "reply" and e[2] >= 300:
                written.discard(e[1])
        # Every data written after a synced 'sending' mark, and after its hand-over.
        for i, event in enumerate(prefix):
            if event[0] in ("env", "data"):
                # The mark: the commit that last took it from another status into 'sending'.
                mark, was = None, None
                for j, e in enumerate(prefix[:i]):
                    if e[0] == "commit" and event[1] in e[2]:
                        status = e[2][event[1]][0]
                        if status == D.SENDING and was != D.SENDING:
                            mark = j
                        was = status
                assert mark is not None and was == D.SENDING, f"{event} before its 'sending' mark"
                synced = prefix[mark][1] or any(e[0] == "sync" for e in prefix[mark:i])
                assert synced, f"{event} before its 'sending' mark was on disk"
            if event[0] == "data":
                before = [e for e in prefix[:i] if e[0] == "commit" and event[1] in e[2]]
                assert before and before[-1][2][event[1]] == (D.SENDING, True), "data before its hand-over"
        commits, last_synced = [], -1
        for e in prefix:
            if e[0] == "commit":
                commits.append(e)
                if e[1]:
                    last_synced = len(commits) - 1
            elif e[0] == "sync":  # everything committed before it is on disk
                last_synced = len(commits) - 1
        # A killed process keeps every commit; a power cut may lose any of the unsynced ones after the last sync.
        for kept, same_boot in [(len(commits), True)] + [(k, False) for k in range(last_synced + 1, len(commits) + 1)]:
            disk: dict[int, tuple[DeliveryStatus, bool]] = {}
            for _, _, changes in commits[:kept]:
                disk.update(changes)
            after = {i: after_crash(h, same_boot) if s == D.SENDING else s for i, (s, h) in disk.items()}
            resent = [i for i in written if after.get(i, D.PENDING) == D.PENDING]
            assert not resent, f"cut at {cut}: {resent} would be sent twice"
            if same_boot:
                unknown = [i for i, s in after.items() if s == D.UNKNOWN]
                assert len(unknown) <= connections, f"cut at {cut}: {unknown} unknown"
                handed = {i for c in commits for i, change in c[2].items() if change == (D.SENDING, True)}
                assert set(unknown) <= handed, f"cut at {cut}: {unknown} unknown though never handed over"


# ---- everyone once ----------------------------------------------------------------------


@PIPELINING
def test_everyone_once_one_synced_commit_per_reserve(clock, pipelining):
    log = FakeLog(people(20))
    t = Transport(log, pipelining=pipelining)
    result, _ = run(log, t, clock, reserve=8)
    assert t.handed == [f"p{i}@example.com" for i in range(1, 21)]
    assert {r.status for r in log.rows.values()} == {D.SENT}
    assert all(r.attempts == 1 for r in log.rows.values())
    assert result.handed_over == 20 and result.outcomes["sent"] == 20
    assert log.unsynced == 20 + 3  # a hand-over per message (with the replies before it), three reserves ...
    assert log.syncs == 3 and log.synced == 1  # ... synced in the background, and the last reply
    assert_any_crash_is_safe(log)


@PIPELINING
def test_with_pipelining_a_message_is_handed_over_while_the_one_before_awaits_its_reply(clock, pipelining):
    log = FakeLog(people(3))
    run(log, Transport(log, pipelining=pipelining), clock)
    order = [e[:2] for e in log.journal if e[0] in ("env", "data", "reply")]
    if pipelining:  # the next envelope travels with the data before it: one round trip per message
        assert order == [("env", 1), ("data", 1), ("env", 2), ("reply", 1), ("data", 2), ("env", 3), ("reply", 2),
                         ("data", 3), ("reply", 3)]
    else:
        assert order == [("env", 1), ("data", 1), ("reply", 1), ("env", 2), ("data", 2), ("reply", 2),
                         ("env", 3), ("data", 3), ("reply", 3)]
    # Either way the reply of n is committed with the hand-over of n+1: one commit per message.
    hand_overs = [e for e in log.journal if e[0] == "commit" and (D.SENDING, True) in e[2].values()]
    assert [sorted(c[2]) for c in hand_overs] == [[1], [1, 2], [2, 3]]


# ---- what each reply does ------------------------------------------------------------------


@PIPELINING
def test_a_temporary_refusal_is_tried_again_after_a_growing_pause(clock, pipelining):
    log = FakeLog(people(2))
    t = Transport(log, {"p1@example.com": [Reply(451, "4.7.1 greylisted", "rcpt")] * 2}, pipelining=pipelining)
    run(log, t, clock, backoff=2.0)
    assert log.status("p1@example.com") == D.SENT and log.row("p1@example.com").attempts == 3
    assert len(clock.slept) == 2 and 2 <= clock.slept[0] <= 4 and 4 <= clock.slept[1] <= 8
    assert_any_crash_is_safe(log)


@PIPELINING
def test_a_refusal_every_time_waits_for_a_later_run_then_is_given_up(clock, pipelining):
    log = FakeLog(people(2))
    refusals = [Reply(451, "4.3.0 try later", "data")] * 40
    t = Transport(log, {"p1@example.com": refusals}, pipelining=pipelining)
    result, _ = run(log, t, clock, retries=3)
    row = log.row("p1@example.com")
    assert row.status == D.PENDING and log.status("p2@example.com") == D.SENT
    assert row.reply == "451 4.3.0 try later" and result.outcomes["pending"] == 1
    first_try = clock.now()
    assert row.next_attempt_at == iso(first_try + timedelta(minutes=30))
    # A run before then does not touch it.
    early, _ = run(log, t, clock, retries=0)
    assert early.handed_over == 0 and log.row("p1@example.com").attempts == 4
    # Each later run tries it once more, until the window has closed.
    for _ in range(12):
        clock.advance(30 * 3600)
        run(log, t, clock, retries=0)
        if log.status("p1@example.com") != D.PENDING:
            break
    assert log.status("p1@example.com") == D.FAILED
    assert "given up after 4 days" in log.row("p1@example.com").reply
    assert "4.3.0 try later" in log.row("p1@example.com").reply
    assert_any_crash_is_safe(log)


def test_the_retry_spacing_grows_and_the_last_try_is_at_the_end_of_the_window(clock):
    log = FakeLog(people(1))
    t = Transport(log, {"p1@example.com": [Reply(452, "4.2.2 mailbox full", "rcpt")] * 100})
    start = clock.now()
    tries = []
    for _ in range(30):
        run(log, t, clock, retries=0)
        row = log.row("p1@example.com")
        if row.status != D.PENDING:
            break
        tries.append(row.next_attempt_at)
        clock._now = datetime.fromisoformat(row.next_attempt_at.replace("Z", "+00:00"))
        clock._mono += 1
    gaps = [(datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00")))
            for a, b in zip(tries, tries[1:], strict=False)]
    assert timedelta(minutes=30) <= gaps[0] and all(b >= a for a, b in zip(gaps, gaps[1:-1], strict=False))
    assert tries[-1] == iso(start + timedelta(days=4))
    assert log.status("p1@example.com") == D.FAILED


@PIPELINING
def test_an_address_that_does_not_exist_bounces(clock, pipelining):
    log = FakeLog(people(3))
    t = Transport(log, {"p2@example.com": [Reply(550, "5.1.1 no such user", "rcpt")]}, pipelining=pipelining)
    result, _ = run(log, t, clock)
    assert log.status("p2@example.com") == D.BOUNCED and result.outcomes["bounced"] == 1
    assert log.row("p2@example.com").attempts == 1  # an envelope refused is a try too
    assert t.handed == ["p1@example.com", "p3@example.com"]
    assert_any_crash_is_safe(log)


@PIPELINING
def test_a_policy_refusal_pauses_and_blames_nobody(clock, pipelining):
    log = FakeLog(people(4))
    t = Transport(log, {"p2@example.com": [Reply(554, "5.7.1 rejected as spam")]}, pipelining=pipelining)
    result, _ = run(log, t, clock)
    assert result.paused and log.paused
    assert [log.status(f"p{i}@example.com") for i in (1, 2, 3, 4)] == [D.SENT, D.PENDING, D.PENDING, D.PENDING]
    assert_any_crash_is_safe(log)


@PIPELINING
def test_a_login_refused_mid_run_stops_with_the_message_back_to_pending(clock, pipelining):
    log = FakeLog(people(2))
    t = Transport(log, {"p1@example.com": [Reply(530, "5.7.0 authentication required", "mail")]}, pipelining=pipelining)
    with pytest.raises(SmtpError):
        run(log, t, clock)
    assert log.status("p1@example.com") == D.PENDING and log.status("p2@example.com") == D.PENDING


# ---- what the wire could not finish ------------------------------------------------------------


@PIPELINING
def test_silence_after_the_data_is_unknown_and_never_resent(clock, pipelining):
    log = FakeLog(people(4))
    t = Transport(log, {"p2@example.com": [LOST_AFTER_DATA]}, pipelining=pipelining)
    result, _ = run(log, t, clock)
    assert log.status("p2@example.com") == D.UNKNOWN
    assert [log.status(f"p{i}@example.com") for i in (3, 4)] == [D.PENDING, D.PENDING]
    assert result.server_lost and t.handed == ["p1@example.com", "p2@example.com"]
    assert_any_crash_is_safe(log)


@PIPELINING
def test_a_connection_lost_before_the_data_is_sent_again_on_a_new_one(clock, pipelining):
    log = FakeLog(people(3))
    t = Transport(log, {"p2@example.com": [ConnectionLost("reset")]}, pipelining=pipelining)
    run(log, t, clock)
    assert t.handed == ["p1@example.com", "p2@example.com", "p3@example.com"] and t.opens == 2
    assert {r.status for r in log.rows.values()} == {D.SENT}
    assert_any_crash_is_safe(log)


@PIPELINING
@pytest.mark.parametrize("error", [RuntimeError("a bug"), KeyboardInterrupt(), UnicodeEncodeError("ascii", "ü", 0, 1, "no")])
def test_an_exception_before_a_byte_of_the_message_left_puts_it_back_to_pending(clock, pipelining, error):
    """Issue: a message marked 'sending' that never reached the wire was left 'unknown'."""
    log = FakeLog(people(4))
    t = Transport(log, {"p2@example.com": [Raise(error, "env")]}, pipelining=pipelining)
    with pytest.raises(type(error)):
        run(log, t, clock)
    # Pipelined, p1's data was to go in the same write as p2's envelope: it did not leave either.
    assert log.status("p1@example.com") == (D.PENDING if pipelining else D.SENT)
    assert [log.status(f"p{i}@example.com") for i in (2, 3, 4)] == [D.PENDING] * 3
    assert_any_crash_is_safe(log)


@PIPELINING
@pytest.mark.parametrize("at,expected", [("data", D.PENDING), ("reply", D.UNKNOWN)])
def test_ctrl_c_in_the_middle_of_a_send(clock, pipelining, at, expected):
    """Just before the data: nothing of it left, pending. While its reply is awaited: unknown."""
    log = FakeLog(people(4))
    t = Transport(log, {"p2@example.com": [Raise(KeyboardInterrupt(), at)]}, pipelining=pipelining)
    with pytest.raises(KeyboardInterrupt):
        run(log, t, clock)
    assert log.status("p1@example.com") == D.SENT
    assert log.status("p2@example.com") == expected
    assert [log.status(f"p{i}@example.com") for i in (3, 4)] == [D.PENDING, D.PENDING]
    assert_any_crash_is_safe(log)


@PIPELINING
def test_ctrl_c_while_reading_progress_ends_each_message_cleanly(clock, pipelining):
    """The person's Ctrl-C reaches the thread that shows progress; the connection finishes the message on the wire."""
    log = FakeLog(people(30))
    t = Transport(log, pipelining=pipelining)
    sender = CampaignSender(log, Renderer(), t, clock, SendOptions(pause=0), sender="news@example.com")
    events = sender.run()
    with pytest.raises(KeyboardInterrupt):
        for n, _ in enumerate(events):
            if n == 5:
                raise KeyboardInterrupt
    events.close()
    statuses = [r.status for r in log.rows.values()]
    assert D.SENDING not in statuses and D.UNKNOWN not in statuses
    assert statuses.count(D.SENT) == len(t.handed) and statuses.count(D.PENDING) == 30 - len(t.handed)
    assert sender.result.stopped == "interrupted"
    assert_any_crash_is_safe(log)


def test_a_crash_at_any_moment_of_a_busy_run_loses_nothing_and_sends_nothing_twice(clock):
    """Pipelined, with refusals, retries, a dropped connection and a silence: every cut of the journal is safe."""
    log = FakeLog(people(40))
    script = {
        "p3@example.com": [Reply(451, "4.3.0 later", "data")],
        "p7@example.com": [Reply(550, "5.1.1 gone", "rcpt")],
        "p11@example.com": [ConnectionLost("reset")],
        "p15@example.com": [Reply(452, "4.5.3 too many", "rcpt")],
        "p30@example.com": [LOST_AFTER_DATA],
    }
    run(log, Transport(log, script, pipelining=True), clock, reserve=4)
    assert log.status("p30@example.com") == D.UNKNOWN
    assert log.status("p7@example.com") == D.BOUNCED
    assert_any_crash_is_safe(log)


# ---- replies about the run, not the recipient -----------------------------------------------


@PIPELINING
def test_a_rate_reply_holds_every_connection_then_goes_on(clock, pipelining):
    log = FakeLog(people(4))
    t = Transport(log, {"p2@example.com": [Reply(421, "4.7.0 Try again later, closing connection", "mail")]},
                  pipelining=pipelining)
    result, events = run(log, t, clock, hold=60)
    assert {r.status for r in log.rows.values()} == {D.SENT}
    assert 60 in clock.slept
    assert any("limiting how fast" in e.message for e in events)
    assert_any_crash_is_safe(log)


def test_a_rate_reply_that_keeps_coming_pauses_the_campaign_with_the_rest_pending(clock):
    log = FakeLog(people(4))
    t = Transport(log, {"p2@example.com": [Reply(451, "4.7.28 unusual rate of mail", "rcpt")] * 9})
    result, _ = run(log, t, clock, hold=60, retries=3)
    assert result.paused and "limiting how fast" in log.paused
    assert clock.slept == [60, 120, 240]
    assert [log.status(f"p{i}@example.com") for i in (1, 2, 3, 4)] == [D.SENT, D.PENDING, D.PENDING, D.PENDING]


@PIPELINING
def test_a_quota_reply_stops_for_the_day_and_suggests_per_day(clock, pipelining):
    log = FakeLog(people(5))
    t = Transport(log, {"p3@example.com": [Reply(550, "5.4.5 Daily user sending quota exceeded.", "data")]},
                  pipelining=pipelining)
    result, _ = run(log, t, clock)
    assert result.quota_left and "per_day = 2" in result.stopped
    assert [log.status(f"p{i}@example.com") for i in range(1, 6)] == [D.SENT, D.SENT, D.PENDING, D.PENDING, D.PENDING]
    assert log.row("p3@example.com").next_attempt_at == ""  # not deferred: just pending
    again, _ = run(log, t, clock)  # later the same day: nothing is tried
    assert again.handed_over == 0 and "quota" in again.stopped
    clock.advance(24 * 3600)
    tomorrow, _ = run(log, t, clock)
    assert {r.status for r in log.rows.values()} == {D.SENT}


def test_a_full_mailbox_is_a_soft_failure(clock):
    log = FakeLog(people(2))
    t = Transport(log, {"p1@example.com": [Reply(552, "5.2.2 mailbox full", "rcpt")]})
    run(log, t, clock)
    assert log.status("p1@example.com") == D.FAILED
    assert log.people[1].status == SubscriberStatus.BOUNCED  # the fake suppresses at once; the store counts 3


# ---- the list and the caps ------------------------------------------------------------------


def test_a_person_who_left_after_the_audience_was_fixed_is_skipped(clock):
    crowd = people(2)
    crowd[0] = replace(crowd[0], status=SubscriberStatus.UNSUBSCRIBED)
    log = FakeLog(crowd)
    t = Transport(log)
    result, _ = run(log, t, clock)
    assert log.status("p1@example.com") == D.SKIPPED and t.handed == ["p2@example.com"]


def test_an_unsubscribe_during_the_pause_between_batches_is_honoured_by_the_next_message(clock):
    log = FakeLog(people(4))

    def unsubscribe_p3(seconds: float) -> None:
        log.people[3] = replace(log.people[3], status=SubscriberStatus.UNSUBSCRIBED)

    clock = FakeClock(clock.now(), on_sleep=unsubscribe_p3)
    t = Transport(log, pipelining=True)
    run(log, t, clock, batch_size=2, pause=30)
    assert clock.slept == [30]
    assert log.status("p3@example.com") == D.SKIPPED and "p3@example.com" not in t.handed


def test_a_message_that_cannot_be_rendered_fails_alone(clock):
    crowd = people(2)
    crowd[0] = replace(crowd[0], first_name="BROKEN")
    log = FakeLog(crowd)
    result, _ = run(log, Transport(log), clock)
    assert log.status("p1@example.com") == D.FAILED and log.status("p2@example.com") == D.SENT


def test_a_render_that_runs_away_for_one_person_is_stopped_and_fails_alone(clock):
    crowd = people(3)
    crowd[1] = replace(crowd[1], first_name="ENDLESS")
    log = FakeLog(crowd)
    result, events = run(log, Transport(log), clock, render_seconds=0.2)
    assert log.status("p2@example.com") == D.FAILED and "took too long" in log.rows[2].reply
    assert log.status("p1@example.com") == D.SENT and log.status("p3@example.com") == D.SENT


def test_ctrl_c_during_a_runaway_render_ends_the_run_once_the_render_is_stopped(clock):
    crowd = people(3)
    crowd[0] = replace(crowd[0], first_name="ENDLESS")
    log = FakeLog(crowd)
    sender = CampaignSender(log, Renderer(), Transport(log), clock, SendOptions(pause=0, render_seconds=0.3),
                            sender="news@example.com")
    threading.Timer(0.05, _thread.interrupt_main).start()  # Ctrl-C while the first render runs away
    with pytest.raises(KeyboardInterrupt):
        list(sender.run())
    assert log.status("p1@example.com") == D.FAILED
    assert log.status("p2@example.com") == D.PENDING and log.status("p3@example.com") == D.PENDING


def test_a_non_ascii_local_part_fails_without_smtputf8(clock):
    crowd = [Subscriber(email="renée@example.com", email_key="renée@example.com", id=1)]
    log = FakeLog(crowd)
    result, _ = run(log, Transport(log, smtputf8=False), clock)
    assert log.status("renée@example.com") == D.FAILED and "needs-smtputf8" in log.rows[1].reply


def test_a_sender_the_server_cannot_carry_is_a_config_error_with_nothing_sent(clock):
    log = FakeLog(people(2))
    t = Transport(log, smtputf8=False)
    sender = CampaignSender(log, Renderer(), t, clock, SendOptions(pause=0), sender="bücher@example.com")
    with pytest.raises(ConfigError, match="SMTPUTF8"):
        list(sender.run())
    assert {r.status for r in log.rows.values()} == {D.PENDING} and t.handed == []


def test_an_idn_sender_goes_out_as_its_a_label(clock):
    log = FakeLog(people(1))
    t = Transport(log)
    sender = CampaignSender(log, Renderer(), t, clock, SendOptions(pause=0), sender="bounce@bücher.example")
    list(sender.run())
    assert t.envelopes[0].envelope.sender == "bounce@xn--bcher-kva.example"
    assert not t.envelopes[0].envelope.smtputf8


def test_each_envelope_carries_the_campaign_and_delivery_for_dsn(clock):
    log = FakeLog(people(2))
    t = Transport(log)
    run(log, t, clock, campaign_key="k3y")
    assert [o.envelope.envid for o in t.envelopes] == ["k3y-1", "k3y-2"]


def test_limit_and_daily_cap_leave_the_rest_pending(clock):
    log = FakeLog(people(5))
    result, _ = run(log, Transport(log), clock, limit=2)
    assert result.handed_over == 2 and result.quota_left
    assert [r.status for r in log.rows.values()].count(D.PENDING) == 3
    log2 = FakeLog(people(5))
    result2, _ = run(log2, Transport(log2), clock, per_day=3)
    assert result2.handed_over == 3 and "cap" in result2.stopped


@PIPELINING
def test_ten_failures_in_a_row_pause_the_campaign(clock, pipelining):
    log = FakeLog(people(12))
    script = {f"p{i}@example.com": [Reply(550, "5.0.0 refused", "rcpt")] for i in range(1, 13)}
    result, _ = run(log, Transport(log, script, pipelining=pipelining), clock, max_consecutive_failures=10)
    assert result.outcomes["failed"] == 10 and "10 messages in a row failed" in result.stopped and result.paused
    assert [r.status for r in log.rows.values()].count(D.PENDING) == 2


def test_batches_pause_between_and_rate_spaces_messages(clock):
    log = FakeLog(people(4))
    t = Transport(log)
    run(log, t, clock, batch_size=2, pause=10, rate=60)
    assert t.opens == 2  # one connection per batch
    assert 10 in clock.slept  # the pause between the two batches
    assert sum(clock.slept) >= 3 * 1.0  # 60 a minute: one a second after the first


# ---- several connections ----------------------------------------------------------------------


@PIPELINING
def test_several_connections_each_recipient_once_and_at_most_one_unknown_each(clock, pipelining):
    log = FakeLog(people(60))
    gate = threading.Barrier(4)  # each connection has its first helping before anyone sends
    transports: list[Transport] = []

    def factory():
        t = Transport(log, pipelining=pipelining, gate=gate)
        transports.append(t)
        return t

    first = factory()
    result, _ = run(log, first, clock, connections=4, factory=factory)
    handed = [r for t in transports for r in t.handed]
    assert sorted(handed) == sorted(f"p{i}@example.com" for i in range(1, 61))
    assert all(t.handed for t in transports)
    assert {r.status for r in log.rows.values()} == {D.SENT}
    assert_any_crash_is_safe(log, connections=4)


def test_a_relay_that_refuses_more_connections_is_answered_with_fewer(clock):
    log = FakeLog(people(30))
    gate = threading.Event()  # nobody sends before every connection has been tried
    opened = []

    class Counted(Transport):
        def open(self) -> None:
            opened.append(self)
            if len(opened) == 4:
                gate.set()
            super().open()

    transports = [Counted(log, gate=gate)]

    def factory():
        t = Counted(log, busy=1 if len(transports) >= 2 else 0, gate=gate)  # the third and fourth are refused
        transports.append(t)
        return t

    first = transports[0]
    result, events = run(log, first, clock, connections=4, factory=factory)
    assert {r.status for r in log.rows.values()} == {D.SENT}
    assert result.connections_refused == 2
    notices = [e.message for e in events if e.kind == "notice"]
    assert len(notices) == 2 and all("refused connection" in n and "going on with" in n for n in notices)
    assert [t.opens for t in transports[2:]] == [1, 1]  # not tried again in this run
