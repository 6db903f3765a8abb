"""`mailer send` and the relay's replies (RFC 3463 decides, not the first digit), DSN, and the
list as it stands after a pause: against the aiosmtpd test server, with pipelining on and off.

The workspace is test_send.py's: the sample list of 46 people, a specials letter, a FakeClock.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pytest

from mailer.clock import FakeClock
from mailer.store import Store
from mailer.transport import Reply
from tests import test_send
from tests.conftest import Mailer
from tests.test_send import EVERYONE, PIPELINING, Sending, set_config, wire

# test_send.py's fixtures: the sample workspace (made once) and a copy of it per test.
sample_workspace = test_send.sample_workspace
sending = test_send.sending

DAY = 24 * 3600


def refused(sending: Sending, address: str) -> list:
    return [m for m in sending.server.received if m.rcpt_tos == [wire(address)]]


# ---- what a reply means ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, meaning",
    [
        (Reply(250, "2.0.0 OK"), "sent"),
        (Reply(451, "4.7.1 Greylisted, try again later", "rcpt"), "temporary"),
        (Reply(451, "4.3.0 Temporary local problem"), "temporary"),
        (Reply(550, "4.2.2 Mailbox full, try later", "rcpt"), "temporary"),  # the enhanced code decides ...
        (Reply(452, "5.2.2 Mailbox full", "rcpt"), "failed"),  # ... both ways
        (Reply(452, "4.5.3 Too many recipients", "rcpt"), "temporary"),
        (Reply(421, "4.7.0 Try again later, closing connection.", "mail"), "rate"),
        (Reply(450, "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
                    "additional messages from being delivered.", "rcpt"), "rate"),
        (Reply(451, "4.7.28 Our system has detected an unusual rate of unsolicited mail", "data"), "rate"),
        (Reply(454, "Throttling failure: Maximum sending rate exceeded.", "data"), "rate"),
        (Reply(421, "Service not available, closing transmission channel", "mail"), "temporary"),
        (Reply(550, "5.4.5 Daily user sending quota exceeded.", "data"), "quota"),
        (Reply(454, "Throttling failure: Daily message quota exceeded.", "data"), "quota"),
        (Reply(554, "Message rejected: Sending quota exceeded.", "data"), "quota"),
        (Reply(452, "4.5.3 Submission quota exceeded (SubmissionQuotaExceededException)", "rcpt"), "quota"),
        (Reply(550, "5.2.2 Sending quota exceeded: submission quota", "data"), "quota"),
        (Reply(552, "5.2.2 The email account that you tried to reach is over quota.", "rcpt"), "failed"),
        (Reply(550, "5.1.1 No such user", "rcpt"), "bounced"),
        (Reply(550, "5.2.1 Mailbox disabled", "rcpt"), "bounced"),
        (Reply(550, "No such user here", "rcpt"), "bounced"),
        (Reply(554, "5.7.1 Rejected as spam"), "policy"),
        (Reply(550, "5.7.26 Unauthenticated email from gmail.com is not accepted", "data"), "policy"),
        (Reply(550, "Message rejected: listed on a blocklist"), "policy"),
        (Reply(553, "Sender address rejected", "mail"), "policy"),
        (Reply(550, "5.1.8 Bad sender's system address", "mail"), "policy"),
        (Reply(535, "5.7.8 Authentication credentials invalid", "mail"), "auth"),
        (Reply(552, "5.3.4 Message too big"), "message"),
        (Reply(552, "Message size exceeds fixed maximum message size", "data"), "message"),
        (Reply(552, "Mailbox full", "data"), "failed"),
        (Reply(503, "5.5.1 Bad sequence of commands", "data"), "message"),
        (Reply(554, "5.6.0 Content rejected", "data"), "message"),
        (Reply(553, "5.6.7 Non-ASCII address not permitted without SMTPUTF8", "rcpt"), "failed"),
        (Reply(501, "5.5.4 Invalid domain name", "rcpt"), "failed"),
    ],
)
def test_what_a_reply_means(reply, meaning):
    from mailer.replies import classify

    assert classify(reply) == meaning


@pytest.mark.parametrize(
    "reply, full",
    [
        (Reply(452, "5.2.2 Mailbox full"), True),
        (Reply(550, "4.2.2 Mailbox full"), True),
        (Reply(552, "Requested mail action aborted: mailbox full"), True),
        (Reply(550, "5.2.2 Sending quota exceeded: submission quota"), False),
        (Reply(550, "5.1.1 No such user"), False),
    ],
)
def test_what_is_a_full_mailbox(reply, full):
    from mailer.replies import mailbox_full

    assert mailbox_full(reply) is full


# ---- the enhanced code decides ------------------------------------------------------------------


@PIPELINING
def test_550_4_2_2_is_tried_again_and_452_5_2_2_is_not(sending, pipelining):
    sending.server.pipelining = pipelining
    later, never = sending.audience()[3], sending.audience()[5]
    sending.server.respond(wire(later), "550 4.2.2 Mailbox full, try again later")
    sending.server.respond(wire(never), "452 5.2.2 Mailbox full")

    result = sending.send(sending.content)

    assert result.exit_code == 1
    assert sending.row(later)["status"] == "sent" and sending.row(later)["attempts"] == 2
    assert sending.row(never)["status"] == "failed" and sending.row(never)["attempts"] == 1
    assert len(sending.clock.slept) == 1  # one backoff, for the temporary one
    assert sending.subscriber(never)["status"] == "active"  # a full mailbox is soft: not a bounce


# ---- a full mailbox, campaign after campaign ------------------------------------------------------


def test_a_mailbox_full_in_three_campaigns_in_a_row_suppresses_the_address(sending):
    target = sending.audience()[2]
    for campaign in (1, 2, 3, 4):
        if campaign > 1:
            assert sending.m("campaign", "create", sending.content, "--allow-repeat").stdout.strip() == str(campaign)
        if campaign == 2:
            pass  # reached this time: the count starts again
        else:
            sending.server.respond(wire(target), "552 5.2.2 Mailbox full")
        result = sending.send(sending.content if campaign == 1 else str(campaign))
        assert result.exit_code in (0, 1), result.stderr
    # 1: full, 2: reached, 3: full, 4: full -> two in a row, still on the list
    assert sending.subscriber(target)["status"] == "active"

    assert sending.m("campaign", "create", sending.content, "--allow-repeat").stdout.strip() == "5"
    sending.server.respond(wire(target), "552 5.2.2 Mailbox full")
    assert sending.send("5").exit_code == 1
    assert sending.subscriber(target)["status"] == "bounced"  # third in a row
    assert "mailbox full in 3 campaigns in a row" in sending.subscriber(target)["unsubscribed_reason"]

    assert sending.m("campaign", "create", sending.content, "--allow-repeat").stdout.strip() == "6"
    assert sending.send("6").exit_code == 0
    assert sending.report(6)["total"] == EVERYONE - 1


# ---- a temporary refusal across runs ------------------------------------------------------------


def test_a_temporary_refusal_is_tried_by_later_runs_then_given_up_with_its_last_reply(sending):
    set_config(sending.home, "sending", give_up_after=1)  # a day
    target = sending.audience()[6]
    sending.server.respond_data(wire(target), *["451 4.3.0 Temporary local problem"] * 4)
    assert sending.send(sending.content).exit_code == 1
    first = sending.row(target)
    assert first["status"] == "pending" and first["next_attempt_at"] >= "2026-11-25T15:30:00Z"
    assert sending.report()["status"] == "sending"
    assert sending.report()["next_attempt_at"] == first["next_attempt_at"]
    assert "tried again by a run after" in sending.m("report", "1").stderr
    # cron, right away: nothing of it is due yet, so run-due does not even take it up
    assert json.loads(sending.m("run-due", "--json").stdout)["campaigns"] == []

    nexts = [first["next_attempt_at"]]
    for n in range(12):
        sending.clock.advance(45 * 60 * 2**n)  # cron comes now and then
        sending.server.respond_data(wire(target), *["451 4.3.0 Temporary local problem"] * 3,
                                    f"451 4.3.0 Still busy ({n})")
        sending.send("1")
        row = sending.row(target)
        if row["status"] != "pending":
            break
        nexts.append(row["next_attempt_at"])
    assert row["status"] == "failed"
    assert "given up after 1 days" in row["reply"] and "451 4.3.0" in row["reply"]
    assert nexts == sorted(nexts) and len(set(nexts)) == len(nexts)
    assert wire(target) not in sending.server.recipients()
    report = sending.report()
    assert (report["status"], report["failed"], report["sent"]) == ("done", 1, EVERYONE - 1)


# ---- replies about us, not the recipient -----------------------------------------------------------


@PIPELINING
def test_a_rate_reply_holds_the_whole_run_then_it_goes_on(sending, pipelining):
    sending.server.pipelining = pipelining
    target = sending.audience()[9]
    sending.server.respond(wire(target), "421 4.7.0 Try again later, closing connection.")

    result = sending.send(sending.content)

    assert result.exit_code == 0, result.stderr
    assert "limiting how fast we send" in result.stderr
    assert 60 in sending.clock.slept
    sending.assert_sent_once()


@pytest.mark.parametrize("connections", [1, 3])
def test_a_rate_reply_that_keeps_coming_pauses_the_campaign_and_leaves_everyone_else_pending(sending, connections):
    sending.server.pipelining = True
    target = sending.audience()[9]
    for address in sending.audience()[9:]:  # from the tenth message on, the relay refuses us
        sending.server.respond(wire(address), *["451 4.7.28 Unusual rate of unsolicited mail, try later"] * 5)

    result = sending.send(sending.content, "--connections", str(connections), "--batch-size", "100")

    assert result.exit_code == 1
    assert "paused" in result.stderr and "4.7.28" in result.stderr
    report = sending.report()
    assert report["status"] == "paused" and "4.7.28" in report["status_reason"]
    assert report["sent"] + report["pending"] == EVERYONE and report["failed"] == report["bounced"] == 0
    assert sending.row(target)["status"] == "pending"
    assert not [r for r in sending.rows() if r["status"] in ("sending", "unknown")]
    if connections == 1:  # (several connections each wait on the one fake clock)
        assert sending.clock.slept == [60, 120, 240]
    sent_before = report["sent"]
    sending.server.reset()  # the relay lets us go on now
    resumed = sending.send("1")
    assert resumed.exit_code == 0, resumed.stderr
    assert len(sending.server.received) == EVERYONE - sent_before
    assert sending.report()["status"] == "done"


@PIPELINING
def test_a_quota_reply_stops_the_run_for_the_day_and_suggests_per_day(sending, pipelining):
    sending.server.pipelining = pipelining
    target = sending.audience()[12]
    sending.server.respond_data(wire(target), "550 5.4.5 Daily user sending quota exceeded.")

    result = sending.send(sending.content)

    assert result.exit_code == 1
    assert "quota" in result.stderr and "per_day = 12" in result.stderr
    assert "Stopped: Stopped" not in result.stderr and ".;" not in result.stderr
    assert result.stderr.count("sending quota is used up") == 1
    report = sending.report()
    assert (report["status"], report["sent"], report["pending"], report["failed"]) == ("sending", 12, EVERYONE - 12, 0)

    later_today = sending.m("run-due")
    assert later_today.exit_code in (0, 1)
    assert sending.report()["sent"] == 12  # not tried again today

    sending.clock.advance(DAY)
    tomorrow = sending.m("run-due")
    assert tomorrow.exit_code == 0, tomorrow.stderr
    sending.assert_sent_once()
    assert sending.report()["status"] == "done"


# ---- DSN ---------------------------------------------------------------------------------------


@PIPELINING
def test_dsn_asks_for_failure_and_delay_notices_that_name_the_delivery(sending, pipelining):
    sending.server.pipelining = pipelining
    sending.server.dsn = True

    result = sending.send(sending.content)

    assert result.exit_code == 0, result.stderr
    sending.assert_sent_once()
    with closing(sqlite3.connect(sending.home / "mailer.db")) as db:
        [(key,)] = db.execute("SELECT key FROM campaigns WHERE id = 1").fetchall()
    rows = {wire(r["email"]): r for r in sending.rows()}
    for message in sending.server.received:
        [rcpt] = message.rcpt_tos
        assert message.mail_params["RET"] == "HDRS"
        assert message.mail_params["ENVID"] == f"{key}-{rows[rcpt]['id']}"
        [params] = message.rcpt_params
        assert params["NOTIFY"] == "FAILURE,DELAY"
        expected = "rfc822;" + rcpt.replace("+", "+2B") if rcpt.isascii() else params["ORCPT"]
        assert params["ORCPT"] == expected
    renee = [m for m in sending.server.received if not m.rcpt_tos[0].isascii()]
    assert renee and renee[0].rcpt_params[0]["ORCPT"].startswith("utf-8;")


def test_without_dsn_no_dsn_parameters(sending):
    assert sending.send(sending.content).exit_code == 0
    dsn = {"RET", "ENVID", "NOTIFY", "ORCPT"}
    assert not [m for m in sending.server.received if dsn & {*m.mail_params, *m.rcpt_params[0]}]


# ---- the list as it stands after a pause -----------------------------------------------------------


def test_an_unsubscribe_during_the_pause_is_honoured_by_the_very_next_message(sending):
    audience = sending.audience()
    first_of_batch_two = audience[10]

    def unsubscribe_during_the_pause(seconds: float) -> None:
        with closing(Store.open(sending.home / "mailer.db")) as store:  # what `subscribers unsubscribe` does elsewhere
            store.subscribers.unsubscribe(first_of_batch_two, "asked by phone", "2026-11-25T15:00:20Z")

    clock = FakeClock(sending.clock.now(), on_sleep=unsubscribe_during_the_pause)
    result = Mailer(sending.home, clock)("send", sending.content, "--yes", "--batch-size", "10", "--pause", "30",
                                         "--limit", "15")

    assert result.exit_code == 0, result.stderr
    assert clock.slept == [30]
    assert wire(first_of_batch_two) not in sending.server.recipients()
    assert sending.row(first_of_batch_two)["status"] == "skipped"
    assert len(sending.server.received) == 15


# ---- connections ----------------------------------------------------------------------------------


@PIPELINING
def test_a_relay_that_refuses_more_connections_is_answered_with_fewer_and_says_so(sending, pipelining):
    sending.server.pipelining = pipelining
    sending.server.max_connections = 2

    result = sending.send(sending.content, "--connections", "4", "--batch-size", "100")

    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("refused connection") >= 1 and "going on with" in result.stderr
    sending.assert_sent_once()
    assert sending.report()["status"] == "done"


# ---- the envelope sender -----------------------------------------------------------------------------


def test_an_idn_envelope_sender_goes_out_as_its_a_label(sending):
    """Issue: a non-ASCII envelope_from crashed every run after marking a message 'sending'."""
    set_config(sending.home, "smtp", envelope_from="bounce@bücher.example")

    result = sending.send(sending.content)

    assert result.exit_code == 0, result.stderr
    assert {m.mail_from for m in sending.server.received} == {"bounce@xn--bcher-kva.example"}
    assert sending.report()["sent"] == EVERYONE


def test_a_sender_the_server_cannot_carry_leaves_everyone_pending_not_unknown(sending):
    sending.server.smtputf8 = False
    set_config(sending.home, "smtp", envelope_from="bücher@example.com")

    result = sending.send(sending.content)

    # refused as mailer.toml is read, naming the key: nothing is stored, nothing is unknown
    assert result.exit_code == 2
    assert "[smtp] envelope_from" in result.stderr and "SMTPUTF8" in result.stderr and "Traceback" not in result.stderr
    assert sending.server.received == []
    assert sending.rows(None) == []
    assert sending.send(sending.content).exit_code == 2  # and again: still nothing
