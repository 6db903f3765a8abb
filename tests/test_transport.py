"""SmtpTransport against a real server, with and without PIPELINING; the dry-run transport."""

from __future__ import annotations

import pytest

from mailer.config import SmtpConfig
from mailer.errors import ConfigError, SmtpError
from mailer.transport import ConnectionLost, DryRunTransport, Envelope, Reply, SmtpTransport, envelope_address

MESSAGE = (
    b"From: news@example.com\r\nTo: ann@example.com\r\nSubject: hi\r\n\r\n"
    b"Line one\r\n.a line that starts with a dot\r\n..two dots\r\n.\r\nlast\r\n"
)


@pytest.fixture(params=[True, False], ids=["pipelining", "step-by-step"])
def transport(request, smtp_server):
    smtp_server.pipelining = request.param
    t = SmtpTransport(SmtpConfig(host=smtp_server.host, port=smtp_server.port, security="none", timeout=5), None)
    t.open()
    assert t._pipelining is request.param
    yield t
    t.close()


def env(rcpt: str, **kw) -> Envelope:
    return Envelope("news@example.com", rcpt, **kw)


def test_a_message_arrives_byte_for_byte(transport, smtp_server):
    assert transport.send(env("ann@example.com"), MESSAGE).code == 250
    assert transport.send(env("bo@example.com"), MESSAGE).code == 250
    assert [r.data for r in smtp_server.received] == [MESSAGE, MESSAGE]
    assert smtp_server.recipients() == ["ann@example.com", "bo@example.com"]


def test_refusals_are_returned_and_the_connection_stays_usable(transport, smtp_server):
    smtp_server.respond("gone@example.com", "550 5.1.1 No such user")
    smtp_server.respond("later@example.com", "451 4.7.1 Greylisted")
    smtp_server.respond_data("spam@example.com", "554 5.7.1 Rejected as spam")
    assert transport.send(env("gone@example.com"), MESSAGE) == Reply(550, "5.1.1 No such user", "rcpt")
    assert transport.send(env("later@example.com"), MESSAGE).code == 451
    assert transport.send(env("spam@example.com"), MESSAGE) == Reply(554, "5.7.1 Rejected as spam", "data")
    assert transport.send(env("ann@example.com"), MESSAGE).code == 250
    assert smtp_server.recipients() == ["ann@example.com"]


def test_421_closes_and_a_drop_is_connection_lost(transport, smtp_server):
    smtp_server.respond("busy@example.com", "421 4.7.0 Too busy, closing")
    assert transport.send(env("busy@example.com"), MESSAGE).code == 421
    with pytest.raises(ConnectionLost):
        transport.send(env("ann@example.com"), MESSAGE)  # the transport closed it
    transport.open()
    smtp_server.drop_after = len(smtp_server.received)
    with pytest.raises(ConnectionLost):
        transport.send(env("ann@example.com"), MESSAGE)
    transport.open()
    assert transport.send(env("ann@example.com"), MESSAGE).code == 250


def test_smtputf8_addresses(transport, smtp_server):
    assert transport.smtputf8
    reply = transport.send(env("renée@xn--caf-dma.example", smtputf8=True), MESSAGE)
    assert reply.code == 250
    assert "SMTPUTF8" in smtp_server.received[-1].mail_options
    assert smtp_server.received[-1].rcpt_tos == ["renée@xn--caf-dma.example"]


def test_envelope_addresses():
    assert envelope_address("joerg@müller.example") == ("joerg@xn--mller-kva.example", False)
    assert envelope_address("joon.lim@한국.example") == ("joon.lim@xn--3e0b707e.example", False)
    assert envelope_address("renée@café.example") == ("renée@xn--caf-dma.example", True)


def test_starttls_missing_stops_before_the_password(smtp_server):
    smtp_server.auth = ("clinic", "secret-pw")
    t = SmtpTransport(
        SmtpConfig(host=smtp_server.host, port=smtp_server.port, security="starttls", username="clinic"), "secret-pw"
    )
    with pytest.raises(SmtpError, match="does not offer STARTTLS") as err:
        t.open()
    assert "secret-pw" not in str(err.value) and "secret-pw" not in repr(t)
    assert smtp_server.auth_attempts == []


def test_username_without_password_is_a_config_error():
    with pytest.raises(ConfigError, match="MAILER_SMTP_PASSWORD"):
        SmtpTransport(SmtpConfig(host="127.0.0.1", username="clinic"), None)


def test_dry_run_writes_files_and_replaces_the_folder(tmp_path):
    folder = tmp_path / "outbox" / "1-news"
    t = DryRunTransport(folder)
    t.open()
    t.send(Envelope("a@example.com", "ann/../x@example.com", seq=1), MESSAGE)
    assert [p.name for p in folder.iterdir()] == ["1-ann_.._x@example.com.eml"]
    again = DryRunTransport(folder)
    again.open()
    assert list(folder.iterdir()) == []


def test_silence_after_the_whole_message_is_fate_unknown_but_a_hang_up_is_not(smtp_server):
    from mailer.transport import FateUnknown

    for pipelining in (True, False):
        smtp_server.pipelining = pipelining
        t = SmtpTransport(SmtpConfig(host=smtp_server.host, port=smtp_server.port, security="none", timeout=0.3), None)
        t.open()
        smtp_server.delay = 1.0
        with pytest.raises(FateUnknown):
            t.send(env("slow@example.com"), MESSAGE)
        smtp_server.delay = 0
        t.open()
        smtp_server.drop_during_data_after = len(smtp_server.received)
        with pytest.raises(ConnectionLost) as lost:
            t.send(env("dropped@example.com"), MESSAGE)
        assert not isinstance(lost.value, FateUnknown)
        t.close()


@pytest.mark.parametrize(
    "reply, meaning",
    [
        (Reply(250, "2.0.0 OK"), "sent"),
        (Reply(451, "4.7.1 Greylisted"), "temporary"),
        (Reply(421, "4.7.0 Try later", "mail"), "temporary"),
        (Reply(550, "5.1.1 No such user", "rcpt"), "bounced"),
        (Reply(550, "5.2.1 Mailbox disabled", "rcpt"), "bounced"),
        (Reply(550, "No such user here", "rcpt"), "bounced"),
        (Reply(552, "5.2.2 Mailbox full", "rcpt"), "failed"),
        (Reply(554, "5.7.1 Rejected as spam"), "policy"),
        (Reply(550, "Message rejected: listed on a blocklist"), "policy"),
        (Reply(553, "Sender address rejected", "mail"), "policy"),
        (Reply(550, "5.1.8 Bad sender's system address", "mail"), "policy"),
        (Reply(535, "5.7.8 Authentication credentials invalid", "mail"), "auth"),
        (Reply(552, "5.3.4 Message too big"), "failed"),
    ],
)
def test_what_a_reply_means(reply, meaning):
    from mailer.send import classify

    assert classify(reply) == meaning


def test_dot_stuffing_and_line_ends():
    from mailer.transport import dot_stuff

    assert dot_stuff(b"a\r\n.b\r\n..c\r\n") == b"a\r\n..b\r\n...c\r\n"
    assert dot_stuff(b".x\nb\n.y") == b"..x\r\nb\r\n..y\r\n"  # bare LF becomes CRLF
    assert dot_stuff(b"abc") == b"abc\r\n"
