"""A `mailer send` process killed mid-campaign (SIGKILL), then run again to the end.

Nobody may get two copies, and nobody may be forgotten, apart from the message that was
being handed over at the moment of the kill: its row is reported `unknown` (at most one),
by the run that finds it and by `mailer report`. With pipelining across messages and
without; killed while the server holds a message, or at a moment left to chance.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.conftest import REPO
from tests.test_send import EVERYONE, PATIENTS, SPECIALS, Sending, point_at, wire


def _mailer(home, *args: str) -> list[str]:
    return [sys.executable, "-m", "mailer", "--home", str(home), *args]


@pytest.mark.parametrize(
    "kill_after, pipelining, delay, sig",
    [(10, False, 0.05, signal.SIGKILL), (30, True, 0.05, signal.SIGKILL), (20, False, 0.0, signal.SIGKILL),
     (20, True, 0.0, signal.SIGKILL), (15, True, 0.0, signal.SIGTERM)],
    ids=["10-stepwise-slow-server", "30-pipelined-slow-server", "20-stepwise-any-moment", "20-pipelined-any-moment",
         "15-pipelined-sigterm"],
)
def test_killed_send_run_again_sends_everyone_at_most_once(mailer, smtp_server, tmp_path, kill_after, pipelining,
                                                           delay, sig):
    assert mailer.json("import", PATIENTS)["added"] == EVERYONE
    point_at(mailer.home, smtp_server)
    content = tmp_path / "december-specials.md"
    shutil.copy(SPECIALS, content)
    sending = Sending(mailer, smtp_server, content)
    command = _mailer(mailer.home, "send", str(content), "--yes", "--batch-size", "100")
    smtp_server.pipelining = pipelining
    smtp_server.delay = delay  # per message: the kill lands while the server holds one

    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        smtp_server.wait_for_messages(kill_after, timeout=30)
        if not delay:
            time.sleep(random.uniform(0, 0.005))  # anywhere in the next message or two
        first.send_signal(sig)
    finally:
        if first.poll() is None and sig == signal.SIGKILL:
            first.kill()
        first.communicate(timeout=30)
    assert first.returncode != 0
    got_before = len(smtp_server.received)
    assert kill_after <= got_before < EVERYONE

    smtp_server.delay = 0
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)

    rows = {wire(r["email"]): r for r in sending.rows()}
    unknown = [a for a, r in rows.items() if r["status"] == "unknown"]
    assert len(unknown) <= 1
    assert second.returncode == (1 if unknown else 0), second.stderr
    if unknown:
        assert "unknown" in second.stderr and "--retry-unknown" in second.stderr

    recipients = smtp_server.recipients()
    twice = [a for a, n in Counter(recipients).items() if n > 1]
    assert not twice, f"two copies to {twice}"
    assert set(recipients) | set(unknown) == set(rows)  # nobody forgotten
    assert {a for a, r in rows.items() if r["status"] == "sent"} == set(recipients) - set(unknown)
    assert len(recipients) > got_before  # the second run went on from where the first stopped
    for message in smtp_server.received:
        [rcpt] = message.rcpt_tos
        assert message.message["Message-ID"] == rows[rcpt]["message_id"]
        assert message.message["List-Unsubscribe"]

    report = mailer.json("report", "1")
    assert report["status"] == "done"
    assert (report["sent"], report["unknown"], report["pending"]) == (EVERYONE - len(unknown), len(unknown), 0)
    listed = [wire(f["email"]) for f in report["failures"] if f["status"] == "unknown"]
    assert listed == unknown
