"""Unattended operation: scheduling, `run-due` for cron, logs, `cron`, `status`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.clock import FakeClock
from mailer.errors import InputError
from mailer.schedule import local_time_text, parse_local_time
from tests.conftest import REPO

SPECIALS = REPO / "examples" / "december-specials.md"
NEWS = REPO / "examples" / "monthly-news.md"
NY = "America/New_York"


def point_at(home: Path, server, **smtp) -> None:
    """Aim the workspace's [smtp] at the test server (and set other [sending] keys)."""
    text = (home / "mailer.toml").read_text()
    settings = {"host": server.host, "port": server.port, "security": "none", **smtp}
    for key, value in settings.items():
        rendered = json.dumps(value)
        text = re.sub(rf"(?m)^{key} = .*?(\s+#.*)?$", lambda m, key=key, rendered=rendered: f"{key} = {rendered}{m.group(1) or ''}", text, count=1)
    (home / "mailer.toml").write_text(text)


def people(tmp_path: Path, n: int) -> Path:
    path = tmp_path / f"people-{n}.csv"
    path.write_text("email,name\n" + "".join(f"patient{i:03d}@example.com,Pat {i}\n" for i in range(n)))
    return path


# -- scheduling -------------------------------------------------------------------------


def test_times_are_read_in_the_workspace_zone_and_stored_in_utc():
    clock = FakeClock(datetime(2026, 11, 25, 15, tzinfo=UTC))
    assert parse_local_time("2026-12-01 09:00", NY, clock) == "2026-12-01T14:00:00Z"  # EST, UTC-5
    assert parse_local_time("2027-06-01 09:00", NY, clock) == "2027-06-01T13:00:00Z"  # EDT, UTC-4
    assert local_time_text("2026-12-01T14:00:00Z", NY) == "2026-12-01 09:00 EST"


def test_daylight_saving_gaps_and_repeats():
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(InputError, match="does not exist"):
        parse_local_time("2026-03-08 02:30", NY, clock)  # clocks jump from 2:00 to 3:00
    # 1:30 happens twice on 2026-11-01: the first one (still EDT) is meant
    assert parse_local_time("2026-11-01 01:30", NY, clock) == "2026-11-01T05:30:00Z"


def test_a_time_in_the_past_is_refused_unless_now(mailer):
    result = mailer("campaign", "create", SPECIALS, "--at", "2026-11-20 09:00")
    assert result.exit_code == 2 and "in the past" in result.stderr
    assert mailer("campaign", "create", SPECIALS, "--at", "2026-11-20 09:00", "--now").exit_code == 0


def test_campaign_list_shows_local_time(mailer):
    assert mailer("campaign", "create", NEWS, "--at", "2026-12-01 09:00").exit_code == 0
    [c] = mailer.json("campaign", "list")
    assert (c["status"], c["scheduled_at"], c["scheduled_local"]) == ("scheduled", "2026-12-01T14:00:00Z", "2026-12-01 09:00 EST")
    assert "2026-12-01 09:00 EST" in mailer("campaign", "list").stdout
    assert mailer("campaign", "unschedule", "1").exit_code == 0
    assert mailer.json("campaign", "show", "1")["status"] == "draft"
    assert mailer("campaign", "schedule", "1", "--at", "2026-12-02 10:00").exit_code == 0
    assert mailer.json("campaign", "show", "1")["scheduled_at"] == "2026-12-02T15:00:00Z"


# -- run-due ----------------------------------------------------------------------------


def test_run_due_with_nothing_due_prints_nothing(mailer, smtp_server):
    point_at(mailer.home, smtp_server)
    mailer("import", REPO / "examples" / "patients.csv")
    result = mailer("run-due")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    mailer("campaign", "create", NEWS, "--at", "2026-12-01 09:00")  # not yet
    result = mailer("run-due")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert smtp_server.connections == 0


def test_run_due_sends_when_the_time_comes_across_a_dst_change(mailer, smtp_server, clock, tmp_path):
    point_at(mailer.home, smtp_server)
    mailer("import", people(tmp_path, 5))
    # Scheduled on Saturday for Monday 9:00 after the clocks went back on Sunday 2026-11-01
    clock._now = datetime(2026, 10, 31, 16, tzinfo=UTC)
    mailer("campaign", "create", NEWS, "--at", "2026-11-02 09:00")
    clock._now = datetime(2026, 11, 2, 13, 59, tzinfo=UTC)  # 08:59 EST
    assert mailer("run-due").exit_code == 0 and smtp_server.received == []
    clock._now = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)  # 09:00 EST (it would be 10:00 in EDT)
    result = mailer("run-due", "--verbose")
    assert result.exit_code == 0, result.stderr
    assert "campaign 1" in result.stdout and "5 sent" in result.stdout
    assert sorted(smtp_server.recipients()) == [f"patient{i:03d}@example.com" for i in range(5)]
    assert mailer("run-due").stdout == ""  # done: nothing more


def test_a_campaign_too_late_is_left_for_a_human(mailer, smtp_server, clock, tmp_path):
    point_at(mailer.home, smtp_server)
    mailer("import", people(tmp_path, 3))
    mailer("campaign", "create", NEWS, "--at", "2026-11-26 09:00")
    clock._now = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)  # the machine was off for a day
    result = mailer("run-due")
    assert result.exit_code == 1
    assert "was not sent automatically" in result.stderr and "mailer send 1" in result.stderr
    assert smtp_server.received == []
    # reported once; the next runs stay quiet and still send nothing
    assert (mailer("run-due").exit_code, smtp_server.received) == (0, [])
    # a human sends it
    assert mailer("send", "1", "--yes").exit_code == 0
    assert len(smtp_server.received) == 3


def test_a_few_hours_late_is_still_sent(mailer, smtp_server, clock, tmp_path):
    point_at(mailer.home, smtp_server)
    mailer("import", people(tmp_path, 2))
    mailer("campaign", "create", NEWS, "--at", "2026-11-26 09:00")
    clock._now = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)  # 15:00 local: 6 hours late
    assert mailer("run-due").exit_code == 0
    assert len(smtp_server.received) == 2


def test_daily_quota_spreads_a_list_over_three_days(mailer, smtp_server, clock, tmp_path):
    point_at(mailer.home, smtp_server)
    mailer("import", people(tmp_path, 250))
    mailer("campaign", "create", SPECIALS, "--at", "2026-11-26 09:00")
    per_day = []
    for day in range(3):
        clock._now = datetime(2026, 11, 26 + day, 14, 0, tzinfo=UTC)
        before = len(smtp_server.received)
        result = mailer("run-due", "--per-day", "100")
        assert result.exit_code == 0, result.stderr
        assert result.stdout == ""  # cron: success without --verbose is silent
        # a second run the same day sends nothing more
        assert mailer("run-due", "--per-day", "100").exit_code == 0
        per_day.append(len(smtp_server.received) - before)
    assert per_day == [100, 100, 50]
    counts = Counter(smtp_server.recipients())
    assert len(counts) == 250 and set(counts.values()) == {1}
    assert mailer.json("campaign", "show", "1")["status"] == "done"


def test_run_due_is_quiet_when_another_run_holds_the_lock(mailer):
    from mailer.lock import WorkspaceLock

    with WorkspaceLock(mailer.home / "mailer.lock", "mailer run-due", "now"):
        result = mailer("run-due")
    assert (result.exit_code, result.stdout, result.stderr) == (4, "", "")
    log = (mailer.home / "logs" / "mailer.log").read_text()
    assert '"event": "locked"' in log


def test_an_outage_leaves_the_rest_pending_and_the_next_run_finishes(mailer, smtp_server, clock, tmp_path):
    point_at(mailer.home, smtp_server)
    mailer("import", people(tmp_path, 6))
    mailer("campaign", "create", NEWS, "--at", "2026-11-26 09:00")
    clock._now = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
    smtp_server.messages_per_connection = None
    smtp_server.drop_after = 2
    port = smtp_server.port
    point_at(mailer.home, smtp_server, port=1)  # nothing listens there: the server is "down"
    result = mailer("run-due")
    assert result.exit_code == 3 and "Cannot reach" in result.stderr
    point_at(mailer.home, smtp_server, port=port)
    result = mailer("run-due")
    assert result.exit_code == 0, result.stderr
    assert sorted(Counter(smtp_server.recipients()).values()) == [1] * 6


def test_run_due_dry_run_shows_what_it_would_do(mailer, smtp_server, clock, tmp_path):
    point_at(mailer.home, smtp_server)
    mailer("import", people(tmp_path, 4))
    mailer("campaign", "create", NEWS, "--at", "2026-11-25 16:00")
    clock._now = datetime(2026, 11, 25, 21, 5, tzinfo=UTC)
    result = mailer("run-due", "--dry-run")
    assert result.exit_code == 0
    assert "would send 4" in result.stdout
    assert smtp_server.connections == 0
    assert mailer.json("campaign", "show", "1")["status"] == "scheduled"


def test_every_run_is_logged_without_secrets(mailer, smtp_server, clock, tmp_path, monkeypatch):
    smtp_server.auth = ("clinic", "pa55-word!")
    point_at(mailer.home, smtp_server, username="clinic")
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", "pa55-word!")
    mailer("import", people(tmp_path, 2))
    mailer("campaign", "create", NEWS, "--at", "2026-11-25 16:00")
    clock._now = datetime(2026, 11, 25, 21, 5, tzinfo=UTC)
    assert mailer("run-due").exit_code == 0
    lines = [json.loads(x) for x in (mailer.home / "logs" / "mailer.log").read_text().splitlines()]
    assert [x["event"] for x in lines][-2:] == ["campaign", "end"]
    assert lines[-1]["exit"] == 0
    everything = b"".join(p.read_bytes() for p in mailer.home.rglob("*") if p.is_file())
    assert b"pa55-word!" not in everything


# -- two cron jobs at once (real processes) ------------------------------------------------


def test_two_run_due_processes_at_once_send_each_message_once(tmp_path, smtp_server):
    home = tmp_path / "ws"
    env = {**os.environ, "MAILER_HOME": str(home)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "mailer", *a], env=env, capture_output=True, text=True)  # noqa: E731
    assert run("init", "--example").returncode == 0
    point_at(home, smtp_server)
    assert run("import", str(people(tmp_path, 40))).returncode == 0
    assert run("campaign", "create", str(NEWS), "--at", "2020-01-01 09:00", "--now").returncode == 0
    # due long ago would be "late"; make it due now
    (home / "mailer.toml").write_text((home / "mailer.toml").read_text().replace("max_lateness = 12", "max_lateness = 100000"))
    smtp_server.delay = 0.01
    procs = [
        subprocess.Popen([sys.executable, "-m", "mailer", "run-due", "--pause", "0"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    codes = sorted(p.wait(timeout=120) for p in procs)
    assert codes in ([0, 0], [0, 4]), [p.stderr.read() for p in procs]
    counts = Counter(smtp_server.recipients())
    assert len(counts) == 40 and set(counts.values()) == {1}


# -- cron and status ------------------------------------------------------------------------


def test_cron_prints_a_line_to_paste(mailer):
    result = mailer("cron")
    assert result.exit_code == 0
    line = [x for x in result.stdout.splitlines() if not x.startswith("#")][0]
    assert line.startswith("*/10 * * * * ")
    assert f"MAILER_HOME={mailer.home}" in line and "PATH=" in line and line.endswith(" run-due")
    assert "MAILER_SMTP_PASSWORD" in result.stdout  # says where the password goes


def test_cron_check_says_what_is_missing(mailer, smtp_server, monkeypatch):
    point_at(mailer.home, smtp_server, username="clinic")
    result = mailer("cron", "--check")
    assert result.exit_code == 2 and "MAILER_SMTP_PASSWORD" in result.stderr
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", "x")
    result = mailer("cron", "--check")
    assert result.exit_code == 0, result.stderr
    text = (mailer.home / "mailer.toml").read_text().replace('address = "1 Example Street, Closter, NJ 07624"', 'address = ""')
    (mailer.home / "mailer.toml").write_text(text)
    result = mailer("cron", "--check")
    assert result.exit_code == 2 and "address" in result.stderr
    assert result.stderr.count("[practice] address") == 1  # both templates find it; said once


def test_status_shows_list_campaigns_and_last_run(mailer, smtp_server, clock, tmp_path):
    point_at(mailer.home, smtp_server)
    mailer("import", people(tmp_path, 3))
    mailer("subscribers", "unsubscribe", "patient000@example.com")
    mailer("campaign", "create", NEWS, "--at", "2026-12-01 09:00")
    doc = mailer.json("status")
    assert doc["subscribers"]["active"] == 2 and doc["subscribers"]["unsubscribed"] == 1
    assert doc["scheduled"][0]["at"] == "2026-12-01 09:00 EST"
    assert doc["last_run"] is None
    mailer("run-due")
    assert mailer.json("status")["last_run"]["exit"] == 0
    assert "last run: run-due" in mailer("status").stdout


_HOLD_LOCK = """
import os, signal, sys
from mailer.lock import WorkspaceLock
WorkspaceLock(sys.argv[1], "mailer run-due", sys.argv[2]).acquire()
print(os.getpid(), flush=True)
if sys.argv[3] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()
"""


def test_status_tells_a_run_killed_before_it_could_log_its_end(mailer, smtp_server, clock, tmp_path):
    point_at(mailer.home, smtp_server)
    mailer("import", people(tmp_path, 3))
    mailer("run-due")  # an ordinary run that ended: "ok"
    later = "2026-11-25T21:00:00Z"
    running = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(mailer.home / "mailer.lock"), later, "wait"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = running.stdout.readline().strip()
        shown = mailer("status").stdout
        assert f"running now: mailer run-due (process {pid}" in shown
        assert ": ok" in shown  # the last run that ended is still the one shown as ended
    finally:
        running.communicate("")
    assert "running now" not in mailer("status").stdout  # it let go

    killed = subprocess.run([sys.executable, "-c", _HOLD_LOCK, str(mailer.home / "mailer.lock"), later, "die"],
                            capture_output=True, text=True)
    assert killed.returncode == -9
    pid = killed.stdout.strip()
    shown = mailer("status").stdout
    assert f"last run: run-due at 2026-11-25 16:00 EST: killed before it could finish (process {pid})" in shown, shown
    assert mailer.json("status")["last_run"]["exit"] is None
    mailer("run-due")  # the next run takes the lock over and ends normally
    assert mailer.json("status")["last_run"]["exit"] == 0


def test_run_due_json_says_what_was_done(mailer, smtp_server, clock, tmp_path):
    point_at(mailer.home, smtp_server)
    mailer("import", people(tmp_path, 3))
    mailer("campaign", "create", NEWS, "--at", "2026-11-25 16:00")
    clock._now = datetime(2026, 11, 25, 21, 5, tzinfo=UTC)
    doc = json.loads(mailer("run-due", "--json").stdout)
    assert doc["exit"] == 0 and doc["late"] == []
    [c] = doc["campaigns"]
    assert (c["campaign"], c["sent"], c["handed_over"], c["stopped"]) == (1, 3, 3, "")
    assert json.loads(mailer("run-due", "--json").stdout)["campaigns"] == []


def test_an_erased_person_leaves_no_address_in_the_database_or_the_logs(mailer, smtp_server, clock, tmp_path):
    point_at(mailer.home, smtp_server)
    mailer("import", people(tmp_path, 3))
    target = "patient001@example.com"
    # retried (logged), in capitals as some servers write it
    smtp_server.respond(target, "451 4.7.1 Greylisted <PATIENT001@EXAMPLE.COM>")
    smtp_server.drop_after = 2  # a reconnect while sending to the last one: logged
    mailer("campaign", "create", NEWS, "--at", "2026-11-25 16:00")
    clock._now = datetime(2026, 11, 25, 21, 5, tzinfo=UTC)
    assert mailer("run-due").exit_code == 0
    # a second campaign paused by a policy refusal naming the person: the reason is kept
    smtp_server.respond(target, "550 5.7.1 <Patient001@Example.com> refused by policy")
    other = tmp_path / "february-news.md"
    other.write_text(NEWS.read_text().replace('subject: "How', 'subject: "February: how', 1) + "\nA different letter.\n")
    sent = mailer("send", other, "--yes", "--allow-repeat")
    assert mailer.json("campaign", "show", "2")["status"] == "paused", sent.stderr
    assert mailer("send", "1", "--dry-run").exit_code in (0, 2)
    # Their history holds their own words too: a list left, a new consent.
    mailer("subscribers", "unsubscribe", target, "--list", "specials", "--reason", "patient001 asked by phone")
    mailer("subscribers", "add", target, "--consent", "patient001 signed the desk form")
    assert mailer("subscribers", "erase", target.upper(), "--yes").exit_code == 0
    for path in mailer.home.rglob("*"):
        if path.is_file():
            assert b"patient001" not in path.read_bytes().lower(), path
    log = (mailer.home / "logs" / "mailer.log").read_text()
    assert '"event": "retry"' in log and '"event": "reconnect"' in log


def test_the_log_is_rotated_and_keeps_whole_lines(tmp_path, clock, monkeypatch):
    from mailer import runlog

    monkeypatch.setattr(runlog, "MAX_BYTES", 2_000)
    log = runlog.RunLog(tmp_path / "logs" / "mailer.log", clock, "run-due")
    for i in range(200):
        log.write("campaign", campaign=i, note="x" * 40)
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["mailer.log"] + [f"mailer.log.{i}" for i in range(1, runlog.BACKUPS + 1)]
    for path in (tmp_path / "logs").iterdir():
        assert path.stat().st_size <= 2_000
        assert all(json.loads(line)["event"] == "campaign" for line in path.read_text().splitlines())
    assert runlog.last_event(tmp_path / "logs" / "mailer.log", "campaign")["campaign"] == 199


def test_offers_are_judged_on_the_day_the_campaign_goes_out(mailer, tmp_path):
    january = tmp_path / "jan-specials.md"
    january.write_text((REPO / "examples" / "december-specials.md").read_text().replace("December specials", "January specials"))
    # three of its offers end in December; it would go out on January 15th
    result = mailer("campaign", "create", january, "--at", "2027-01-15 09:00")
    assert result.exit_code == 2
    assert "ended on" in result.stderr and "December 31, 2026" in result.stderr
    assert mailer.json("campaign", "list") == []
    # the same letter tomorrow is fine; moving it into January is refused again
    assert mailer("campaign", "create", january, "--at", "2026-11-26 09:00").exit_code == 0
    moved = mailer("campaign", "schedule", "1", "--at", "2027-01-15 09:00")
    assert moved.exit_code == 2 and "ended on" in moved.stderr
    assert mailer.json("campaign", "show", "1")["scheduled_at"] == "2026-11-26T14:00:00Z"


def test_now_sends_a_time_long_past_at_the_next_run(mailer, smtp_server, tmp_path):
    point_at(mailer.home, smtp_server)
    mailer("import", people(tmp_path, 2))
    assert mailer("campaign", "create", NEWS, "--at", "2026-11-20 09:00", "--now").exit_code == 0
    assert mailer.json("campaign", "show", "1")["scheduled_at"] == "2026-11-25T15:00:00Z"  # now, not five days ago
    assert mailer("run-due").exit_code == 0
    assert len(smtp_server.received) == 2


def test_a_late_campaign_says_its_time_in_the_workspace_zone(mailer, clock):
    assert mailer("campaign", "create", NEWS, "--at", "2026-11-25 11:00").exit_code == 0
    clock.advance(2 * 24 * 3600)
    assert mailer("run-due").exit_code == 1
    assert "2026-11-25 11:00 EST" in mailer.json("campaign", "show", "1")["status_reason"]
