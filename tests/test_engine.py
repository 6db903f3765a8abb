"""The send engine on its own: a fake delivery log, a scripted transport and the fake clock.

No server and no database: each test runs in milliseconds and says what happens to
every recipient for one kind of reply. The fake log applies the lifecycle table
itself, so the engine cannot make a transition the table forbids; the transport
checks that every message was marked `sending` before it was handed over.
The wire (smtplib against aiosmtpd) is tested in test_send.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from mailer.clock import FakeClock
from mailer.errors import MailerError, SmtpError
from mailer.lifecycle import DELIVERY_TRANSITIONS, DeliveryStatus, SubscriberStatus
from mailer.models import Delivery, Outcome, Subscriber
from mailer.send import CampaignSender, SendOptions
from mailer.transport import ConnectionLost, Envelope, FateUnknown, Reply

D = DeliveryStatus


class FakeLog:
    """An in-memory delivery log that refuses any transition the lifecycle table forbids."""

    def __init__(self, people: list[Subscriber]):
        self.people = {p.id: p for p in people}
        self.rows = {
            p.id: Delivery(id=p.id, campaign_id=1, subscriber_id=p.id, seq=i, email=p.email, status=D.PENDING,
                           attempts=0, reply="", message_id="", updated_at="", attempted_at="", sent_at="")
            for i, p in enumerate(people, start=1)
        }
        self.paused = ""
        self.commits = 0

    def _move(self, delivery: Delivery, transition: str, status: DeliveryStatus, reply: str | None = None) -> None:
        t = DELIVERY_TRANSITIONS[transition]
        row = self.rows[delivery.id]
        assert row.status in t.sources and status in t.targets, (transition, row.status, status)
        self.rows[delivery.id] = replace(row, status=status, reply=row.reply if reply is None else reply)

    def status(self, email: str) -> DeliveryStatus:
        return next(r.status for r in self.rows.values() if r.email == email)

    # the DeliveryLog protocol
    def next_batch(self, limit: int) -> list[Delivery]:
        if self.paused:
            return []
        todo = [r for r in self.rows.values() if r.status == D.PENDING and r.seq > getattr(self, "_cursor", 0)]
        batch = todo[:limit]
        if batch:
            self._cursor = batch[-1].seq
        return batch

    def still_sending(self) -> bool:
        return not self.paused

    def subscribers(self, batch: list[Delivery]) -> dict[int, Subscriber]:
        return {d.subscriber_id: self.people[d.subscriber_id] for d in batch if d.subscriber_id in self.people}

    def mark_sending(self, delivery, message_id, now, finish=None):
        self.commits += 1
        if finish is not None:
            self.record(finish, commit=False)
        self._move(delivery, "mark_sending", D.SENDING)

    def record(self, outcome: Outcome, commit: bool = True) -> None:
        self.commits += commit
        self._move(outcome.delivery, "record_outcome", outcome.status, outcome.reply)

    def skip(self, delivery, status, reason, now):
        self._move(delivery, "skip", status, reason)

    def release(self, delivery, reason, now):
        self._move(delivery, "release", D.PENDING, reason)

    def mark_unknown(self, delivery, reason, now):
        self._move(delivery, "mark_unknown", D.UNKNOWN, reason)

    def attempted_since(self, since: str) -> int:
        return 0

    def retried(self, delivery, now):
        assert self.rows[delivery.id].status == D.SENDING

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
        return Message(f"<{sub.id}@example.com>", f"To: {sub.email}\r\n\r\nHi\r\n".encode())


class Transport:
    """Answers from a script: {recipient: [reply or exception, ...]}, 250 once the script runs out."""

    description = "fake"

    def __init__(self, log: FakeLog, script: dict | None = None, smtputf8: bool = True):
        self.log = log
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.handed: list[str] = []
        self.opens = 0
        self._smtputf8 = smtputf8

    @property
    def smtputf8(self) -> bool:
        return self._smtputf8

    def open(self) -> None:
        self.opens += 1

    def close(self) -> None:
        pass

    def send(self, envelope: Envelope, data: bytes) -> Reply:
        assert self.log.status(envelope.recipient) == D.SENDING, "handed over before its 'sending' mark"
        todo = self.script.get(envelope.recipient)
        answer = todo.pop(0) if todo else Reply(250, "2.0.0 OK")
        if isinstance(answer, BaseException):
            raise answer
        self.handed.append(envelope.recipient)
        return answer


def people(n: int, **kw) -> list[Subscriber]:
    return [Subscriber(email=f"p{i}@example.com", email_key=f"p{i}@example.com", id=i, **kw) for i in range(1, n + 1)]


@pytest.fixture
def clock():
    return FakeClock(datetime(2026, 11, 25, 15, 0, tzinfo=UTC))


def run(log, transport, clock, **options):
    options.setdefault("pause", 0)
    sender = CampaignSender(log, Renderer(), transport, clock, SendOptions(**options), sender="news@example.com")
    events = list(sender.run())
    return sender.result, events


def test_everyone_once_one_commit_per_message(clock):
    log = FakeLog(people(5))
    t = Transport(log)
    result, _ = run(log, t, clock)
    assert t.handed == [f"p{i}@example.com" for i in range(1, 6)]
    assert {r.status for r in log.rows.values()} == {D.SENT}
    assert result.handed_over == 5 and result.outcomes["sent"] == 5
    assert log.commits == 6  # five marks (each carrying the reply before it) and the last reply


def test_a_temporary_refusal_is_tried_again_after_a_growing_pause(clock):
    log = FakeLog(people(2))
    t = Transport(log, {"p1@example.com": [Reply(451, "4.7.1 greylisted"), Reply(451, "4.7.1 greylisted")]})
    result, _ = run(log, t, clock, backoff=2.0)
    assert log.status("p1@example.com") == D.SENT
    assert len(clock.slept) == 2 and 2 <= clock.slept[0] <= 4 and 4 <= clock.slept[1] <= 8


def test_a_refusal_every_time_is_left_pending_for_the_next_run(clock):
    log = FakeLog(people(2))
    t = Transport(log, {"p1@example.com": [Reply(451, "4.3.0 try later")] * 9})
    result, _ = run(log, t, clock, retries=3)
    assert log.status("p1@example.com") == D.PENDING and log.status("p2@example.com") == D.SENT
    assert "4.3.0" in log.rows[1].reply and result.outcomes["pending"] == 1


def test_an_address_that_does_not_exist_bounces(clock):
    log = FakeLog(people(2))
    t = Transport(log, {"p2@example.com": [Reply(550, "5.1.1 no such user", "rcpt")]})
    result, _ = run(log, t, clock)
    assert log.status("p2@example.com") == D.BOUNCED and result.outcomes["bounced"] == 1


def test_a_policy_refusal_pauses_and_blames_nobody(clock):
    log = FakeLog(people(3))
    t = Transport(log, {"p2@example.com": [Reply(554, "5.7.1 rejected as spam")]})
    result, _ = run(log, t, clock)
    assert result.paused and log.paused
    assert [log.status(f"p{i}@example.com") for i in (1, 2, 3)] == [D.SENT, D.PENDING, D.PENDING]


def test_silence_after_the_data_is_unknown_and_never_resent(clock):
    log = FakeLog(people(3))
    t = Transport(log, {"p2@example.com": [FateUnknown("no reply after the data")]})
    result, _ = run(log, t, clock)
    assert log.status("p2@example.com") == D.UNKNOWN and log.status("p3@example.com") == D.PENDING
    assert result.server_lost and t.handed == ["p1@example.com"]


def test_a_connection_lost_before_the_reply_is_sent_again_on_a_new_one(clock):
    log = FakeLog(people(2))
    t = Transport(log, {"p1@example.com": [ConnectionLost("reset")]})
    run(log, t, clock)
    assert t.handed == ["p1@example.com", "p2@example.com"] and t.opens == 2


def test_a_login_refused_mid_run_stops_with_the_message_back_to_pending(clock):
    log = FakeLog(people(2))
    t = Transport(log, {"p1@example.com": [Reply(530, "5.7.0 authentication required")]})
    with pytest.raises(SmtpError):
        run(log, t, clock)
    assert log.status("p1@example.com") == D.PENDING


def test_a_person_who_left_after_the_audience_was_fixed_is_skipped(clock):
    crowd = people(2)
    crowd[0] = replace(crowd[0], status=SubscriberStatus.UNSUBSCRIBED)
    log = FakeLog(crowd)
    t = Transport(log)
    result, _ = run(log, t, clock)
    assert log.status("p1@example.com") == D.SKIPPED and t.handed == ["p2@example.com"]


def test_a_message_that_cannot_be_rendered_fails_alone(clock):
    crowd = people(2)
    crowd[0] = replace(crowd[0], first_name="BROKEN")
    log = FakeLog(crowd)
    result, _ = run(log, Transport(log), clock)
    assert log.status("p1@example.com") == D.FAILED and log.status("p2@example.com") == D.SENT


def test_a_non_ascii_local_part_fails_without_smtputf8(clock):
    crowd = [Subscriber(email="renée@example.com", email_key="renée@example.com", id=1)]
    log = FakeLog(crowd)
    result, _ = run(log, Transport(log, smtputf8=False), clock)
    assert log.status("renée@example.com") == D.FAILED and "needs-smtputf8" in log.rows[1].reply


def test_limit_and_daily_cap_leave_the_rest_pending(clock):
    log = FakeLog(people(5))
    result, _ = run(log, Transport(log), clock, limit=2)
    assert result.handed_over == 2 and result.quota_left
    assert [r.status for r in log.rows.values()].count(D.PENDING) == 3
    log2 = FakeLog(people(5))
    result2, _ = run(log2, Transport(log2), clock, per_day=3)
    assert result2.handed_over == 3 and "cap" in result2.stopped


def test_ten_failures_in_a_row_stop_the_run(clock):
    log = FakeLog(people(12))
    script = {f"p{i}@example.com": [Reply(550, "5.0.0 refused")] for i in range(1, 13)}
    result, _ = run(log, Transport(log, script), clock, max_consecutive_failures=10)
    assert result.outcomes["failed"] == 10 and "10 failures in a row" in result.stopped
    assert [r.status for r in log.rows.values()].count(D.PENDING) == 2


def test_batches_pause_between_and_rate_spaces_messages(clock):
    log = FakeLog(people(4))
    t = Transport(log)
    run(log, t, clock, batch_size=2, pause=10, rate=60)
    assert t.opens == 2  # one connection per batch
    assert 10 in clock.slept  # the pause between the two batches
    assert sum(clock.slept) >= 3 * 1.0  # 60 a minute: one a second after the first
