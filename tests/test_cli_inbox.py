"""`mailer inbox process` end to end, in-process, with the in-memory store standing in for the SQL one."""

from __future__ import annotations

import json
import mailbox
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from mailer.cli import AppState, app
from tests.fake_mailbox import FakeMailboxStore
from tests.imap_server import CA_FILE, ImapServer
from tests.inbox_samples import SECRET, names, sample


@dataclass
class FakeStoreState(AppState):
    """The CLI's state with the fake mailbox behind `store().mailbox` (the CLI layer alone;
    test_inbox_e2e.py runs the real store)."""

    fake: FakeMailboxStore | None = None

    def store(self):  # type: ignore[override]
        return SimpleNamespace(mailbox=self.fake)

    def secret(self) -> bytes:
        return SECRET


@pytest.fixture
def inbox(mailer, tmp_path):
    """(run, fake store, mbox path): a workspace whose secret is the samples' one."""
    (mailer.home / "secret.key").write_text(SECRET.hex() + "\n")
    fake = FakeMailboxStore()
    fake.add_subscriber(12, "ana.lopez@example.org")
    fake.add_delivery(1, 1, 12, "<0f3c8e2a9b1d4c5e6f708192a3b4c5d6@example.com>")
    fake.add_subscriber(24, "mary.quinn@example.net")
    fake.add_subscriber(23, "mina.lee@example.org")
    path = tmp_path / "inbox.mbox"
    box = mailbox.mbox(str(path))
    for name in names():
        box.add(sample(name))
    box.close()

    def run(*args, env=None):
        obj = FakeStoreState(home=str(mailer.home), clock=mailer.clock, fake=fake)
        return CliRunner().invoke(app, ["inbox", "process", *map(str, args)], obj=obj, env=env)

    return run, fake, path


def test_an_mbox_is_processed_and_summed_up_as_json(inbox):
    run, fake, path = inbox
    result = run("--mbox", path, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["read"] == 19 and summary["bounces"]["hard"] == 1 and summary["unsubscribes"] == 2
    assert summary["forged"] == 1 and summary["auto_replies"] == 1 and summary["ignored"] == 1
    # The other samples' tokens are valid but name people this small store does not have
    # (as if erased); the rest name nobody at all.
    assert (summary["matched_erased"], summary["unmatched"]) == (10, 3)
    assert fake.status(12) == "bounced" and fake.status(23) == "unsubscribed"
    again = json.loads(run("--mbox", path, "--json").stdout)
    assert again["already_processed"] == 19 and again["bounces"]["hard"] == 0


def test_verbose_lists_each_message_with_its_verdict(inbox):
    run, fake, path = inbox
    result = run("--mbox", path, "-v", "--dry-run")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["where", "kind", "outcome", "subscriber", "campaign", "from", "reason"]
    rows = [line.split("\t") for line in lines[1:20]]
    assert ["bounce-hard", "bounced", "ana.lopez@example.org", "1"] in [r[1:5] for r in rows]
    assert any(r[1] == "forged" and r[2] == "refused" for r in rows)
    assert "read: 19" in lines and fake.status(12) == "active"


def test_without_v_replies_judged_by_their_words_are_shown_for_a_person_to_check(inbox, tmp_path):
    run, fake, _ = inbox
    fake.add_subscriber(40, "sam@example.org")
    fake.add_subscriber(41, "jo@example.org")
    path = tmp_path / "replies.mbox"
    box = mailbox.mbox(str(path))
    for n, (sender, body) in enumerate([("sam@example.org", "Please unsubscribe me"),
                                        ("jo@example.org", "Can you unsubscribe my husband? He is at al@example.org")]):
        box.add(f"From: <{sender}>\nTo: news@example.com\nSubject: Re: December specials\n"
                f"Message-ID: <reply{n}@example.org>\n\n{body}\n".encode())
    box.close()
    result = run("--mbox", path)
    assert result.exit_code == 0, result.stderr
    assert "sam@example.org: 'unsubscribe'" in result.stderr  # taken off: shown, so that a person can check
    assert "Read these yourself" in result.stderr and "jo@example.org: speaks of leaving, but about someone else" in result.stderr
    assert "for you to read: 1" in result.stdout
    assert fake.status(40) == "unsubscribed" and fake.status(41) == "active"


def test_options_that_do_not_fit_together_are_refused(inbox, tmp_path):
    run, _, path = inbox
    for args, words in (
        (["--mbox", path, "--archive", tmp_path], "--archive moves messages of a --maildir"),
        (["--mbox", path, "--move-to", "Done"], "--move-to moves messages on the IMAP server"),
        (["--mbox", path, "--since", "last week"], "is not a date"),
    ):
        result = run(*args)
        assert result.exit_code == 2 and words in result.stderr, result.stderr


def imap_config(server: ImapServer) -> str:
    return (
        "[inbox]\n"
        f'host = "{server.host}"\nport = {server.port}\nsecurity = "ssl"\n'
        f'username = "{server.user}"\npassword_env = "MAILER_IMAP_PASSWORD"\n'
    )


def test_imap_from_the_config_and_a_wrong_password_is_exit_3(inbox, mailer, monkeypatch):
    run, fake, _ = inbox
    monkeypatch.setenv("SSL_CERT_FILE", str(CA_FILE))
    with ImapServer.start() as server:
        server.append(sample("postfix_dsn_hard"))
        (mailer.home / "mailer.toml").write_text(imap_config(server))
        result = run("--json", env={"MAILER_IMAP_PASSWORD": server.password})
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["bounces"]["hard"] == 1
        result = run(env={"MAILER_IMAP_PASSWORD": "not it"})
        assert result.exit_code == 3
        assert "refused the login of 'practice@example.com'" in result.stderr
        assert "Traceback" not in result.stderr and "not it" not in result.stderr
