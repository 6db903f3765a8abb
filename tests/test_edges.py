"""Bad input at the edges: one sentence, the documented exit code, and nothing lost.

Each case is a file, a setting or a disk a practitioner could really have, run through
the real command.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest

from mailer.store.db import Store
from tests.test_send import EVERYONE, REPO, sample_workspace, sending, set_config  # noqa: F401

SPECIALS = REPO / "examples" / "december-specials.md"


def count(home: Path) -> int:
    with closing(sqlite3.connect(home / "mailer.db")) as db:
        return db.execute("SELECT count(*) FROM subscribers").fetchone()[0]


def one_sentence(result) -> None:
    assert "Traceback" not in result.stderr and "bug in mailer" not in result.stderr, result.stderr


# -- CSV files --------------------------------------------------------------------------


def test_an_excel_sep_line_is_honoured_for_any_separator(mailer, tmp_path):
    f = tmp_path / "colon.csv"
    f.write_text("sep=:\nEmail:First name\nann@example.com:Ann\nbob@example.com:Bob\n")
    result = mailer("import", f)
    assert result.exit_code == 0, result.stderr
    assert "':'-separated" in result.stderr and count(mailer.home) == 2


@pytest.mark.parametrize("line", ['sep="', "sep=a", "sep= "])
def test_a_sep_line_that_cannot_separate_is_refused_before_anything_is_written(mailer, tmp_path, line):
    f = tmp_path / "bad.csv"
    f.write_text(f"{line}\nEmail,First name\nann@example.com,Ann\n")
    result = mailer("import", f)
    assert result.exit_code == 2 and f"{f}:1:" in result.stderr
    one_sentence(result)
    assert count(mailer.home) == 0


def test_a_file_mixing_utf8_and_cp1252_is_refused_with_the_first_bad_line(mailer, tmp_path):
    f = tmp_path / "mixed.csv"
    f.write_bytes("email,first name\njose@example.com,José\nzoe@example.com,Zoë\n".encode()
                  + "rene@example.com,René\n".encode("cp1252"))
    result = mailer("import", f)
    assert result.exit_code == 2 and f"{f}:4:" in result.stderr and "UTF-8" in result.stderr
    one_sentence(result)
    assert count(mailer.home) == 0


def test_a_cp1252_file_alone_is_still_read_as_cp1252(mailer, tmp_path):
    f = tmp_path / "excel.csv"
    f.write_bytes("email,first name\nrene@example.com,René\n".encode("cp1252"))
    assert mailer("import", f).exit_code == 0
    assert mailer.json("subscribers", "show", "rene@example.com")["first_name"] == "René"


def test_a_fifo_or_pipe_is_read_like_standard_input(mailer, tmp_path):
    fifo = tmp_path / "people.fifo"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "w") as fh:
            fh.write("email\nann@example.com\nbob@example.com\n")

    writer = threading.Thread(target=feed)
    writer.start()
    result = mailer("import", fifo)
    writer.join()
    assert result.exit_code == 0, result.stderr
    assert count(mailer.home) == 2


def test_dev_stdin_from_a_pipe(mailer, tmp_path):
    env = {**os.environ, "MAILER_HOME": str(mailer.home)}
    done = subprocess.run([sys.executable, "-m", "mailer", "import", "/dev/stdin"], input="email\ncarol@example.com\n",
                          text=True, capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert count(mailer.home) == 1


def test_rejects_may_not_replace_the_file_being_imported(mailer, tmp_path):
    f = tmp_path / "people.csv"
    text = "email\nann@example.com\nnot-an-address\n"
    f.write_text(text)
    result = mailer("import", f, "--rejects", f)
    assert result.exit_code == 2 and "--rejects" in result.stderr
    assert f.read_text() == text and count(mailer.home) == 0


def test_the_rejects_header_is_formula_safe_too(mailer, tmp_path):
    f = tmp_path / "people.csv"
    f.write_text('email,"=HYPERLINK(""http://evil.example"",""x"")"\nnot-an-address,1\n')
    rejects = tmp_path / "rejects.csv"
    assert mailer("import", f, "--rejects", rejects).exit_code == 1
    header = rejects.read_text(encoding="utf-8-sig").splitlines()[0]
    assert header.startswith('email,"\'=HYPERLINK(')


@pytest.mark.parametrize("command", [
    ["import", "{csv}", "--rejects", "{missing}/rejects.csv"],
    ["export", "-o", "{missing}/backup.csv"],
    ["preview", str(SPECIALS), "-o", "{missing}/preview.html"],
])
def test_a_missing_folder_for_an_output_file_is_one_sentence(mailer, tmp_path, command):
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("email\nann@example.com\n")
    args = [a.format(csv=csv_file, missing=tmp_path / "no-such-folder") for a in command]
    result = mailer(*args)
    assert result.exit_code == 2 and "does not exist" in result.stderr, result.stderr
    one_sentence(result)


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_timeout_that_is_not_a_number_names_its_key(mailer, value):
    path = mailer.home / "mailer.toml"
    path.write_text(path.read_text().replace("timeout = 30", f"timeout = {value}"))
    result = mailer("subscribers", "list")
    assert result.exit_code == 2 and "[smtp] timeout" in result.stderr and str(path) in result.stderr
    one_sentence(result)


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        ("per_day = 0", "per_day = true", "[sending] per_day must be a number (without quotes), not true."),
        ("pause = 10", 'pause = "10"', '[sending] pause must be a number (without quotes), not "10".'),
        ("hipaa = false", 'hipaa = "no"', '[practice] hipaa must be true or false (without quotes), not "no".'),
        ('timezone = "America/New_York"', 'timezone = "Mars/Olympus"',
         '[sending] timezone "Mars/Olympus" is not a known time zone'),
    ],
)
def test_a_wrong_setting_is_named_as_it_is_written_in_the_file(mailer, old, new, said):
    path = mailer.home / "mailer.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    for command in (("status",), ("subscribers", "list")):  # before any campaign needs the setting
        result = mailer(*command)
        assert result.exit_code == 2 and said in result.stderr, result.stderr
        one_sentence(result)


def test_address_settings_are_checked_as_the_file_is_read(mailer):
    set_config(mailer.home, "sender", reply_to="not an address")
    result = mailer("subscribers", "list")
    assert result.exit_code == 2 and "[sender] reply_to" in result.stderr  # not blamed on the sender
    set_config(mailer.home, "sender", reply_to="")
    set_config(mailer.home, "smtp", envelope_from="bounce@bücher.example")
    assert mailer("subscribers", "list").exit_code == 0  # an IDN domain is fine: it goes out as its A-label
    set_config(mailer.home, "smtp", envelope_from="jörg@example.com")
    result = mailer("subscribers", "list")
    assert result.exit_code == 2 and "[smtp] envelope_from" in result.stderr and "SMTPUTF8" in result.stderr


def test_an_idn_envelope_goes_out_as_an_a_label(sending):
    set_config(sending.home, "smtp", envelope_from="bounce@bücher.example")
    result = sending.send(sending.content)
    assert result.exit_code == 0, result.stderr
    assert {r.mail_from for r in sending.server.received} == {"bounce@xn--bcher-kva.example"}
    assert len(sending.server.received) == EVERYONE


def test_no_password_in_clear_to_another_machine(sending):
    set_config(sending.home, "smtp", host="smtp.example.net", username="clinic", security="none")
    result = sending.send(sending.content, env={"MAILER_SMTP_PASSWORD": "secret"})
    assert result.exit_code == 2 and "unencrypted" in result.stderr and "secret" not in result.stderr
    assert sending.rows(None) == []


# -- a full disk ------------------------------------------------------------------------


def _cap_database(monkeypatch, pages: int) -> None:
    """SQLite's own limit on the file's size: a real 'database or disk is full' from SQLite."""
    configure = Store._configure

    def capped(self, wal):
        configure(self, wal)
        self.conn.execute(f"PRAGMA max_page_count = {pages}")

    monkeypatch.setattr(Store, "_configure", capped)


def test_an_import_that_fills_the_disk_changes_nothing_and_says_so(mailer, tmp_path, monkeypatch):
    f = tmp_path / "many.csv"
    f.write_text("email,first name\n" + "".join(f"p{i}@example.com,Name{i}\n" for i in range(5000)))
    _cap_database(monkeypatch, 40)
    result = mailer("import", f)
    assert result.exit_code == 2 and "disk is full" in result.stderr, result.stderr
    assert "rollback" not in result.stderr
    one_sentence(result)
    monkeypatch.undo()
    assert count(mailer.home) == 0


def test_a_disk_full_at_the_lock_is_one_sentence(mailer, monkeypatch, tmp_path):
    real_open = os.open

    def full(path, *args, **kwargs):
        if str(path).endswith("mailer.lock"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", full)
    result = mailer("send", SPECIALS, "--yes")
    assert result.exit_code == 2 and "disk is full" in result.stderr
    one_sentence(result)


def test_a_disk_that_fills_mid_send_says_how_far_it_got(sending, monkeypatch, tmp_path):
    more = tmp_path / "more.csv"
    more.write_text("email\n" + "".join(f"patient{i}@example.com\n" for i in range(300)))
    assert sending.m("import", more).exit_code == 0
    everyone = EVERYONE + 300
    assert sending.send(sending.content, "--limit", "1").exit_code == 0  # started: the audience is fixed
    with closing(sqlite3.connect(sending.home / "mailer.db")) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    _cap_database(monkeypatch, pages)  # room in its pages for some of the replies, not for all
    result = sending.send("1")
    assert result.exit_code == 2 and "disk is full" in result.stderr, result.stderr
    got = len(sending.server.received) - 1
    assert 0 < got < everyone - 1, got
    assert f"the server had accepted {got} message(s)" in result.stderr and "mailer send 1" in result.stderr
    assert "nothing was changed" not in result.stderr
    one_sentence(result)
    monkeypatch.undo()  # space freed
    again = sending.send("1")
    assert again.exit_code in (0, 1), again.stderr
    report = sending.report()
    assert report["sent"] + report["unknown"] == everyone  # each once: a message whose reply was lost is unknown
    rcpts = [r.rcpt_tos[0] for r in sending.server.received]
    assert len(rcpts) == len(set(rcpts))  # nobody got a second copy


@pytest.mark.parametrize("name", ["mailer.db", "secret.key", "mailer.toml", "cron.env"])
def test_an_output_file_may_not_replace_the_workspaces_own(mailer, tmp_path, name):
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("email\nann@example.com\nnot-an-address\n")
    target = mailer.home / name
    before = target.read_bytes() if target.exists() else None
    for args in (["import", csv_file, "--rejects", target], ["export", "-o", target],
                 ["preview", SPECIALS, "-o", target]):
        result = mailer(*args)
        assert result.exit_code == 2 and "workspace's own files" in result.stderr, (args, result.stderr)
        assert (target.read_bytes() if target.exists() else None) == before
    assert mailer("subscribers", "list").exit_code == 0  # the list is intact


def test_a_device_or_a_folder_as_the_output_file(mailer, tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    assert mailer("export", "-o", fifo).exit_code == 0  # written into the pipe, which stays a pipe
    reader.join()
    assert got[0].startswith(b"\xef\xbb\xbfemail,") and stat.S_ISFIFO(os.stat(fifo).st_mode)
    for args in (["export", "-o", tmp_path], ["preview", SPECIALS, "-o", tmp_path]):
        result = mailer(*args)
        assert result.exit_code == 2 and "is a folder" in result.stderr
        one_sentence(result)


def test_an_endless_device_is_refused_before_it_fills_the_disk(mailer):
    result = mailer("import", "/dev/zero")
    assert result.exit_code == 2 and "binary file" in result.stderr
    one_sentence(result)


def test_an_outbox_message_that_is_a_symbolic_link_is_replaced_not_followed(mailer, tmp_path):
    assert mailer("import", REPO / "examples" / "patients.csv").exit_code == 1
    assert mailer("send", SPECIALS, "--dry-run").exit_code == 0
    folder = mailer.home / "outbox" / "december-specials"
    first = sorted(folder.iterdir())[0]
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    first.unlink()
    first.symlink_to(victim)
    assert mailer("send", SPECIALS, "--dry-run").exit_code == 0
    assert victim.read_text() == "keep me" and not first.is_symlink()


def test_init_where_no_folder_can_be_made_is_one_sentence(tmp_path, clock):
    from tests.conftest import Mailer

    result = Mailer(Path("/proc/1/no-such-folder/ws"), clock)("init", "--no-input")
    assert result.exit_code == 2 and "Cannot create the workspace" in result.stderr
    one_sentence(result)


@pytest.mark.parametrize("option", [["--pause", "1e300"], ["--rate", "1e-300"]])
def test_a_pause_or_rate_beyond_reason_is_one_sentence(sending, option):
    result = sending.send(sending.content, *option)
    assert result.exit_code == 2 and option[0] in result.stderr
    one_sentence(result)
    assert sending.server.received == []


def test_a_campaign_id_beyond_sqlite_is_simply_not_there(mailer):
    for args in (["report", "99999999999999999999999"], ["campaign", "show", "99999999999999999999999"],
                 ["send", "99999999999999999999999", "--dry-run"]):
        result = mailer(*args)
        assert result.exit_code == 2 and "no campaign" in result.stderr.lower(), args
        one_sentence(result)


def test_a_list_spelt_wrong_is_caught_before_a_campaign_to_nobody(sending):
    result = sending.send(sending.content, "--list", "specails")
    assert result.exit_code == 2 and "would go to nobody" in result.stderr and "--list specials" in result.stderr
    assert sending.rows(None) == []
    made = sending.m("campaign", "create", sending.content, "--list", "specails")
    assert made.exit_code == 0 and "would go to nobody" in made.stderr  # made, but said
