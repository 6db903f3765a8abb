"""Reading returned mail over IMAP, from a real server (pymap) on 127.0.0.1 with TLS."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from mailer.config import InboxConfig
from mailer.errors import ConfigError, ExitCode, MailboxError
from mailer.inbox.process import process_inbox
from mailer.inbox.sources import ImapSource
from tests.fake_mailbox import FakeMailboxStore
from tests.imap_server import CA_FILE, ImapServer
from tests.inbox_samples import SECRET, sample


@pytest.fixture
def imap_server(monkeypatch):
    """A pymap server with implicit TLS, trusted through SSL_CERT_FILE like a real CA."""
    monkeypatch.setenv("SSL_CERT_FILE", str(CA_FILE))
    with ImapServer.start(tls="ssl") as server:
        yield server


def source(server: ImapServer, **kw) -> ImapSource:
    password = kw.pop("password", server.password)
    security = kw.pop("security", server.tls)
    config = InboxConfig(host=server.host, port=server.port, security=security, username=server.user,
                         folder=kw.pop("folder", "INBOX"))
    return ImapSource(config, password, **kw)


@pytest.fixture
def store() -> FakeMailboxStore:
    fake = FakeMailboxStore()
    fake.add_subscriber(12, "ana.lopez@example.org")
    fake.add_delivery(1, 1, 12, "<0f3c8e2a9b1d4c5e6f708192a3b4c5d6@example.com>")
    fake.add_subscriber(24, "mary.quinn@example.net")
    fake.add_subscriber(26, "rosa.kent@example.org")
    return fake


def run(src, store, clock, **kw):
    reports = []
    summary = process_inbox(src, SECRET, store, store, clock=clock, on_message=reports.append, **kw)
    return summary, reports


def test_reading_marks_nothing_read_and_deletes_nothing(imap_server, store, clock):
    for name in ("postfix_dsn_hard", "remove_me_reply", "thanks_reply"):
        imap_server.append(sample(name))
    before = imap_server.flags()
    summary, reports = run(source(imap_server), store, clock)
    assert (summary.read, summary.bounces_hard, summary.unsubscribes, summary.ignored) == (3, 1, 1, 1)
    assert imap_server.flags() == before  # no \Seen, no \Deleted
    assert all("\\Seen" not in f for f in before.values())
    assert [r.source_key for r in reports] == [str(u) for u in imap_server.uids()]
    assert store.status(12) == "bounced" and store.status(24) == "unsubscribed"


def test_the_next_run_fetches_only_what_arrived_since(imap_server, store, clock):
    imap_server.append(sample("postfix_dsn_hard"))
    run(source(imap_server), store, clock)
    first_uid = imap_server.uids()[0]
    name = f"imap:{imap_server.user}@{imap_server.host}:{imap_server.port}/INBOX"
    assert store.cursors[name].endswith(f":{first_uid}")
    imap_server.append(sample("remove_me_reply"))
    summary, reports = run(source(imap_server), store, clock)
    assert summary.read == 1 and summary.already_processed == 0
    assert [r.source_key for r in reports] == [str(imap_server.uids()[-1])]
    summary, _ = run(source(imap_server), store, clock)
    assert summary.read == 0


def test_a_folder_rebuilt_by_the_server_is_read_again_and_changes_nothing(imap_server, store, clock):
    imap_server.append(sample("postfix_dsn_hard"))
    run(source(imap_server), store, clock)
    name = next(iter(store.cursors))
    store.cursors[name] = "1:999999"  # another UIDVALIDITY: the saved UID means nothing now
    before = store.state()
    summary, _ = run(source(imap_server), store, clock)
    assert summary.read == 1 and summary.already_processed == 1
    assert store.state()[:-1] == before[:-1]


def test_since_searches_by_date_instead_of_the_last_uid(imap_server, store, clock):
    imap_server.append(sample("remove_me_reply"), when=datetime(2026, 10, 1, tzinfo=UTC))
    imap_server.append(sample("postfix_dsn_hard"), when=datetime(2026, 11, 25, tzinfo=UTC))
    summary, reports = run(source(imap_server, since=date(2026, 11, 1)), store, clock)
    assert summary.read == 1 and summary.bounces_hard == 1
    summary, _ = run(source(imap_server, since=date(2026, 9, 1)), store, clock)
    assert summary.read == 2 and summary.already_processed == 1


def test_a_since_run_never_moves_the_position_back(imap_server, store, clock):
    imap_server.append(sample("postfix_dsn_hard"), when=datetime(2026, 11, 25, tzinfo=UTC))
    imap_server.append(sample("remove_me_reply"), when=datetime(2026, 10, 1, tzinfo=UTC))
    run(source(imap_server), store, clock)
    cursor = dict(store.cursors)
    assert next(iter(cursor.values())).endswith(f":{imap_server.uids()[-1]}")
    summary, _ = run(source(imap_server, since=date(2026, 11, 1)), store, clock)  # finds only the first
    assert summary.read == 1
    assert store.cursors == cursor


def test_move_to_moves_what_was_handled_and_leaves_the_rest(imap_server, store, clock):
    imap_server.create("Processed")
    for name in ("postfix_dsn_hard", "thanks_reply", "remove_me_reply"):
        imap_server.append(sample(name))
    summary, _ = run(source(imap_server, move_to="Processed"), store, clock)
    assert summary.moved == 2
    assert len(imap_server.uids("INBOX")) == 1 and len(imap_server.uids("Processed")) == 2
    assert all("\\Deleted" not in f for f in imap_server.flags("INBOX").values())


def test_a_dry_run_moves_nothing_and_keeps_no_position(imap_server, store, clock):
    imap_server.create("Processed")
    imap_server.append(sample("postfix_dsn_hard"))
    summary, _ = run(source(imap_server, move_to="Processed"), store, clock, dry_run=True)
    assert summary.bounces_hard == 1 and summary.moved == 0
    assert imap_server.uids("Processed") == [] and store.cursors == {} and store.status(12) == "active"


def test_move_to_a_folder_that_does_not_exist_is_one_sentence(imap_server, store, clock):
    # a setting to fix (exit 2), not a server out of reach (exit 3)
    with pytest.raises(ConfigError, match="'Archive' .* does not exist"):
        run(source(imap_server, move_to="Archive"), store, clock)


def test_a_server_without_move_refuses_move_to_rather_than_delete(monkeypatch, store, clock):
    monkeypatch.setenv("SSL_CERT_FILE", str(CA_FILE))
    with ImapServer.start(tls="ssl", move=False) as server:
        server.create("Processed")
        with pytest.raises(MailboxError, match="cannot move messages .* never deletes mail"):
            run(source(server, move_to="Processed"), store, clock)


def test_a_wrong_password_is_one_sentence_and_exit_3(imap_server, store, clock):
    with pytest.raises(MailboxError) as caught:
        run(source(imap_server, password="wrong"), store, clock)
    assert caught.value.exit_code == ExitCode.SMTP == 3
    assert str(caught.value).startswith(f"The IMAP server 127.0.0.1:{imap_server.port} refused the login of")
    assert "wrong" not in str(caught.value) + (caught.value.hint or "")


def test_an_untrusted_certificate_is_one_sentence_and_exit_3(imap_server, store, clock, monkeypatch, tmp_path):
    empty = tmp_path / "no-ca.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    with pytest.raises(MailboxError, match="certificate of the IMAP server .* could not be verified") as caught:
        run(source(imap_server), store, clock)
    assert caught.value.exit_code == 3


def test_starttls_is_used_and_verified(monkeypatch, store, clock):
    monkeypatch.setenv("SSL_CERT_FILE", str(CA_FILE))
    with ImapServer.start(tls="starttls") as server:
        server.append(sample("postfix_dsn_hard"))
        summary, _ = run(source(server), store, clock)
        assert summary.bounces_hard == 1


def test_nothing_listening_is_one_sentence(store, clock):
    config = InboxConfig(host="127.0.0.1", port=1, username="u")
    with pytest.raises(MailboxError, match="Cannot reach the IMAP server 127.0.0.1:1"):
        run(ImapSource(config, "pw"), store, clock)


def test_missing_settings_say_which(store):
    with pytest.raises(ConfigError, match=r"\[inbox\] host"):
        ImapSource(InboxConfig(), "pw")
    with pytest.raises(ConfigError, match="MAILER_SMTP_PASSWORD"):
        ImapSource(InboxConfig(host="imap.example.com", username="u"), None, password_env="MAILER_SMTP_PASSWORD")


def test_inbox_settings_are_checked_like_the_others(tmp_path):
    from mailer.config import load_config

    path = tmp_path / "mailer.toml"
    path.write_text('[inbox]\nsecurity = "none"\n')
    with pytest.raises(ConfigError, match=r'\[inbox\] security must be "ssl" or "starttls"'):
        load_config(path)
    path.write_text('[inbox]\nbefore_send = "yes"\n')
    with pytest.raises(ConfigError, match="before_send must be true or false"):
        load_config(path)
    path.write_text('[inbox]\nhost = "imap.example.com"\nbefore_send = true\n')
    inbox = load_config(path).inbox
    assert (inbox.host, inbox.port, inbox.security, inbox.folder, inbox.before_send) == (
        "imap.example.com", 993, "ssl", "INBOX", True)
