"""The test SMTP server, seen from a plain smtplib client: each rule does what it says."""

from __future__ import annotations

import smtplib
import ssl
import subprocess
import sys
import time
from email.message import EmailMessage

import pytest

from tests.smtp_server import CA_FILE, SmtpServer, _Hooks

MESSAGE = (
    b"From: Closter Acupuncture <news@example.com>\r\n"
    b"To: ana@example.com\r\n"
    b"Subject: December specials\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Ana,\r\n"
    b".a line that starts with a dot\r\n"
    b"\r\n"
    b"Caf\xc3\xa9 hours: 9-5\r\n"
)


def connect(server: SmtpServer, timeout: float = 5) -> smtplib.SMTP:
    client = smtplib.SMTP(server.host, server.port, timeout=timeout)
    client.ehlo("client.test")
    return client


def send(client: smtplib.SMTP, to: str = "ana@example.com", data: bytes = MESSAGE):
    """MAIL, RCPT, DATA by hand; returns the reply to DATA as (code, text)."""
    assert client.mail("news@example.com")[0] == 250
    assert client.rcpt(to)[0] == 250
    return client.data(data)


def trusting_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=CA_FILE)


# ---- what is recorded ------------------------------------------------------------


def test_accepted_message_is_recorded_byte_exact(smtp_server):
    client = connect(smtp_server)
    code, text = send(client)
    client.quit()

    assert code == 250 and text.startswith(b"2.0.0 OK")
    [got] = smtp_server.received
    assert got.data == MESSAGE  # dot-stuffing undone, CRLF kept, 8-bit bytes intact
    assert got.mail_from == "news@example.com"
    assert got.rcpt_tos == ["ana@example.com"]
    assert got.connection == 1
    assert got.reply == "250 " + text.decode()
    assert got.tls is False and got.username is None
    assert got.message["Subject"] == "December specials"
    assert "Café hours" in got.message.get_content()
    assert smtp_server.recipients() == ["ana@example.com"]
    assert smtp_server.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert smtp_server.connections == 1


def test_send_message_headers_arrive_intact(smtp_server):
    message = EmailMessage()
    message["From"] = "Closter Acupuncture <news@example.com>"
    message["To"] = "ana@example.com, ben@example.com"
    message["Subject"] = "Électroacupuncture: what to expect"
    message["List-Unsubscribe"] = "<mailto:unsubscribe@example.com>"
    message.set_content("Hello\n")
    with connect(smtp_server) as client:
        assert client.send_message(message) == {}

    [got] = smtp_server.received
    assert got.rcpt_tos == ["ana@example.com", "ben@example.com"]
    assert got.message["Subject"] == "Électroacupuncture: what to expect"
    assert got.message["List-Unsubscribe"] == "<mailto:unsubscribe@example.com>"
    assert got.mail_options == [f"SIZE={len(got.data)}"]  # smtplib announces the size
    assert smtp_server.recipients() == ["ana@example.com", "ben@example.com"]


def test_server_replies_carry_enhanced_status_codes(smtp_server):
    client = connect(smtp_server)
    assert client.has_extn("enhancedstatuscodes")
    assert client.docmd("RCPT", "TO:<ana@example.com>") == (503, b"5.5.1 Error: need MAIL command")
    assert client.mail("news@example.com") == (250, b"2.1.0 OK")
    assert client.rcpt("ana@example.com") == (250, b"2.1.5 OK")
    assert client.rset() == (250, b"2.0.0 OK")
    assert client.noop() == (250, b"2.0.0 OK")
    assert client.quit() == (221, b"2.0.0 Bye")


# ---- per-recipient replies ---------------------------------------------------------


def test_rcpt_replies_are_used_in_order_then_250(smtp_server):
    smtp_server.respond("ana@example.com", "451 4.7.1 Greylisted, try again later", "550 5.1.1 No such user")
    client = connect(smtp_server)
    client.mail("news@example.com")

    assert client.rcpt("ben@example.com") == (250, b"2.1.5 OK")  # others are not affected
    assert client.rcpt("ana@example.com") == (451, b"4.7.1 Greylisted, try again later")
    assert client.rcpt("ANA@example.com") == (550, b"5.1.1 No such user")  # matched case-insensitively
    assert client.rcpt("ana@example.com") == (250, b"2.1.5 OK")
    assert client.data(MESSAGE)[0] == 250
    client.quit()

    assert smtp_server.received[0].rcpt_tos == ["ben@example.com", "ana@example.com"]


def test_a_reply_without_enhanced_code_is_sent_verbatim(smtp_server):
    smtp_server.respond("ana@example.com", "550 No such user here")
    with connect(smtp_server) as client:
        client.mail("news@example.com")
        assert client.rcpt("ana@example.com") == (550, b"No such user here")


def test_rcpt_421_closes_the_connection(smtp_server):
    smtp_server.respond("ana@example.com", "421 4.7.0 Try again later")
    client = connect(smtp_server)
    client.mail("news@example.com")
    assert client.rcpt("ana@example.com") == (421, b"4.7.0 Try again later")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()


def test_data_replies_are_used_in_order_then_250(smtp_server):
    smtp_server.respond_data("ana@example.com", "554 5.7.1 Message rejected as spam", "552 5.3.4 Message too big")
    client = connect(smtp_server)

    with pytest.raises(smtplib.SMTPDataError) as spam:
        client.sendmail("news@example.com", ["ana@example.com"], MESSAGE)
    assert (spam.value.smtp_code, spam.value.smtp_error) == (554, b"5.7.1 Message rejected as spam")
    with pytest.raises(smtplib.SMTPDataError) as big:
        client.sendmail("news@example.com", ["ana@example.com"], MESSAGE)
    assert (big.value.smtp_code, big.value.smtp_error) == (552, b"5.3.4 Message too big")
    assert send(client, "ben@example.com")[0] == 250  # ana's queue is not spent on ben
    assert send(client, "ana@example.com")[0] == 250
    client.quit()

    assert smtp_server.recipients() == ["ben@example.com", "ana@example.com"]
    assert smtp_server.commands.count("DATA") == 4


def test_data_reply_of_a_message_to_several_recipients(smtp_server):
    """Each message takes one reply from each of its recipients' queues; the first answers."""
    smtp_server.respond_data("ben@example.com", "451 4.3.0 Ben's mailbox is busy")
    smtp_server.respond_data("cy@example.com", "552 5.3.4 Cy's mailbox is full", "452 4.2.2 Cy is over quota")
    client = connect(smtp_server)
    client.mail("news@example.com")
    for rcpt in ("ana@example.com", "ben@example.com", "cy@example.com"):
        client.rcpt(rcpt)
    assert client.data(MESSAGE) == (451, b"4.3.0 Ben's mailbox is busy")
    assert send(client, "cy@example.com") == (452, b"4.2.2 Cy is over quota")
    client.quit()
    assert smtp_server.received == []


def test_data_421_closes_the_connection(smtp_server):
    smtp_server.respond_data("ana@example.com", "421 4.7.0 Try again later")
    client = connect(smtp_server)
    assert send(client) == (421, b"4.7.0 Try again later")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    assert smtp_server.received == []


def test_respond_rejects_what_is_not_a_reply(smtp_server):
    with pytest.raises(ValueError):
        smtp_server.respond("ana@example.com")
    with pytest.raises(ValueError):
        smtp_server.respond("ana@example.com", "Greylisted")
    with pytest.raises(TypeError):
        SmtpServer(drop_afterwards=1)
    with pytest.raises(ValueError):
        smtp_server.tls = "tls"


# ---- dropped connections, silence, slowness --------------------------------------


def test_drop_after_drops_at_the_next_message_once(smtp_server):
    smtp_server.drop_after = 2
    client = connect(smtp_server)
    assert send(client, "ana@example.com")[0] == 250
    assert send(client, "ben@example.com")[0] == 250
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail("news@example.com", ["cy@example.com"], MESSAGE)
    assert smtp_server.commands[-1] == "MAIL"  # dropped without a reply to it

    # It fired once: the client reconnects and carries on.
    assert smtp_server.drop_after is None
    with connect(smtp_server) as client:
        assert send(client, "cy@example.com")[0] == 250
    assert smtp_server.recipients() == ["ana@example.com", "ben@example.com", "cy@example.com"]
    assert [m.connection for m in smtp_server.received] == [1, 1, 2]


def test_drop_during_data_leaves_the_fate_unknown(smtp_server):
    smtp_server.drop_during_data_after = 1
    client = connect(smtp_server)
    assert send(client, "ana@example.com")[0] == 250
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail("news@example.com", ["ben@example.com"], MESSAGE)

    assert smtp_server.recipients() == ["ana@example.com"]  # only what got a 250
    [unanswered] = smtp_server.unanswered  # but the server did take ben's message in full
    assert unanswered.rcpt_tos == ["ben@example.com"] and unanswered.data == MESSAGE
    assert smtp_server.drop_during_data_after is None


def test_hang_makes_the_client_time_out(smtp_server):
    smtp_server.hang = True
    started = time.monotonic()
    # smtplib reports a read timeout as a disconnection; the TimeoutError is its context
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out") as timed_out:
        smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=0.5)
    assert isinstance(timed_out.value.__context__, TimeoutError)
    assert time.monotonic() - started < 3
    assert smtp_server.connections == 1
    assert smtp_server.commands == []


def test_delay_slows_the_reply_to_data(smtp_server):
    smtp_server.delay = 0.3
    client = connect(smtp_server)
    started = time.monotonic()
    assert send(client)[0] == 250
    assert time.monotonic() - started >= 0.3
    client.quit()


def test_a_client_that_gives_up_during_the_delay_leaves_the_message_unanswered(smtp_server):
    smtp_server.delay = 5
    client = connect(smtp_server, timeout=0.3)
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        send(client)
    client.close()
    smtp_server.stop()  # settles the server side at once instead of waiting for it

    assert smtp_server.received == []
    assert [m.rcpt_tos for m in smtp_server.unanswered] == [["ana@example.com"]]


# ---- per-connection limits -----------------------------------------------------------


def test_messages_per_connection_answers_421_and_closes(smtp_server):
    smtp_server.messages_per_connection = 2
    client = connect(smtp_server)
    assert send(client, "ana@example.com")[0] == 250
    assert send(client, "ben@example.com")[0] == 250
    assert client.mail("news@example.com") == (421, b"4.7.0 Too many messages, closing connection")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()

    with connect(smtp_server) as client:  # a new connection gets a new allowance
        assert send(client, "cy@example.com")[0] == 250
    assert [m.connection for m in smtp_server.received] == [1, 1, 2]


def test_max_recipients_per_connection_answers_421_and_closes(smtp_server):
    smtp_server.max_recipients_per_connection = 2
    client = connect(smtp_server)
    client.mail("news@example.com")
    assert client.rcpt("ana@example.com")[0] == 250
    assert client.rcpt("ben@example.com")[0] == 250
    assert client.rcpt("cy@example.com") == (421, b"4.7.0 Too many recipients, closing connection")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()


# ---- AUTH ------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_success_and_535(smtp_server, mechanism):
    smtp_server.auth = ("clinic", "s3cret")
    client = connect(smtp_server)
    assert "PLAIN" in client.esmtp_features["auth"] and "LOGIN" in client.esmtp_features["auth"]
    authenticator = {"PLAIN": client.auth_plain, "LOGIN": client.auth_login}[mechanism]

    assert client.mail("news@example.com") == (530, b"5.7.0 Authentication required")
    client.user, client.password = "clinic", "wrong"
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        client.auth(mechanism, authenticator)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (535, b"5.7.8 Authentication credentials invalid")
    client.user, client.password = "clinic", "s3cret"
    assert client.auth(mechanism, authenticator) == (235, b"2.7.0 Authentication successful")
    assert send(client)[0] == 250
    client.quit()

    assert smtp_server.auth_attempts == [("clinic", "wrong"), ("clinic", "s3cret")]
    assert smtp_server.received[0].username == "clinic"
    assert smtp_server.commands == ["EHLO", "MAIL", "AUTH", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"]


def test_without_auth_configured_auth_is_neither_offered_nor_accepted(smtp_server):
    client = connect(smtp_server)
    assert not client.has_extn("auth")
    with pytest.raises(smtplib.SMTPNotSupportedError):
        client.login("clinic", "s3cret")
    assert client.docmd("AUTH", "PLAIN AGNsaW5pYwBzM2NyZXQ=") == (502, b"5.5.1 AUTH not supported")
    client.quit()
    assert smtp_server.auth_attempts == []


# ---- TLS -------------------------------------------------------------------------------


def test_starttls_with_the_test_ca_then_auth(smtp_server):
    smtp_server.configure(tls="starttls", auth=("clinic", "s3cret"))
    client = connect(smtp_server)
    assert client.has_extn("starttls")
    assert not client.has_extn("auth")  # not before STARTTLS
    assert client.starttls(context=trusting_context())[0] == 220
    client.ehlo("client.test")
    assert not client.has_extn("starttls")
    assert client.has_extn("auth")
    client.login("clinic", "s3cret")
    assert send(client)[0] == 250
    client.quit()

    assert smtp_server.received[0].tls is True
    assert smtp_server.commands == ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"]


def test_auth_before_starttls_is_refused(smtp_server):
    smtp_server.configure(tls="starttls", auth=("clinic", "s3cret"))
    client = connect(smtp_server)
    code, text = client.docmd("AUTH", "PLAIN AGNsaW5pYwBzM2NyZXQ=")
    assert (code, text) == (538, b"5.7.11 Encryption required for requested authentication mechanism")
    assert smtp_server.auth_attempts == []
    client.quit()


def test_auth_can_be_offered_before_starttls(smtp_server):
    smtp_server.configure(tls="starttls", auth=("clinic", "s3cret"), require_tls_for_auth=False)
    client = connect(smtp_server)
    assert client.has_extn("starttls") and client.has_extn("auth")
    client.login("clinic", "s3cret")  # in the clear: a test can prove the client never does this
    client.quit()
    assert smtp_server.commands.index("AUTH") < len(smtp_server.commands)
    assert "STARTTLS" not in smtp_server.commands


def test_starttls_fails_certificate_verification_without_the_test_ca(smtp_server):
    smtp_server.tls = "starttls"
    client = connect(smtp_server)
    with pytest.raises(ssl.SSLCertVerificationError):
        client.starttls(context=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # verifies, trusts nobody
    client.close()
    assert smtp_server.received == []


def test_ssl_cert_file_makes_the_default_context_trust_the_server(smtp_server, monkeypatch):
    smtp_server.tls = "starttls"
    monkeypatch.setenv("SSL_CERT_FILE", str(SmtpServer.ca_file))
    assert SmtpServer.tls_env() == {"SSL_CERT_FILE": str(CA_FILE)}
    client = connect(smtp_server)
    client.starttls(context=ssl.create_default_context())  # what mailer itself does
    client.ehlo("client.test")
    assert send(client)[0] == 250
    client.quit()


def test_implicit_tls_server():
    with SmtpServer.start(tls="ssl", auth=("clinic", "s3cret")) as server:
        client = smtplib.SMTP_SSL(server.host, server.port, timeout=5, context=trusting_context())
        client.ehlo("client.test")
        assert not client.has_extn("starttls")
        assert client.has_extn("auth")  # already encrypted
        client.login("clinic", "s3cret")
        assert send(client)[0] == 250
        client.quit()
        assert server.received[0].tls is True
        assert server.received[0].username == "clinic"
        assert server.commands == ["EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"]


def test_a_running_server_switches_to_implicit_tls_for_new_connections(smtp_server):
    with connect(smtp_server) as client:
        assert send(client)[0] == 250
    smtp_server.tls = "ssl"
    with smtplib.SMTP_SSL(smtp_server.host, smtp_server.port, timeout=5, context=trusting_context()) as client:
        client.ehlo("client.test")
        assert send(client)[0] == 250
    assert [m.tls for m in smtp_server.received] == [False, True]


def test_starttls_is_not_offered_when_tls_is_none(smtp_server):
    client = connect(smtp_server)
    assert not client.has_extn("starttls")
    with pytest.raises(smtplib.SMTPNotSupportedError):
        client.starttls(context=trusting_context())
    assert client.docmd("STARTTLS") == (454, b"4.7.0 TLS not available")
    client.quit()


# ---- SMTPUTF8 ----------------------------------------------------------------------------


def test_smtputf8_offered_and_used(smtp_server):
    message = EmailMessage()
    message["From"] = "news@example.com"
    message["To"] = "zoë@example.com"
    message["Subject"] = "Hello"
    message.set_content("Hello\n")
    with connect(smtp_server) as client:
        assert client.has_extn("smtputf8")
        client.send_message(message)  # smtplib adds SMTPUTF8 for the non-ASCII address

    [got] = smtp_server.received
    assert got.rcpt_tos == ["zoë@example.com"]
    assert "SMTPUTF8" in got.mail_options
    assert got.message["To"] == "zoë@example.com"


def test_non_ascii_address_without_smtputf8_parameter_gets_553(smtp_server):
    client = connect(smtp_server)
    client.command_encoding = "utf-8"  # smtplib would refuse to send it otherwise
    assert client.docmd("MAIL", "FROM:<zoë@example.com>") == (
        553,
        b"5.6.7 Non-ASCII address not permitted without SMTPUTF8",
    )
    assert client.docmd("MAIL", "FROM:<news@example.com>")[0] == 250
    assert client.docmd("RCPT", "TO:<zoë@example.com>")[0] == 553
    client.quit()


def test_smtputf8_off(smtp_server):
    smtp_server.smtputf8 = False
    client = connect(smtp_server)
    client.command_encoding = "utf-8"
    assert not client.has_extn("smtputf8")
    assert client.docmd("MAIL", "FROM:<news@example.com> SMTPUTF8") == (555, b"5.5.4 SMTPUTF8 is not supported here")
    assert client.docmd("MAIL", "FROM:<zoë@example.com>")[0] == 553
    assert client.docmd("MAIL", "FROM:<news@example.com>")[0] == 250
    assert client.docmd("RCPT", "TO:<zoë@example.com>")[0] == 553
    client.quit()

    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "news@example.com", "zoë@example.com", "Hi"
    message.set_content("Hello\n")
    with connect(smtp_server) as client, pytest.raises(smtplib.SMTPNotSupportedError):
        client.send_message(message)
    assert smtp_server.received == []


# ---- the controller ---------------------------------------------------------------------


def test_reset_forgets_records_and_rules_but_keeps_setup(smtp_server):
    smtp_server.configure(tls="starttls", smtputf8=False, drop_after=5, delay=0.1, hang=False)
    smtp_server.respond("ana@example.com", "451 4.7.1 Later")
    with connect(smtp_server) as client:
        client.starttls(context=trusting_context())
        client.ehlo("client.test")
        send(client, "ben@example.com")

    smtp_server.reset()
    assert (smtp_server.received, smtp_server.commands, smtp_server.connections) == ([], [], 0)
    assert (smtp_server.drop_after, smtp_server.delay) == (None, 0.0)
    assert (smtp_server.tls, smtp_server.smtputf8) == ("starttls", False)
    with connect(smtp_server) as client:
        client.starttls(context=trusting_context())
        client.ehlo("client.test")
        assert send(client, "ana@example.com")[0] == 250  # the queued 451 is gone
    assert smtp_server.received[0].connection == 1


def test_a_second_server_is_independent(smtp_server):
    with SmtpServer.start() as other:
        assert other.port != smtp_server.port
        with connect(other) as client:
            send(client)
    assert len(other.received) == 1 and smtp_server.received == []
    assert smtp_server.smtp_settings() == {
        "host": "127.0.0.1",
        "port": smtp_server.port,
        "security": "none",
        "username": "",
    }


def test_concurrent_connections_are_told_apart(smtp_server):
    first, second = connect(smtp_server), connect(smtp_server)
    assert send(first, "ana@example.com")[0] == 250
    assert send(second, "ben@example.com")[0] == 250
    assert send(first, "cy@example.com")[0] == 250
    first.quit()
    second.quit()
    assert [(m.connection, m.rcpt_tos[0]) for m in smtp_server.received] == [
        (1, "ana@example.com"),
        (2, "ben@example.com"),
        (1, "cy@example.com"),
    ]


def test_an_error_inside_the_server_fails_the_test_that_met_it(monkeypatch):
    async def broken(self, conn, session, envelope, arg):
        raise RuntimeError("harness bug")

    monkeypatch.setattr(_Hooks, "handle_NOOP", broken)
    server = SmtpServer.start()
    with connect(server) as client:
        assert client.noop() == (451, b"4.3.0 Test server error: RuntimeError: harness bug")
    with pytest.raises(AssertionError, match="harness bug"):
        with server:  # what the smtp_server fixture does on the way out
            pass


def test_stop_is_fast_and_closes_open_connections():
    started = time.monotonic()
    for _ in range(10):
        server = SmtpServer.start(tls="starttls")
        client = connect(server)
        server.stop()
        with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
            client.noop()
        client.close()
    assert time.monotonic() - started < 2  # about a millisecond each; generous for slow CI


def test_a_subprocess_can_send_to_it_over_verified_tls(smtp_server):
    smtp_server.tls = "ssl"
    script = (
        "import smtplib, ssl, sys\n"
        "with smtplib.SMTP_SSL(sys.argv[1], int(sys.argv[2]), timeout=5,"
        " context=ssl.create_default_context()) as c:\n"
        "    c.sendmail('news@example.com', ['ana@example.com'], b'Subject: hi\\r\\n\\r\\nhi\\r\\n')\n"
    )
    env = {"PATH": "/usr/bin:/bin", **smtp_server.tls_env()}
    done = subprocess.run(
        [sys.executable, "-c", script, smtp_server.host, str(smtp_server.port)],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert [m.rcpt_tos for m in smtp_server.wait_for_messages(1, timeout=5)] == [["ana@example.com"]]
