"""A practitioner's month of sending: Ctrl-C and SIGTERM pause, a retry names the
file, every run's end is logged truthfully, and a test send goes to yourself only.

Against the real SMTP server of `smtp_server`, through the CLI, with a FakeClock: a
"Ctrl-C" is a KeyboardInterrupt raised when the engine pauses between two batches, as the
person's key press would arrive while it waits.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from contextlib import closing
from email import policy
from email.parser import BytesParser

import pytest

from mailer.clock import FakeClock
from mailer.lock import WorkspaceLock
from tests.conftest import Mailer
from tests.test_send import EVERYONE, SENDER, Sending, sample_workspace, sending  # noqa: F401 (fixtures)


def interrupting(sending: Sending, action) -> Mailer:
    """A CLI whose clock runs `action` the first time the engine sleeps (the pause after a batch)."""
    fired = []

    def on_sleep(seconds: float) -> None:
        if not fired:
            fired.append(seconds)
            action()

    return Mailer(sending.home, FakeClock(sending.clock.now(), on_sleep=on_sleep))


def ctrl_c() -> None:
    raise KeyboardInterrupt


def last_run(sending: Sending) -> dict:
    lines = (sending.home / "logs" / "mailer.log").read_text().splitlines()
    return [json.loads(line) for line in lines if json.loads(line)["event"] == "end"][-1]


# ---- 1. Ctrl-C stops the campaign ------------------------------------------------------


def test_ctrl_c_pauses_the_campaign_and_run_due_leaves_it_paused(sending):
    m = interrupting(sending, ctrl_c)

    result = m("send", sending.content, "--yes", "--batch-size", "3", "--pause", "5")

    assert result.exit_code == 130
    assert "Interrupted by Ctrl-C: campaign 1 is paused after 3 of 46 messages." in result.stderr
    assert "`mailer send 1` goes on" in result.stderr and "`mailer campaign cancel 1` stops it for good" in result.stderr
    assert len(sending.server.received) == 3
    report = sending.report()
    assert (report["status"], report["sent"], report["pending"]) == ("paused", 3, EVERYONE - 3)
    assert report["status_reason"] == "interrupted by Ctrl-C at 2026-11-25 10:00 EST: 3 of 46 sent"
    status = sending.m("status")
    assert "paused" in status.stdout and "interrupted by Ctrl-C at 2026-11-25 10:00 EST" in status.stdout
    assert "interrupted (Ctrl-C)" in status.stdout  # item 4: the last run, truthfully
    assert "`mailer send 1` goes on" in status.stderr

    later = sending.m("run-due")
    assert (later.exit_code, later.stdout, later.stderr) == (0, "", "")
    assert len(sending.server.received) == 3  # run-due never resumes a paused campaign

    listed = sending.m("campaign", "list").stdout.splitlines()
    assert "paused" in listed[1] and "interrupted by Ctrl-C at 2026-11-25 10:00 EST: 3 of 46 sent" in listed[1]
    shown = sending.m("campaign", "show", "1")
    assert "status: paused" in shown.stdout and "why: interrupted by Ctrl-C" in shown.stdout
    assert "`mailer send 1` goes on" in shown.stderr

    go_on = sending.send("1")
    assert go_on.exit_code == 0, go_on.stderr
    sending.assert_sent_once()
    assert sending.report()["status"] == "done"


def test_a_paused_campaign_can_be_stopped_for_good(sending):
    assert interrupting(sending, ctrl_c)("send", sending.content, "--yes", "--batch-size", "3", "--pause", "5").exit_code == 130

    assert sending.m("campaign", "cancel", "1").exit_code == 0
    assert sending.send("1").exit_code == 2
    assert sending.m("run-due").exit_code == 0
    assert len(sending.server.received) == 3
    assert sending.report()["status"] == "cancelled"


def test_sigterm_pauses_the_campaign_like_ctrl_c_and_exits_143(sending):
    # Without mailer's own handler the signal would only be noted here (and the test fail),
    # never end the test run.
    noticed = []

    def note(*args):
        noticed.append(args)

    previous = signal.signal(signal.SIGTERM, note)
    try:
        m = interrupting(sending, lambda: os.kill(os.getpid(), signal.SIGTERM))
        result = m("send", sending.content, "--yes", "--batch-size", "3", "--pause", "5")
        after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert noticed == []
    assert after is note  # mailer's handler was there only while sending
    assert result.exit_code == 143
    assert "Interrupted by SIGTERM: campaign 1 is paused after 3 of 46 messages." in result.stderr
    assert sending.report()["status_reason"].startswith("interrupted by SIGTERM at ")
    assert last_run(sending)["exit"] == 143
    assert "stopped (SIGTERM)" in sending.m("status").stdout


def test_sigterm_during_run_due_pauses_and_the_next_run_due_leaves_it(sending):
    sending.m("campaign", "create", sending.content, "--at", "2026-11-25 10:30")
    sending.clock.advance(3600)
    noticed = []
    previous = signal.signal(signal.SIGTERM, lambda *a: noticed.append(a))
    try:
        m = interrupting(sending, lambda: os.kill(os.getpid(), signal.SIGTERM))
        result = m("run-due", "--batch-size", "5", "--pause", "5")
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert (result.exit_code, noticed) == (143, [])

    assert sending.report()["status"] == "paused" and len(sending.server.received) == 5
    assert sending.m("run-due").exit_code == 0
    assert len(sending.server.received) == 5


# ---- 3. a retry option acts on the campaign made from the file ------------------------


@pytest.mark.parametrize("option", ["--retry-failed", "--retry-unknown"])
def test_a_retry_option_with_the_file_retries_its_finished_campaign(sending, option):
    target = "maria.russo@example.org"
    if option == "--retry-failed":
        sending.server.respond_data(target, "550 5.2.0 Message rejected for this mailbox")
        assert sending.send(sending.content).exit_code == 1
    else:  # what a run killed while handing this message over leaves: its fate is unknown
        assert sending.send(sending.content).exit_code == 0
        with closing(sqlite3.connect(sending.home / "mailer.db")) as db, db:
            db.execute("UPDATE deliveries SET status = 'unknown' WHERE email = ?", (target,))
    assert sending.report()["status"] == "done"
    before = len(sending.server.received)

    retried = sending.send(sending.content, option)

    assert retried.exit_code == 0, retried.stderr
    assert "already sent" not in retried.stderr
    assert sending.row(target)["status"] == "sent"
    assert [r.rcpt_tos for r in sending.server.received[before:]] == [[target]]  # only that one
    assert [c["id"] for c in sending.m.json("campaign", "list")] == [1]  # no new campaign


def test_without_a_retry_option_the_hint_names_both_retries(sending):
    assert sending.send(sending.content).exit_code == 0
    again = sending.send(sending.content)
    assert again.exit_code == 2
    assert "--retry-failed" in again.stderr and "--retry-unknown" in again.stderr


def test_a_retry_of_a_file_never_sent_is_refused(sending):
    result = sending.send(sending.content, "--retry-failed")
    assert result.exit_code == 2 and "has not been sent yet" in result.stderr
    assert sending.server.received == []


# ---- 4. every run's end is logged ---------------------------------------------------------


def test_a_lock_out_is_logged_and_status_says_so(sending):
    with WorkspaceLock(sending.home / "mailer.lock", "another send", "2026-11-25T15:00:00Z"):
        assert sending.m("run-due").exit_code == 4
        assert last_run(sending)["exit"] == 4
        assert "locked out" in sending.m("status").stdout
        assert sending.send(sending.content).exit_code == 4
    assert "last run: send" in sending.m("status").stdout and "locked out" in sending.m("status").stdout


def test_a_crash_is_logged_as_exit_70(sending, monkeypatch):
    import mailer.cli.send as cli_send

    def crash(*args, **kwargs):
        raise RuntimeError("maria.russo@example.org broke it")

    monkeypatch.setattr(cli_send, "run_campaign", crash)
    result = sending.send(sending.content)

    assert result.exit_code == 70
    end = last_run(sending)
    assert end["exit"] == 70 and end["error"] == "crashed (RuntimeError)"
    assert "maria.russo" not in (sending.home / "logs" / "mailer.log").read_text()  # no address in the log
    assert "crashed (exit 70)" in sending.m("status").stdout


# ---- 10. a test send to yourself ------------------------------------------------------------


def test_a_test_send_goes_to_you_only_and_records_no_delivery(sending):
    result = sending.m("send", sending.content, "--test-to", "me@closter-acupuncture.example")

    assert result.exit_code == 0, result.stderr
    assert "Sent one test message to me@closter-acupuncture.example (a sample subscriber)" in result.stderr
    [got] = sending.server.received
    assert got.rcpt_tos == ["me@closter-acupuncture.example"] and got.mail_from == SENDER
    msg = BytesParser(policy=policy.default).parsebytes(got.data)
    assert msg["Subject"] == "[TEST] December specials: ease your pain before the holidays"
    assert msg["To"].addresses[0].addr_spec == "me@closter-acupuncture.example"
    assert "Hi Jane" in msg.get_body(("plain",)).get_content()
    assert sending.m.json("campaign", "list") == []  # no campaign stored
    assert sending.rows(None) == []  # and no delivery
    log = (sending.home / "logs" / "mailer.log").read_text()
    assert '"event": "test"' in log and "250" in log

    # A stored campaign can be tested too, and stays as it was.
    assert sending.m("campaign", "create", sending.content).exit_code == 0
    assert sending.m("send", "1", "--test-to", "me@closter-acupuncture.example").exit_code == 0
    assert len(sending.server.received) == 2
    assert sending.report()["status"] == "draft" and sending.rows(None) == []


def test_a_test_send_as_a_subscriber_uses_their_name_and_an_unsubscribe_link_for_nobody(sending):
    result = sending.m("send", sending.content, "--test-to", "me@closter-acupuncture.example",
                       "--as", "maria.russo@example.org", "--json")

    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["written_for"] == "maria.russo@example.org" and doc["to"] == "me@closter-acupuncture.example"
    [got] = sending.server.received
    assert got.rcpt_tos == ["me@closter-acupuncture.example"]
    text = BytesParser(policy=policy.default).parsebytes(got.data).get_body(("plain",)).get_content()
    assert "Maria" in text and "maria.russo@example.org" not in got.data.decode("utf-8", "replace")
    token = text.split("unsubscribe%20", 1)[1].split()[0].rstrip(">)")
    clicked = sending.m("unsubscribe", token)
    assert clicked.exit_code == 0 and "names nobody" in clicked.stderr
    assert sending.subscriber("maria.russo@example.org")["status"] == "active"
    assert "maria.russo" not in (sending.home / "logs" / "mailer.log").read_text()


def test_a_test_send_of_a_letter_with_errors_sends_nothing(sending, tmp_path):
    broken = tmp_path / "broken.md"
    broken.write_text("---\nsubject: Hello\ntemplate: specials\n---\nHi,\n")  # specials without offers
    result = sending.m("send", broken, "--test-to", "me@closter-acupuncture.example")
    assert result.exit_code == 2 and "offer" in result.stderr
    assert sending.server.received == []


def test_a_refused_test_message_exits_3(sending):
    sending.server.respond("me@closter-acupuncture.example", "550 5.7.1 Relaying denied")
    result = sending.m("send", sending.content, "--test-to", "me@closter-acupuncture.example")
    assert result.exit_code == 3 and "refused the test message: 550 5.7.1 Relaying denied" in result.stderr


def test_test_to_and_dry_run_do_not_mix(sending):
    result = sending.m("send", sending.content, "--test-to", "me@example.com", "--dry-run")
    assert result.exit_code == 2 and "--test-to sends one real message" in result.stderr
    assert sending.m("send", sending.content, "--as", "maria.russo@example.org").exit_code == 2
