"""`mailer send` against a real SMTP server: every sending rule, on the wire and in the store.

Each test runs the CLI in-process (`Mailer` from conftest.py, with a FakeClock: pauses,
backoff and rate limits cost no real time) on a copy of one sample workspace, against the
`smtp_server` fixture, then checks what the server actually received (each recipient once,
To, List-Unsubscribe and the Message-ID the delivery log holds) and what the store says
(`mailer report --json`, `subscribers show --json`, the delivery rows themselves).

The list is examples/patients.csv: 46 people, one with a non-ASCII local part
(renée@café.example, sent only over SMTPUTF8) and two at internationalised domains.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
from collections import Counter, defaultdict
from contextlib import closing
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from mailer.cli import AppState, app
from mailer.cli.output import Output
from mailer.clock import FakeClock
from mailer.lock import WorkspaceLock
from mailer.store import Store
from mailer.transport import envelope_address
from tests.conftest import REPO, Mailer
from tests.smtp_server import SmtpServer

SPECIALS = REPO / "examples" / "december-specials.md"
PATIENTS = REPO / "examples" / "patients.csv"
RENEE = "renée@café.example"
SENDER = "news@closter-acupuncture.example"
USER = "news@closter-acupuncture.example"
PASSWORD = "Xq7-correct-horse-battery"
EVERYONE = 46  # the valid people of patients.csv
DAY = 24 * 3600


# ---- helpers -------------------------------------------------------------------------


def set_config(home: Path, section: str, **values) -> None:
    """Change keys of one section of the mailer.toml that `mailer init --example` wrote."""
    path = home / "mailer.toml"
    lines = path.read_text(encoding="utf-8").splitlines()
    todo = dict(values)
    current = None
    for i, line in enumerate(lines):
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            current = header.group(1)
            continue
        key = line.split("=", 1)[0].strip()
        if current == section and "=" in line and key in todo:
            lines[i] = f"{key} = {json.dumps(todo.pop(key))}"
    assert not todo, f"not in [{section}]: {todo}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def point_at(home: Path, server: SmtpServer, **smtp) -> None:
    """Point the workspace's [smtp] at the test server (plus any other [smtp] keys)."""
    set_config(home, "smtp", **{**server.smtp_settings(), **smtp})


def wire(address: str) -> str:
    """An address as it goes out in RCPT TO (A-label domain)."""
    return envelope_address(address)[0]


def header_address(msg) -> str:
    """The one address in To; a UTF-8 header (SMTPUTF8) comes out of the parser surrogate-escaped."""
    [to] = msg["To"].addresses
    return to.addr_spec.encode("ascii", "surrogateescape").decode("utf-8")


def db_dump(home: Path) -> list[str]:
    with closing(sqlite3.connect(home / "mailer.db")) as db:
        return list(db.iterdump())


class Sending:
    """A workspace with the sample list, pointed at the test server, and ways to look at both."""

    def __init__(self, m: Mailer, server: SmtpServer, content: Path):
        self.m = m
        self.server = server
        self.content = content
        self.clock = m.clock
        self.home = m.home

    def send(self, *args, yes: bool = True, env: dict | None = None):
        return self.m("send", *args, *(["--yes"] if yes else []), env=env)

    def report(self, campaign: int = 1) -> dict:
        return self.m.json("report", str(campaign))

    def subscriber(self, email: str) -> dict:
        return self.m.json("subscribers", "show", email)

    def rows(self, campaign: int | None = 1) -> list[dict]:
        """Delivery rows straight from the database (the report does not show Message-IDs)."""
        with closing(sqlite3.connect(self.home / "mailer.db")) as db:
            db.row_factory = sqlite3.Row
            where, params = (" WHERE campaign_id = ?", (campaign,)) if campaign else ("", ())
            return [dict(r) for r in db.execute(f"SELECT * FROM deliveries{where} ORDER BY campaign_id, seq", params)]

    def emails(self, campaign: int = 1, *statuses: str) -> list[str]:
        """RCPT TO addresses of a campaign's delivery rows (of these statuses), in list order."""
        return [wire(r["email"]) for r in self.rows(campaign) if not statuses or r["status"] in statuses]

    def audience(self) -> list[str]:
        """The active subscribers' addresses in the order they were added (the sending order)."""
        return [s["email"] for s in self.m.json("subscribers", "list", "--status", "active")]

    def row(self, email: str, campaign: int = 1) -> dict:
        [r] = [r for r in self.rows(campaign) if r["email"] == email]
        return r

    def received(self) -> dict[int, list[str]]:
        """What the server received, checked message by message; the recipients of each campaign.

        Every message has one recipient and is to that recipient, carries List-Unsubscribe,
        parses without defects, and holds the Message-ID of a delivery row marked sent to
        that recipient; nobody got two copies of one campaign.
        """
        by_message_id = {r["message_id"]: r for r in self.rows(None) if r["message_id"]}
        got: dict[int, list[str]] = defaultdict(list)
        for rec in self.server.received:
            assert len(rec.rcpt_tos) == 1, rec.rcpt_tos
            rcpt = rec.rcpt_tos[0]
            msg = rec.message
            assert not [d for part in msg.walk() for d in part.defects], rcpt
            assert rec.mail_from == SENDER
            assert wire(header_address(msg)) == rcpt
            assert "<mailto:unsubscribe@closter-acupuncture.example?" in msg["List-Unsubscribe"]
            assert msg["Subject"] == "December specials: ease your pain before the holidays"
            row = by_message_id[msg["Message-ID"]]
            assert row["status"] == "sent", row
            assert wire(row["email"]) == rcpt
            got[row["campaign_id"]].append(rcpt)
        for campaign, rcpts in got.items():
            twice = [r for r, n in Counter(rcpts).items() if n > 1]
            assert not twice, f"campaign {campaign}: sent twice to {twice}"
        return got

    def assert_sent_once(self, campaign: int = 1, count: int = EVERYONE) -> None:
        """The campaign's rows marked sent are exactly what the server received for it, once each."""
        got = self.received()[campaign]
        assert len(got) == count
        assert sorted(got) == sorted(self.emails(campaign, "sent"))


@pytest.fixture(scope="session")
def sample_workspace(tmp_path_factory) -> Path:
    """`mailer init --example` and the sample list imported: made once, copied for each test."""
    home = tmp_path_factory.mktemp("sample") / "ws"
    m = Mailer(home, FakeClock(datetime(2026, 11, 25, 15, 0, 0, tzinfo=UTC)))
    assert m("init", "--example").exit_code == 0
    assert m.json("import", PATIENTS)["added"] == EVERYONE
    return home


@pytest.fixture
def sending(sample_workspace, clock, smtp_server, tmp_path) -> Sending:
    """The sample list imported, [smtp] pointed at the test server, a specials file to send."""
    mailer = Mailer(tmp_path / "ws", clock)
    shutil.copytree(sample_workspace, mailer.home)
    point_at(mailer.home, smtp_server)
    content = tmp_path / "december-specials.md"
    shutil.copy(SPECIALS, content)
    return Sending(mailer, smtp_server, content)


# ---- everyone once -------------------------------------------------------------------


def test_sends_everyone_once_and_marks_the_campaign_done(sending):
    result = sending.send(sending.content)

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    report = sending.report()
    assert report["status"] == "done"
    figures = [report[k] for k in ("total", "sent", "pending", "failed", "bounced", "skipped", "unknown")]
    assert figures == [EVERYONE, EVERYONE, 0, 0, 0, 0, 0]
    assert report["failures"] == []
    assert all(r["attempts"] == 1 and r["sent_at"] and r["reply"].startswith("250 ") for r in sending.rows())
    assert f"sent: {EVERYONE}" in result.stdout
    assert sending.server.connections == 1  # the default batch of 50 is one connection
    # Internationalised domains go out as A-labels; only a non-ASCII local part needs SMTPUTF8.
    recipients = sending.server.recipients()
    assert "joerg@xn--mller-kva.example" in recipients
    assert "joon.lim@xn--3e0b707e.example" in recipients
    assert [r for r in recipients if not r.isascii()] == ["renée@xn--caf-dma.example"]
    assert [m.rcpt_tos for m in sending.server.received if "SMTPUTF8" in m.mail_options] == [[wire(RENEE)]]


def test_a_finished_campaign_is_not_sent_again_unless_repeated_on_purpose(sending):
    assert sending.send(sending.content).exit_code == 0

    again = sending.send(sending.content)
    assert again.exit_code == 2
    assert "already sent" in again.stderr and "--allow-repeat" in again.stderr
    by_id = sending.send("1")
    assert by_id.exit_code == 0, by_id.stderr
    assert len(sending.server.received) == EVERYONE

    refused = sending.m("campaign", "create", sending.content)
    assert refused.exit_code == 2 and "campaign 1" in refused.stderr and "--allow-repeat" in refused.stderr
    created = sending.m("campaign", "create", sending.content, "--allow-repeat")
    assert created.exit_code == 0 and created.stdout.strip() == "2"
    assert sending.send("2").exit_code == 0
    sending.assert_sent_once(1)
    sending.assert_sent_once(2)
    assert sending.report(1)["status"] == sending.report(2)["status"] == "done"


# ---- batches, rate, limits -----------------------------------------------------------


def test_batches_reuse_one_connection_each_and_pause_between(sending):
    result = sending.send(sending.content, "--batch-size", "10", "--pause", "30")

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    per_connection = Counter(m.connection for m in sending.server.received)
    assert sorted(per_connection.items()) == [(1, 10), (2, 10), (3, 10), (4, 10), (5, 6)]
    assert sending.server.connections == 5
    assert sending.clock.slept == [30, 30, 30, 30]
    assert "pausing 30 s" in result.stderr


@pytest.mark.parametrize(
    "options",
    [("--batch-size", "23"), ("--batch-size", "10", "--limit", "10")],
    ids=["list-ends-with-a-full-batch", "limit-ends-with-a-full-batch"],
)
def test_no_pause_after_the_last_batch_of_a_run(sending, options):
    result = sending.send(sending.content, "--pause", "30", *options)

    assert result.exit_code == 0, result.stderr
    sent = len(sending.server.received)
    batch = int(options[1])
    assert sending.clock.slept == [30] * (sent // batch - 1)  # between batches, never after the last


def test_rate_spaces_the_messages_as_they_are_sent(sending):
    result = sending.send(sending.content, "--rate", "60")

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    assert sending.clock.slept == [1.0] * (EVERYONE - 1)
    times = [r["attempted_at"] for r in sending.rows()]
    assert times == sorted(set(times))  # one message a second, by the clock at hand-over


def test_rate_counts_the_pause_between_batches(sending):
    result = sending.send(sending.content, "--rate", "60", "--batch-size", "10", "--pause", "30")

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    # After a 30 s pause the next message is already within the rate: no extra wait.
    assert sending.clock.slept == ([1.0] * 9 + [30]) * 4 + [1.0] * 5


@pytest.mark.parametrize("pipelining", [True, False])
def test_limit_with_a_refused_recipient_stops_at_the_limit(sending, pipelining):
    """A refusal before the data is never counted, and never keeps its place under --limit: the
    run ends at the limit (it once spun for ever, holding the lock)."""
    sending.server.pipelining = pipelining
    refused = sending.audience()[1]
    sending.server.respond(wire(refused), "550 5.1.1 No such user")
    result = sending.send(sending.content, "--limit", "2")
    assert result.exit_code == 1, result.stderr
    assert len(sending.server.recipients()) == 2 and wire(refused) not in sending.server.recipients()
    assert "--limit allowed" in result.stderr


def test_a_data_reply_out_of_step_is_not_taken_for_an_acceptance(sending):
    """A server whose RCPT answer comes twice: the second is read for DATA. That is no 250 for
    the message: it goes again on a new connection, and arrives once."""
    target = sending.audience()[2]
    sending.server.respond_raw(wire(target), b"250 2.1.5 ok\r\n250 2.0.0 queued\r\n")
    result = sending.send(sending.content)
    assert result.exit_code == 0, result.stderr
    assert sending.server.recipients().count(wire(target)) == 1
    sending.assert_sent_once()


def test_limit_sends_that_many_and_the_next_run_continues(sending):
    first = sending.send(sending.content, "--limit", "5")

    assert first.exit_code == 0, first.stderr
    assert first.stderr.count("--limit allowed") == 1, first.stderr  # said once, with what happens next
    assert "the rest waits for the next run" in first.stderr
    sending.assert_sent_once(count=5)
    assert sending.server.recipients() == sending.emails()[:5]
    report = sending.report()
    assert (report["status"], report["sent"], report["pending"]) == ("sending", 5, EVERYONE - 5)

    second = sending.send(sending.content, "--json")
    assert second.exit_code == 0, second.stderr
    summary = json.loads(second.stdout)  # one JSON document, nothing else on stdout
    assert [summary[k] for k in ("campaign", "status", "sent", "this_run")] == [1, "done", EVERYONE, EVERYONE - 5]
    sending.assert_sent_once()
    assert sending.server.recipients() == sending.emails()  # in list order, the first five not again
    assert sending.report()["status"] == "done"


def test_daily_cap_leaves_the_rest_for_the_next_day(sending):
    first = sending.send(sending.content, "--per-day", "20")
    assert first.exit_code == 0, first.stderr
    assert "today's cap of 20" in first.stderr
    assert len(sending.server.received) == 20

    same_day = sending.send("1", "--per-day", "20")
    assert same_day.exit_code == 0
    assert len(sending.server.received) == 20

    # 15:00 UTC on the 25th is 10:00 in New York; 04:30 UTC on the 26th is still the 25th there.
    sending.clock.advance(13.5 * 3600)
    sending.send("1", "--per-day", "20")
    assert len(sending.server.received) == 20

    sending.clock.advance(3600)  # 00:30 on the 26th in New York: a new day
    sending.send("1", "--per-day", "20")
    assert len(sending.server.received) == 40
    assert sending.report()["pending"] == EVERYONE - 40

    sending.clock.advance(DAY)
    last = sending.send("1", "--per-day", "20")
    assert last.exit_code == 0, last.stderr
    sending.assert_sent_once()
    assert sending.report()["status"] == "done"


def test_daily_cap_counts_every_campaign_of_the_day(sending):
    assert sending.send(sending.content, "--limit", "15").exit_code == 0
    assert sending.m("campaign", "create", sending.content, "--name", "second", "--allow-repeat").stdout.strip() == "2"

    result = sending.send("2", "--per-day", "20")

    assert result.exit_code == 0, result.stderr
    assert "today's cap of 20" in result.stderr
    got = sending.received()
    assert (len(got[1]), len(got[2])) == (15, 5)


# ---- server replies ------------------------------------------------------------------

TEMPORARY = [
    ("rcpt", "451 4.7.1 Greylisted, please try again later"),
    ("rcpt", "452 4.2.2 Mailbox full, try again later"),
    ("rcpt", "450 4.2.0 Mailbox busy"),
    ("data", "451 4.3.0 Temporary local problem"),
]


# Real relays offer PIPELINING (MAIL, RCPT and DATA in one write), which changes where a
# refusal or a drop is noticed: the reply rules are checked both ways.
PIPELINING = pytest.mark.parametrize("pipelining", [False, True], ids=["stepwise", "pipelined"])
TEMPORARY_ONCE = [(s, r, False) for s, r in TEMPORARY] + [
    ("rcpt", TEMPORARY[0][1], True), ("data", TEMPORARY[3][1], True),
]
TEMPORARY_ALWAYS = [(s, r, False) for s, r in TEMPORARY if not r.startswith("450")] + [("rcpt", TEMPORARY[1][1], True)]


def _ids(cases) -> list[str]:
    return [f"{r[:3]}-{s}" + ("-pipelined" if p else "") for s, r, p in cases]


def _refuse(server: SmtpServer, stage: str, address: str, *replies: str) -> None:
    (server.respond if stage == "rcpt" else server.respond_data)(address, *replies)


@pytest.mark.parametrize("stage,reply,pipelining", TEMPORARY_ONCE, ids=_ids(TEMPORARY_ONCE))
def test_temporary_refusal_is_sent_after_a_backoff(sending, stage, reply, pipelining):
    sending.server.pipelining = pipelining
    target = "maria.russo@example.org"
    _refuse(sending.server, stage, target, reply)

    result = sending.send(sending.content)

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    assert sending.row(target)["status"] == "sent"
    assert sending.row(target)["attempts"] == 2  # refused once, then accepted
    [backoff] = sending.clock.slept
    assert 2 <= backoff <= 4  # 2 s, plus jitter
    assert "trying again" in result.stderr


@pytest.mark.parametrize("stage,reply,pipelining", TEMPORARY_ALWAYS, ids=_ids(TEMPORARY_ALWAYS))
def test_temporary_refusal_every_time_is_left_for_the_next_run(sending, stage, reply, pipelining):
    sending.server.pipelining = pipelining
    target = "maria.russo@example.org"
    _refuse(sending.server, stage, target, *[reply] * 4)  # the first try and three more

    result = sending.send(sending.content)

    assert result.exit_code == 1
    assert wire(target) not in sending.server.recipients()
    sending.assert_sent_once(count=EVERYONE - 1)
    row = sending.row(target)
    assert row["status"] == "pending" and row["reply"] == reply
    report = sending.report()
    assert (report["status"], report["pending"]) == ("sending", 1)
    assert {"email": target, "status": "pending", "attempts": 4, "reason": reply} in report["failures"]
    backoffs = sending.clock.slept
    assert len(backoffs) == 3 and 2 <= backoffs[0] <= 4 and 4 <= backoffs[1] <= 8 and 8 <= backoffs[2] <= 16
    assert row["next_attempt_at"].startswith("2026-11-25T15:30:")  # 30 minutes after the last in-run try

    soon = sending.send(sending.content)  # too early: it waits for its next try
    assert soon.exit_code == 0, soon.stderr
    assert wire(target) not in sending.server.recipients()
    sending.clock.advance(30 * 60)
    again = sending.send(sending.content)  # the server takes it now
    assert again.exit_code == 0, again.stderr
    sending.assert_sent_once()
    assert sending.report()["status"] == "done"


@pytest.mark.parametrize("how", ["rcpt", "per-connection", "pipelined-rcpt", "pipelined-per-connection"])
def test_421_closing_the_connection_reconnects_and_continues(sending, how):
    sending.server.pipelining = how.startswith("pipelined")
    if how.endswith("rcpt"):
        sending.server.respond("maria.russo@example.org", "421 4.7.0 Too busy, closing connection")
    else:
        sending.server.messages_per_connection = 10  # 421 at the 11th MAIL

    result = sending.send(sending.content)

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    assert sending.server.connections == (2 if how.endswith("rcpt") else 5)
    assert sending.report()["status"] == "done"


@pytest.mark.parametrize(
    "reply,pipelining",
    [
        ("550 5.1.1 <maria.russo@example.org>: Recipient address rejected: User unknown", False),
        ("550 5.2.1 The email account that you tried to reach is disabled", False),
        ("550 No such user here", False),
        ("550 5.1.1 <maria.russo@example.org>: Recipient address rejected: User unknown", True),
    ],
    ids=["5.1.1", "5.2.1", "no-enhanced-code", "5.1.1-pipelined"],
)
def test_unknown_recipient_bounces_the_delivery_and_the_subscriber(sending, reply, pipelining):
    sending.server.pipelining = pipelining
    target = "maria.russo@example.org"
    sending.server.respond(target, reply)

    result = sending.send(sending.content)

    assert result.exit_code == 1
    sending.assert_sent_once(count=EVERYONE - 1)
    row = sending.row(target)
    # the reply is kept with the address masked: the row already names the person
    assert row["status"] == "bounced" and row["reply"] == reply.replace(target, "address")
    report = sending.report()
    assert (report["status"], report["bounced"], report["sent"]) == ("done", 1, EVERYONE - 1)
    assert [f["email"] for f in report["failures"]] == [target]
    subscriber = sending.subscriber(target)
    assert subscriber["status"] == "bounced"


def test_a_bounced_subscriber_is_not_mailed_by_a_later_campaign(sending):
    target = "maria.russo@example.org"
    sending.server.respond(target, "550 5.1.1 <maria.russo@example.org>: Recipient address rejected: User unknown")
    assert sending.send(sending.content).exit_code == 1

    assert sending.m("campaign", "create", sending.content, "--allow-repeat").stdout.strip() == "2"
    result = sending.send("2")

    assert result.exit_code == 0, result.stderr
    assert target not in sending.received()[2]
    sending.assert_sent_once(2, count=EVERYONE - 1)
    assert sending.report(2)["total"] == EVERYONE - 1


@PIPELINING
def test_policy_refusal_pauses_the_campaign_and_blames_nobody(sending, pipelining):
    sending.server.pipelining = pipelining
    target = "sofia.hernandez@example.net"
    sending.server.respond(target, "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org")

    result = sending.send(sending.content)

    assert result.exit_code == 1
    assert "paused" in result.stderr and "5.7.1" in result.stderr
    before = sending.emails()[: sending.emails().index(target)]
    assert sending.server.recipients() == before  # nothing after the refusal
    report = sending.report()
    assert report["status"] == "paused"
    assert "policy" in report["status_reason"] and "5.7.1" in report["status_reason"]
    assert report["bounced"] == 0 and report["pending"] == EVERYONE - len(before)
    assert sending.row(target)["status"] == "pending"
    assert sending.m.json("subscribers", "list", "--status", "bounced") == []
    human = sending.m("report", "1")
    assert "5.7.1" in human.stderr + human.stdout

    resumed = sending.send("1")  # the server has forgiven us (no more queued refusals)
    assert resumed.exit_code == 0, resumed.stderr
    sending.assert_sent_once()
    assert sending.report()["status"] == "done"


@pytest.mark.parametrize("reply", ["552 5.3.4 Message size exceeds fixed limit", "503 5.5.1 Bad sequence of commands"])
def test_a_refusal_of_the_message_itself_pauses_the_campaign_and_fails_nobody(sending, reply):
    """Too big for the relay, or commands it does not take: everyone would get the same answer."""
    target = sending.audience()[3]
    sending.server.respond_data(wire(target), reply)
    result = sending.send(sending.content)
    assert result.exit_code == 1 and "Campaign paused" in result.stderr and "refuses the message itself" in result.stderr
    report = sending.report()
    assert (report["status"], report["failed"], report["pending"]) == ("paused", 0, EVERYONE - 3)
    assert json.loads(sending.m("run-due", "--json").stdout)["campaigns"] == []  # cron leaves it for a person


def test_a_policy_refusal_of_one_address_says_how_to_go_past_it(sending):
    target = sending.audience()[4]
    sending.server.respond(wire(target), *["550 5.7.1 Relaying denied for this domain"] * 5)
    first = sending.send(sending.content)
    assert first.exit_code == 1 and sending.report()["status"] == "paused"
    hint = f"`mailer subscribers unsubscribe {target}`"
    assert hint in first.stderr
    assert sending.m("subscribers", "unsubscribe", target).exit_code == 0
    again = sending.send("1")
    assert again.exit_code == 0, again.stderr
    assert sending.report()["status"] == "done" and wire(target) not in sending.server.recipients()


def test_ten_failures_in_a_row_pause_the_campaign_so_cron_burns_no_more(sending):
    for person in sending.audience()[:12]:
        sending.server.respond_data(wire(person), "550 5.0.0 Something is wrong")
    result = sending.send(sending.content)
    assert result.exit_code == 1 and "10 messages in a row failed" in result.stderr
    report = sending.report()
    assert (report["status"], report["failed"]) == ("paused", 10)
    assert json.loads(sending.m("run-due", "--json").stdout)["campaigns"] == []
    assert sending.report()["failed"] == 10


@PIPELINING
def test_other_permanent_refusal_fails_and_retry_failed_tries_again(sending, pipelining):
    sending.server.pipelining = pipelining
    target = "maria.russo@example.org"
    reply = "550 5.2.0 Message rejected for this mailbox"
    sending.server.respond_data(target, reply)

    result = sending.send(sending.content)

    assert result.exit_code == 1
    sending.assert_sent_once(count=EVERYONE - 1)
    row = sending.row(target)
    assert (row["status"], row["reply"]) == ("failed", reply)
    assert sending.subscriber(target)["status"] == "active"
    report = sending.report()
    assert (report["status"], report["failed"]) == ("done", 1)
    assert sending.clock.slept == []  # a permanent refusal is not retried in the run

    plain = sending.send("1")
    assert plain.exit_code == 0 and len(sending.server.received) == EVERYONE - 1

    retried = sending.send("1", "--retry-failed")
    assert retried.exit_code == 0, retried.stderr
    sending.assert_sent_once()
    assert sending.row(target)["attempts"] == 2
    assert sending.report()["status"] == "done"


def test_refused_login_exits_3_at_once_and_marks_nothing(sending):
    sending.server.auth = (USER, PASSWORD)
    point_at(sending.home, sending.server)
    wrong = "Wrong-pw-8k2!"

    result = sending.send(sending.content, env={"MAILER_SMTP_PASSWORD": wrong})

    assert result.exit_code == 3
    assert "refused the login" in result.stderr and "535" in result.stderr
    assert "Traceback" not in result.stderr
    assert wrong not in result.stdout + result.stderr
    assert sending.server.received == [] and sending.server.connections == 1
    assert sending.report()["sent"] == 0
    assert {r["status"] for r in sending.rows()} == {"pending"}
    assert all(r["attempts"] == 0 for r in sending.rows())
    assert_secret_nowhere(sending.home, wrong)


def test_server_that_wants_a_login_we_lack_exits_3_and_marks_nothing(sending):
    sending.server.configure(auth=(USER, PASSWORD))  # and mailer.toml has no username

    result = sending.send(sending.content)

    assert result.exit_code == 3
    assert "asks for a login" in result.stderr and "530" in result.stderr
    assert sending.server.received == []
    report = sending.report()
    assert (report["sent"], report["pending"], report["bounced"], report["failed"]) == (0, EVERYONE, 0, 0)


@PIPELINING
def test_many_failures_in_a_row_stop_the_run(sending, pipelining):
    sending.server.pipelining = pipelining
    for address in sending.audience()[:12]:
        sending.server.respond(address, *["452 4.5.3 Too many recipients, try later"] * 4)

    result = sending.send(sending.content, "--batch-size", "100")

    assert result.exit_code == 1
    assert "10 failures in a row" in result.stderr and "pending" in result.stderr
    assert sending.server.received == []
    rows = sending.rows()
    assert [r["attempts"] for r in rows[:10]] == [4] * 10  # each tried, then three times again
    assert all(r["attempts"] == 0 for r in rows[10:])  # the rest of the list was not burnt
    report = sending.report()
    assert (report["status"], report["pending"]) == ("sending", EVERYONE)



# ---- dropped connections and slow servers --------------------------------------------


@PIPELINING
def test_dropped_connection_reconnects_and_sends_each_once(sending, pipelining):
    sending.server.pipelining = pipelining
    sending.server.drop_after = 7  # hangs up at the 8th MAIL

    result = sending.send(sending.content)

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    assert sending.server.connections == 2
    assert [m.connection for m in sending.server.received] == [1] * 7 + [2] * (EVERYONE - 7)
    assert sending.report()["status"] == "done"


def test_after_a_reconnect_a_connection_still_carries_at_most_one_batch(sending):
    sending.server.drop_after = 5

    result = sending.send(sending.content, "--batch-size", "10", "--pause", "30")

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    per_connection = Counter(m.connection for m in sending.server.received)
    assert sorted(per_connection.items()) == [(1, 5), (2, 10), (3, 10), (4, 10), (5, 10), (6, 1)]
    assert sending.clock.slept == [30] * 4


@PIPELINING
@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
def test_a_hang_up_before_the_data_sends_that_message_again_on_a_new_connection(sending, pipelining, stage):
    sending.server.pipelining = pipelining
    sending.server.hang_up = (stage, 7)  # during the 8th message, before any of its data

    result = sending.send(sending.content)

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    assert sending.server.connections == 2 and sending.server.unanswered == []
    eighth = sending.emails()[7]
    assert [m.connection for m in sending.server.received if m.rcpt_tos == [eighth]] == [2]
    assert "reconnecting" in result.stderr
    assert sending.report()["status"] == "done"


@PIPELINING
@pytest.mark.parametrize("stage", ["mid-data", "dot"])
def test_a_hang_up_once_the_data_has_left_is_unknown_and_not_sent_again(sending, pipelining, stage):
    """Issue: a message the server may have taken was sent again after a hang-up (or a garbled reply)."""
    sending.server.pipelining = pipelining
    sending.server.hang_up = (stage, 7)

    result = sending.send(sending.content)

    assert result.exit_code == 1
    assert "not sent again" in result.stderr and "--retry-unknown" in result.stderr
    eighth = sending.emails()[7]
    assert sending.row(eighth)["status"] == "unknown"
    assert [m.rcpt_tos for m in sending.server.unanswered] == ([[eighth]] if stage == "dot" else [])
    report = sending.report()
    assert (report["sent"], report["unknown"], report["pending"]) == (7, 1, EVERYONE - 8)

    rest = sending.send("1")
    assert rest.exit_code == 0, rest.stderr
    sending.assert_sent_once(count=EVERYONE - 1)
    assert eighth not in sending.server.recipients()
    assert sending.send("1", "--retry-unknown").exit_code == 0
    sending.assert_sent_once()


@PIPELINING
@pytest.mark.parametrize(
    "raw",
    [b"250 " + b"x" * 10_000 + b"\r\n", b"250 2.0.0 OK\r\x00garbage", b"hello, this is not SMTP\r\n"],
    ids=["250-then-10000-characters", "250-then-garbage", "not-a-reply"],
)
def test_a_garbled_reply_after_the_data_is_unknown_and_not_sent_again(sending, pipelining, raw):
    sending.server.pipelining = pipelining
    set_config(sending.home, "smtp", timeout=3)  # a reply with no line end is only over when the wait is
    target = sending.audience()[4]
    sending.server.respond_data_raw(wire(target), raw)

    result = sending.send(sending.content)

    assert result.exit_code == 1
    row = sending.row(target)
    assert row["status"] == "unknown" and "--retry-unknown" in row["reply"]
    copies = [m for m in sending.server.received if m.rcpt_tos == [wire(target)]]
    assert len(copies) == (1 if raw.startswith(b"250 ") else 0)  # the server has it (or not): never twice
    assert sending.report()["unknown"] == 1
    assert sending.send("1").exit_code == 0
    assert len([m for m in sending.server.received if m.rcpt_tos == [wire(target)]]) == len(copies)


@PIPELINING
def test_a_garbled_reply_to_the_envelope_is_a_lost_connection_and_the_message_goes_again(sending, pipelining):
    sending.server.pipelining = pipelining
    target = sending.audience()[4]
    sending.server.respond_raw(wire(target), b"250 " + b"y" * 5000 + b"\r\n")

    result = sending.send(sending.content)

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    assert sending.server.connections == 2


@PIPELINING
def test_replies_split_across_packets_are_read_whole(sending, pipelining):
    sending.server.pipelining = pipelining
    sending.server.split_replies = True
    result = sending.send(sending.content)
    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()


def test_server_that_never_answers_exits_3_and_leaves_everything_pending(sending):
    set_config(sending.home, "smtp", timeout=0.3)
    sending.server.hang = True

    result = sending.send(sending.content)

    assert result.exit_code == 3
    assert "Cannot reach the SMTP server" in result.stderr and "Traceback" not in result.stderr
    assert sending.server.received == []
    report = sending.report()
    assert (report["sent"], report["pending"], report["unknown"]) == (0, EVERYONE, 0)

    sending.server.hang = False
    assert sending.send("1").exit_code == 0
    sending.assert_sent_once()


def test_slow_server_times_out_with_a_clear_exit_and_the_rest_pending(sending):
    set_config(sending.home, "smtp", timeout=0.3)
    sending.server.delay = 2.0  # longer than the timeout: the reply to DATA never comes in time

    result = sending.send(sending.content)

    # The server had the whole first message when it fell silent: it may deliver it, so
    # that one is unknown (not sent again); the rest waits for the next run.
    assert result.exit_code == 1
    assert "fell silent" in result.stderr and "not sent again" in result.stderr and "pending" in result.stderr
    assert sending.server.received == []
    report = sending.report()
    assert (report["sent"], report["pending"], report["unknown"]) == (0, EVERYONE - 1, 1)
    first = sending.emails()[0]
    assert [f["status"] for f in report["failures"] if wire(f["email"]) == first] == ["unknown"]

    sending.server.delay = 0
    assert sending.send("1").exit_code == 0
    sending.assert_sent_once(count=EVERYONE - 1)
    assert first not in sending.received()[1]
    assert sending.send("1", "--retry-unknown").exit_code == 0
    sending.assert_sent_once()


# ---- TLS and login -------------------------------------------------------------------


def assert_secret_nowhere(home: Path, secret: str) -> None:
    """Not in the database, the logs, the outbox or any other file of the workspace."""
    for path in home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_starttls_then_login_then_send(sending):
    sending.server.configure(tls="starttls", auth=(USER, PASSWORD))
    point_at(sending.home, sending.server)
    env = {**sending.server.tls_env(), "MAILER_SMTP_PASSWORD": PASSWORD}

    result = sending.send(sending.content, env=env)

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    commands = sending.server.commands
    assert commands.index("STARTTLS") < commands.index("AUTH") < commands.index("MAIL")
    assert sending.server.auth_attempts == [(USER, PASSWORD)]
    assert all(m.tls and m.username == USER for m in sending.server.received)
    assert PASSWORD not in result.stdout + result.stderr
    dry = sending.m("send", "1", "--dry-run", env=env)  # .eml files too
    assert dry.exit_code == 0
    assert_secret_nowhere(sending.home, PASSWORD)


def test_no_starttls_offered_stops_before_the_password(sending):
    sending.server.configure(tls="none", auth=(USER, PASSWORD))  # AUTH offered in the clear
    point_at(sending.home, sending.server, security="starttls")

    result = sending.send(sending.content, env={"MAILER_SMTP_PASSWORD": PASSWORD})

    assert result.exit_code == 3
    assert "does not offer STARTTLS" in result.stderr
    assert sending.server.auth_attempts == [] and "AUTH" not in sending.server.commands
    assert "MAIL" not in sending.server.commands and sending.server.received == []
    assert PASSWORD not in result.stdout + result.stderr
    assert sending.report()["sent"] == 0


def test_implicit_tls(sending):
    sending.server.configure(tls="ssl", auth=(USER, PASSWORD))
    point_at(sending.home, sending.server)
    env = {**sending.server.tls_env(), "MAILER_SMTP_PASSWORD": PASSWORD}

    result = sending.send(sending.content, env=env)

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    assert "STARTTLS" not in sending.server.commands
    assert all(m.tls and m.username == USER for m in sending.server.received)


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_untrusted_certificate_exits_3_with_a_sentence(sending, monkeypatch, tls):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    sending.server.configure(tls=tls, auth=(USER, PASSWORD))
    point_at(sending.home, sending.server)

    result = sending.send(sending.content, env={"MAILER_SMTP_PASSWORD": PASSWORD})

    assert result.exit_code == 3
    assert "certificate" in result.stderr and "could not be verified" in result.stderr
    assert "Traceback" not in result.stderr
    assert sending.server.auth_attempts == [] and sending.server.received == []
    assert PASSWORD not in result.stdout + result.stderr


# ---- SMTPUTF8 and internationalised addresses ----------------------------------------


def test_non_ascii_local_part_is_reported_when_the_server_lacks_smtputf8(sending):
    sending.server.smtputf8 = False

    result = sending.send(sending.content)

    assert result.exit_code == 1
    sending.assert_sent_once(count=EVERYONE - 1)
    assert RENEE not in sending.server.recipients() and wire(RENEE) not in sending.server.recipients()
    row = sending.row(RENEE)
    assert row["status"] == "failed" and row["reply"].startswith("needs-smtputf8")
    report = sending.report()
    assert (report["sent"], report["failed"]) == (EVERYONE - 1, 1)
    [failure] = report["failures"]
    assert failure["email"] == RENEE and failure["reason"].startswith("needs-smtputf8")
    assert "needs-smtputf8" in result.stderr
    assert "joerg@xn--mller-kva.example" in sending.server.recipients()
    assert "joon.lim@xn--3e0b707e.example" in sending.server.recipients()


@PIPELINING
def test_non_ascii_local_part_goes_out_with_smtputf8(sending, pipelining):
    sending.server.pipelining = pipelining
    result = sending.send(sending.content)

    assert sending.row(RENEE)["status"] == "sent", sending.row(RENEE)
    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    [renee] = [m for m in sending.server.received if m.rcpt_tos == [wire(RENEE)]]
    assert "SMTPUTF8" in renee.mail_options
    assert header_address(renee.message).startswith("renée@")  # a UTF-8 header, allowed under SMTPUTF8
    others = [m for m in sending.server.received if m is not renee]
    assert not [m for m in others if "SMTPUTF8" in m.mail_options]


# ---- the audience is fixed once ------------------------------------------------------


def test_unsubscribed_or_erased_after_the_audience_is_fixed_are_skipped(sending):
    assert sending.send(sending.content, "--limit", "5").exit_code == 0
    audience = sending.audience()
    gone, erased = audience[10], audience[12]
    assert sending.m("subscribers", "unsubscribe", gone).exit_code == 0
    assert sending.m("subscribers", "erase", erased, "--yes").exit_code == 0

    result = sending.send("1")

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once(count=EVERYONE - 2)
    recipients = sending.server.recipients()
    assert wire(gone) not in recipients and wire(erased) not in recipients
    report = sending.report()
    assert (report["status"], report["skipped"], report["sent"]) == ("done", 2, EVERYONE - 2)
    skipped = {f["email"]: f["reason"] for f in report["failures"] if f["status"] == "skipped"}
    assert skipped == {gone: "unsubscribed after the audience was fixed", "": "erased after the audience was fixed"}


# ---- the delivery log after a crash --------------------------------------------------


def test_row_left_sending_by_a_crash_is_unknown_and_not_resent(sending):
    assert sending.send(sending.content, "--limit", "5").exit_code == 0
    in_flight = sending.rows()[5]
    with closing(sqlite3.connect(sending.home / "mailer.db")) as db, db:
        # What a run killed while handing the sixth message over leaves behind.
        db.execute(
            "UPDATE deliveries SET status = 'sending', attempts = 1, message_id = '<x@closter-acupuncture.example>', "
            "attempted_at = '2026-11-25T15:00:00Z' WHERE id = ?",
            (in_flight["id"],),
        )

    result = sending.send(sending.content)

    assert result.exit_code == 1
    assert "unknown" in result.stderr and "--retry-unknown" in result.stderr
    target = wire(in_flight["email"])
    assert target not in sending.server.recipients()
    sending.assert_sent_once(count=EVERYONE - 1)
    report = sending.report()
    assert (report["status"], report["unknown"], report["sent"]) == ("done", 1, EVERYONE - 1)
    [unknown] = [f for f in report["failures"] if f["status"] == "unknown"]
    assert unknown["email"] == in_flight["email"] and "before its answer was recorded" in unknown["reason"]

    quiet = sending.send("1")
    assert quiet.exit_code == 0 and target not in sending.server.recipients()

    retried = sending.send("1", "--retry-unknown")
    assert retried.exit_code == 0, retried.stderr
    sending.assert_sent_once()
    assert sending.report()["unknown"] == 0


# ---- one run at a time ---------------------------------------------------------------


def test_locked_workspace_exits_4_naming_the_holder_and_changes_nothing(sending):
    before = db_dump(sending.home)
    with WorkspaceLock(sending.home / "mailer.lock", "mailer send 7", "2026-11-25T14:59:00Z"):
        result = sending.send(sending.content)
        due = sending.m("run-due")

    assert result.exit_code == 4
    assert f"process {os.getpid()}" in result.stderr and "mailer send 7" in result.stderr
    assert due.exit_code == 4
    assert sending.server.connections == 0
    assert db_dump(sending.home) == before
    assert sending.m.json("campaign", "list") == []


def test_lock_left_by_a_dead_process_is_taken_over(sending):
    lock = sending.home / "mailer.lock"
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "command": "mailer send 1", "started": "2026-11-24T09:00:00Z"}))

    result = sending.send(sending.content)

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()


# ---- pre-send checks and confirmation ------------------------------------------------


def test_pre_send_check_error_stops_before_anything_is_sent(sending):
    set_config(sending.home, "practice", address="")

    result = sending.send(sending.content)

    assert result.exit_code == 2
    assert "address" in result.stderr and "nothing was sent" in result.stderr
    assert sending.server.connections == 0
    assert sending.rows(None) == []


def test_pre_send_warnings_are_shown_and_sending_goes_on(sending):
    set_config(sending.home, "practice", phone="")

    result = sending.send(sending.content)

    assert result.exit_code == 0, result.stderr
    assert "warning: phone:" in result.stderr
    sending.assert_sent_once()


def test_without_a_terminal_or_yes_it_refuses(sending):
    result = sending.send(sending.content, yes=False)

    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert sending.server.connections == 0
    assert sending.rows(None) == []
    assert sending.m.json("campaign", "list") == []  # a refused send leaves no campaign behind


@pytest.mark.parametrize("answer", ["y", "n"])
def test_on_a_terminal_it_shows_what_and_asks(sending, answer):
    obj = AppState(home=str(sending.home), clock=sending.clock, output=Output(force_terminal=True))
    result = sending.m.runner.invoke(app, ["send", str(sending.content)], input=answer + "\n", obj=obj)

    shown = result.stdout
    assert "About to send" in shown and f"{EVERYONE} on the specials list" in shown
    assert f"127.0.0.1:{sending.server.port}" in shown
    if answer == "y":
        assert result.exit_code == 0, result.stderr
        sending.assert_sent_once()
    else:
        assert result.exit_code == 2
        assert sending.server.connections == 0 and sending.rows(None) == []


# ---- dry-run -------------------------------------------------------------------------


def _no_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("dry-run opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _eml_files(folder: Path) -> list[Path]:
    """The messages a dry-run wrote (n-address.eml), in sending order."""
    return sorted((p for p in folder.glob("*.eml") if p.name.split("-", 1)[0].isdigit()),
                  key=lambda p: int(p.name.split("-", 1)[0]))


def test_dry_run_opens_no_connection_changes_nothing_and_writes_every_message(sending, monkeypatch):
    db = sending.home / "mailer.db"
    before = db.read_bytes()
    _no_network(monkeypatch)

    result = sending.m("send", sending.content, "--dry-run")

    monkeypatch.undo()
    assert result.exit_code == 0, result.stderr
    assert db.read_bytes() == before
    assert not (sending.home / "mailer.db-wal").exists() or (sending.home / "mailer.db-wal").stat().st_size == 0
    assert sending.server.connections == 0
    folder = sending.home / "outbox" / "december-specials"
    assert str(folder) in result.stderr and f"would send: {EVERYONE}" in result.stdout
    files = _eml_files(folder)
    audience = sending.audience()
    assert [p.name for p in files] == [f"{n}-{wire(a)}.eml" for n, a in enumerate(audience, start=1)]
    for path, address in zip(files, audience):
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert not [d for part in msg.walk() for d in part.defects], path
        assert wire(header_address(msg)) == wire(address)
        assert msg["List-Unsubscribe"] and msg["Message-ID"]

    # A second dry-run replaces the messages the first one wrote, and touches nothing else.
    (folder / "stray.eml").write_text("the practitioner's own file")
    (folder / "999-someone@example.com.eml").write_text("written by an older dry-run")
    (files[0]).unlink()
    again = sending.m("send", sending.content, "--dry-run")
    assert again.exit_code == 0
    assert [p.name for p in _eml_files(folder)] == [p.name for p in files]
    assert (folder / "stray.eml").read_text() == "the practitioner's own file"
    assert db.read_bytes() == before

    # A real send afterwards sends everything.
    real = sending.send(sending.content)
    assert real.exit_code == 0, real.stderr
    sending.assert_sent_once()


def test_dry_run_of_a_started_campaign_writes_what_is_left(sending, monkeypatch):
    assert sending.send(sending.content, "--limit", "5").exit_code == 0
    before = db_dump(sending.home)
    _no_network(monkeypatch)

    result = sending.m("send", "1", "--dry-run", "--json")

    monkeypatch.undo()
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["dry_run"] is True and doc["would_send"] == EVERYONE - 5
    folder = Path(doc["outbox"])
    assert folder == sending.home / "outbox" / "1-december-specials"
    assert [p.name.split("-", 1)[1] for p in _eml_files(folder)] == [a + ".eml" for a in sending.emails()[5:]]
    assert db_dump(sending.home) == before
    assert len(sending.server.received) == 5


# ---- continuing and cancelling -------------------------------------------------------


def test_send_file_continues_its_unfinished_campaign_and_warns_when_it_changed(sending):
    assert sending.send(sending.content, "--limit", "5").exit_code == 0
    text = sending.content.read_text(encoding="utf-8")
    changed = text.replace("December specials: ease your pain", "Changed subject: ease your pain")
    assert changed != text
    sending.content.write_text(changed, encoding="utf-8")

    result = sending.send(sending.content)

    assert result.exit_code == 0, result.stderr
    assert "has changed since campaign 1 started" in result.stderr
    sending.assert_sent_once()  # also checks every message kept the subject it started with
    assert [c["id"] for c in sending.m.json("campaign", "list")] == [1]


def test_cancelled_campaign_sends_nothing_more(sending):
    assert sending.send(sending.content, "--limit", "5").exit_code == 0
    cancel = sending.m("campaign", "cancel", "1")
    assert cancel.exit_code == 0, cancel.stderr

    by_id = sending.send("1")
    by_file = sending.send(sending.content)

    assert by_id.exit_code == 2 and "cancelled" in by_id.stderr
    assert by_file.exit_code == 2 and "cancelled" in by_file.stderr
    assert len(sending.server.received) == 5
    report = sending.report()
    assert (report["status"], report["sent"], report["pending"]) == ("cancelled", 5, EVERYONE - 5)


def test_campaign_cancelled_while_sending_stops_at_the_next_batch(sending):
    def cancel_during_the_pause(seconds: float) -> None:
        with closing(Store.open(sending.home / "mailer.db")) as store:  # what `campaign cancel` does elsewhere
            store.campaigns.cancel(1, "2026-11-25T15:00:30Z")

    clock = FakeClock(sending.clock.now(), on_sleep=cancel_during_the_pause)
    result = Mailer(sending.home, clock)("send", sending.content, "--yes", "--batch-size", "10", "--pause", "30")

    assert result.exit_code == 0, result.stderr
    assert clock.slept == [30]
    sending.assert_sent_once(count=10)
    report = sending.report()
    assert (report["status"], report["sent"], report["pending"]) == ("cancelled", 10, EVERYONE - 10)


@pytest.mark.parametrize(
    "section,values,says",
    [
        ("smtp", {"username": USER}, "MAILER_SMTP_PASSWORD"),  # the password is not in the environment
        ("smtp", {"host": ""}, "[smtp] host"),
        ("sender", {"from_email": ""}, "from_email"),
        ("smtp", {"timeout": 0}, "timeout must be more than 0"),
    ],
    ids=["no-password", "no-host", "no-sender", "no-timeout"],
)
def test_incomplete_settings_exit_2_and_change_nothing(sending, section, values, says):
    set_config(sending.home, section, **values)

    result = sending.send(sending.content)

    assert result.exit_code == 2
    assert says in result.stderr and "Traceback" not in result.stderr
    assert sending.server.connections == 0
    assert sending.rows(None) == []  # the audience is not fixed: a later run still takes who is on the list then
    with closing(sqlite3.connect(sending.home / "mailer.db")) as db:
        assert db.execute("SELECT status FROM campaigns").fetchall() in ([], [("draft",)])


# ---- several connections at once ------------------------------------------------------


def test_several_connections_send_each_recipient_once(sending):
    result = sending.send(sending.content, "--connections", "3", "--batch-size", "100")
    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    assert len({rec.connection for rec in sending.server.received}) == 3
    assert sending.report()["status"] == "done"


def test_several_connections_share_the_limit_and_the_daily_cap(sending):
    assert sending.send(sending.content, "--connections", "4", "--limit", "10").exit_code == 0
    assert len(sending.server.received) == 10
    assert sending.send("1", "--connections", "4", "--per-day", "15").exit_code == 0
    assert len(sending.server.received) == 15  # 10 already today, 5 more
    sending.clock.advance(DAY)
    assert sending.send("1", "--connections", "4").exit_code == 0
    sending.assert_sent_once()


def test_several_connections_stop_together_on_a_policy_refusal(sending):
    audience = sending.audience()
    sending.server.respond(wire(audience[5]), "554 5.7.1 Rejected as spam")
    result = sending.send(sending.content, "--connections", "3", "--batch-size", "100")
    assert result.exit_code == 1
    report = sending.report()
    assert report["status"] == "paused" and report["bounced"] == 0
    assert report["sent"] + report["pending"] == EVERYONE
    assert report["sent"] < EVERYONE
    assert not [r for r in sending.rows() if r["status"] == "sending"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_a_password_with_accents_logs_in_as_utf8_and_is_never_echoed(sending, mechanism):
    password = "Crème-brûlée-ñ-密码-42"
    sending.server.configure(tls="starttls", auth=(USER, password))
    sending.server.auth_mechanisms = [mechanism]
    point_at(sending.home, sending.server)
    env = {**sending.server.tls_env(), "MAILER_SMTP_PASSWORD": "Crème-wrong"}
    wrong = sending.send(sending.content, env=env)  # refused: one sentence, exit 3, never echoed
    assert wrong.exit_code == 3 and "refused the login" in wrong.stderr
    assert "Crème" not in wrong.stdout + wrong.stderr and "Traceback" not in wrong.stderr
    result = sending.send(sending.content, env={**env, "MAILER_SMTP_PASSWORD": password})
    assert result.exit_code == 0, result.stderr
    assert sending.server.auth_attempts[-1] == (USER, password)
    assert len(sending.server.received) == EVERYONE


def test_a_template_that_hides_the_footer_from_some_people_fails_them_not_the_law(sending):
    """`check` renders sample people only; every real message is checked for its footer too."""
    base = sending.m("templates", "copy", "base")
    assert base.exit_code == 0, base.stderr
    path = sending.home / "templates" / "base.txt.j2"
    text = path.read_text()
    path.write_text('{% if "example.net" not in email %}' + text + "{% else %}Hello.\n{% endif %}\n")
    result = sending.send(sending.content)
    assert result.exit_code == 1
    got = {r.rcpt_tos[0] for r in sending.server.received}
    hidden = [a for a in sending.audience() if a.endswith("example.net")]
    assert hidden and not {wire(a) for a in hidden} & got  # nobody got a message without the footer
    row = sending.row(hidden[0])
    assert row["status"] == "failed" and "lacks the unsubscribe link in its text part" in row["reply"]
