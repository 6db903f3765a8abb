"""SmtpTransport against a real server: stepwise, grouped and pipelined across messages;
what a failure at each stage means for the message in flight; the dry-run transport."""

from __future__ import annotations

import signal
import threading

import pytest

from mailer.config import SmtpConfig
from mailer.errors import ConfigError, SmtpError
from mailer.transport import (
    ConnectionLost,
    DryRunTransport,
    Envelope,
    FateUnknown,
    Outgoing,
    Reply,
    SmtpTransport,
    Stage,
    envelope_address,
    orcpt,
    xtext,
)

MESSAGE = (
    b"From: news@example.com\r\nTo: ann@example.com\r\nSubject: hi\r\n\r\n"
    b"Line one\r\n.a line that starts with a dot\r\n..two dots\r\n.\r\nlast\r\n"
)
MODES = {"stepwise": (False, False), "grouped": (True, False), "across": (True, True)}


def smtp(server, *, timeout: float = 5, pipelining: bool = True) -> SmtpTransport:
    config = SmtpConfig(host=server.host, port=server.port, security="none", timeout=timeout)
    return SmtpTransport(config, None, pipelining=pipelining)


@pytest.fixture(params=list(MODES))
def transport(request, smtp_server):
    server_pipelining, across = MODES[request.param]
    smtp_server.pipelining = server_pipelining
    t = smtp(smtp_server, pipelining=across)
    t.open()
    assert t.mode == request.param
    yield t
    t.close()


def env(rcpt: str, **kw) -> Envelope:
    return Envelope("news@example.com", rcpt, **kw)


class Recorder:
    """A listener that notes each reply and hand-over, in order."""

    def __init__(self, refuse_data: set[str] = frozenset(), interrupt: str = ""):
        self.events: list[tuple[str, str, object]] = []
        self.refuse_data = refuse_data
        self.interrupt = interrupt

    def answered(self, item: Outgoing, reply: Reply) -> None:
        self.events.append(("reply", item.envelope.recipient, reply))

    def before_data(self, item: Outgoing) -> bool:
        if item.envelope.recipient == self.interrupt:
            raise KeyboardInterrupt
        self.events.append(("data", item.envelope.recipient, None))
        return item.envelope.recipient not in self.refuse_data

    def replies(self) -> dict[str, Reply]:
        return {rcpt: r for kind, rcpt, r in self.events if kind == "reply"}


def send_all(t: SmtpTransport, rcpts: list[str], listener: Recorder, data: bytes = MESSAGE) -> list[Outgoing]:
    items = [Outgoing(env(r), data) for r in rcpts]
    for item in items:
        t.submit(item, listener)
        t.collect(listener)
    t.drain(listener)
    return items


# ---- every mode ------------------------------------------------------------------------


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


def test_each_reply_is_matched_to_its_message(transport, smtp_server):
    """In a pipelined stream a RCPT refusal of one message is never taken for the reply to the data before it."""
    smtp_server.respond("b@example.com", "550 5.1.1 No such user")
    smtp_server.respond_data("c@example.com", "451 4.3.0 Try later")
    listener = Recorder()
    send_all(transport, ["a@example.com", "b@example.com", "c@example.com", "d@example.com"], listener)
    got = listener.replies()
    assert [got[r].code for r in ("a@example.com", "b@example.com", "c@example.com", "d@example.com")] == [250, 550, 451, 250]
    assert got["b@example.com"].stage == "rcpt" and got["c@example.com"].stage == "data"
    assert smtp_server.recipients() == ["a@example.com", "d@example.com"]
    # Data only for the messages whose envelope was accepted, each once, in order.
    assert [r for kind, r, _ in listener.events if kind == "data"] == ["a@example.com", "c@example.com", "d@example.com"]


def test_421_closes_and_a_drop_is_connection_lost(transport, smtp_server):
    smtp_server.respond("busy@example.com", "421 4.7.0 Too busy, closing")
    assert transport.send(env("busy@example.com"), MESSAGE).code == 421
    with pytest.raises(ConnectionLost):
        transport.send(env("ann@example.com"), MESSAGE)  # the transport closed it
    transport.open()
    smtp_server.drop_after = len(smtp_server.received)
    with pytest.raises(ConnectionLost) as lost:
        transport.send(env("ann@example.com"), MESSAGE)
    assert not isinstance(lost.value, FateUnknown)
    transport.open()
    assert transport.send(env("ann@example.com"), MESSAGE).code == 250


def test_smtputf8_addresses(transport, smtp_server):
    assert transport.smtputf8
    reply = transport.send(env("renée@xn--caf-dma.example", smtputf8=True), MESSAGE)
    assert reply.code == 250
    assert "SMTPUTF8" in smtp_server.received[-1].mail_options
    assert smtp_server.received[-1].rcpt_tos == ["renée@xn--caf-dma.example"]


# ---- what a failure at each stage means -------------------------------------------------


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
def test_a_hang_up_before_the_data_is_a_lost_connection_and_nothing_was_delivered(transport, smtp_server, stage):
    assert transport.send(env("first@example.com"), MESSAGE).code == 250
    smtp_server.hang_up = (stage, 1)
    with pytest.raises(ConnectionLost) as lost:
        transport.send(env("second@example.com"), MESSAGE)
    assert not isinstance(lost.value, FateUnknown)
    assert smtp_server.recipients() == ["first@example.com"] and smtp_server.unanswered == []


@pytest.mark.parametrize("mode", list(MODES))
def test_a_hang_up_in_the_middle_of_a_large_message_is_a_lost_connection(smtp_server, mode):
    # The client is still writing when the reset comes, so it knows the final dot never left.
    server_pipelining, across = MODES[mode]
    smtp_server.pipelining = server_pipelining
    t = smtp(smtp_server, pipelining=across)
    t.open()
    big = MESSAGE + b"x" * 998 + b"\r\n"
    big = big * 20_000  # 20 MB: more than the socket buffers hold
    smtp_server.hang_up = ("mid-data", 0)
    with pytest.raises(ConnectionLost) as lost:
        t.send(env("big@example.com"), big)
    assert not isinstance(lost.value, FateUnknown)
    assert smtp_server.received == []


@pytest.mark.parametrize("how", ["silence", "hang-up", "overlong", "garbage", "cut-short"])
def test_anything_wrong_after_the_final_dot_leaves_the_fate_unknown(transport, smtp_server, how):
    """Issue: a 250 followed by 10,000 characters was taken for a lost connection and the message sent again."""
    target = "slow@example.com"
    if how == "silence":
        transport.config = SmtpConfig(host=smtp_server.host, port=smtp_server.port, security="none", timeout=0.3)
        transport.open()
        smtp_server.delay = 1.0
    elif how == "hang-up":
        smtp_server.hang_up = ("dot", 0)
    elif how == "overlong":
        smtp_server.respond_data_raw(target, b"250 " + b"x" * 10_000 + b"\r\n")
    elif how == "garbage":
        smtp_server.respond_data_raw(target, b"\x00\x01 hello there\r\n")
    else:
        smtp_server.respond_data_raw(target, b"25")  # and then nothing: the reply never completes
        transport.config = SmtpConfig(host=smtp_server.host, port=smtp_server.port, security="none", timeout=0.3)
        transport.open()
    with pytest.raises(FateUnknown):
        transport.send(env(target), MESSAGE)
    assert len(smtp_server.received + smtp_server.unanswered) <= 1


def test_a_garbled_reply_to_the_envelope_is_a_lost_connection(transport, smtp_server):
    smtp_server.respond_raw("odd@example.com", b"2" + b"5" * 5000 + b"\r\n")
    with pytest.raises(ConnectionLost) as lost:
        transport.send(env("odd@example.com"), MESSAGE)
    assert not isinstance(lost.value, FateUnknown)
    assert smtp_server.received == []


def test_a_reply_to_data_that_is_not_354_is_a_lost_connection_not_an_acceptance(transport, smtp_server):
    # One RCPT answered twice: the replies are out of step, and the one read for DATA is a 250.
    smtp_server.respond_raw("twice@example.com", b"250 2.1.5 ok\r\n250 2.0.0 queued\r\n")
    listener = Recorder()
    with pytest.raises(ConnectionLost, match="answered DATA with 250 2.0.0 queued, not 354") as lost:
        send_all(transport, ["twice@example.com"], listener)
    assert not isinstance(lost.value, FateUnknown)  # its data never left: sending it again is safe
    assert listener.replies() == {} and smtp_server.received == []


def test_a_reply_split_across_packets_and_multi_line_replies_are_read_whole(transport, smtp_server):
    smtp_server.split_replies = True
    smtp_server.respond_data_raw("multi@example.com", b"250-2.0.0 queued\r\n250-as\r\n250 T1\r\n")
    listener = Recorder()
    send_all(transport, ["a@example.com", "multi@example.com", "c@example.com"], listener)
    got = listener.replies()
    assert got["multi@example.com"] == Reply(250, "2.0.0 queued as T1", "data")
    assert got["a@example.com"].code == got["c@example.com"].code == 250
    assert smtp_server.recipients() == ["a@example.com", "multi@example.com", "c@example.com"]


def test_what_was_in_flight_when_ctrl_c_came(smtp_server):
    """Before the data: nothing was delivered. While waiting for the reply after it: unknown."""
    smtp_server.pipelining = True
    t = smtp(smtp_server)
    t.open()
    first, second = Outgoing(env("first@example.com"), MESSAGE), Outgoing(env("second@example.com"), MESSAGE)
    t.submit(first, Recorder())
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the engine's hand-over, just before the data
        t.submit(second, Recorder(interrupt="first@example.com"))
        t.collect(Recorder(interrupt="first@example.com"))
    lost = t.abandon()
    assert lost.unknown == [] and {i.envelope.recipient for i in lost.unsent} <= {"first@example.com", "second@example.com"}
    assert smtp_server.received == []

    t.open()
    smtp_server.delay = 2.0
    main = threading.main_thread().ident
    assert main == threading.get_ident()
    timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    item = Outgoing(env("third@example.com"), MESSAGE)
    try:
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C while the server holds the whole message
            t.submit(item, Recorder())
            t.drain(Recorder())
    finally:
        timer.cancel()
    lost = t.abandon()
    assert lost.unknown == [item] and lost.unsent == []


def test_an_address_that_cannot_be_encoded_raises_before_any_byte(smtp_server):
    smtp_server.smtputf8 = False
    t = smtp(smtp_server)
    t.open()
    item = Outgoing(Envelope("bücher@example.com", "ann@example.com"), MESSAGE)
    with pytest.raises(UnicodeEncodeError):
        t.submit(item, Recorder())
    lost = t.abandon()
    assert lost.unsent == [item] and item.stage == Stage.QUEUED
    assert "MAIL" not in smtp_server.commands


def test_a_declined_hand_over_hangs_up_and_nothing_is_delivered(smtp_server):
    smtp_server.pipelining = True
    t = smtp(smtp_server)
    t.open()
    listener = Recorder(refuse_data={"kept@example.com"})
    items = [Outgoing(env(r), MESSAGE) for r in ("sent@example.com", "kept@example.com")]
    for item in items:
        t.submit(item, listener)
    t.drain(listener)
    lost = t.abandon()
    assert [i.envelope.recipient for i in lost.unsent] == ["kept@example.com"] and lost.unknown == []
    assert smtp_server.recipients() == ["sent@example.com"]


# ---- one round trip per message -----------------------------------------------------------


def test_across_messages_each_write_carries_a_data_and_the_next_envelope(smtp_server):
    smtp_server.pipelining = True
    t = smtp(smtp_server)
    t.open()
    writes: list[bytes] = []
    write = t._write

    def spy(parts, data_item, env_item):
        writes.append(b"".join(parts))
        return write(parts, data_item, env_item)

    t._write = spy  # type: ignore[method-assign]
    listener = Recorder()
    send_all(t, [f"p{i}@example.com" for i in range(5)], listener)
    t.close()
    assert len(smtp_server.received) == 5
    # One write per message (its envelope with the data before it), and the last data alone.
    assert len(writes) == 6
    assert writes[0].startswith(b"MAIL FROM:<news@example.com>\r\nRCPT TO:<p0@example.com>\r\nDATA\r\n")
    for i in range(1, 5):
        assert writes[i].endswith(b"\r\n.\r\nMAIL FROM:<news@example.com>\r\nRCPT TO:<p%d@example.com>\r\nDATA\r\n" % i)
    assert writes[5].endswith(b"last\r\n.\r\n")


# ---- DSN (RFC 3461) ---------------------------------------------------------------------


def test_dsn_parameters_go_out_only_when_offered(smtp_server):
    smtp_server.dsn = True
    t = smtp(smtp_server)
    t.open()
    assert t.send(Envelope("news@example.com", "a+b@example.com", envid="k3y-12"), MESSAGE).code == 250
    [got] = smtp_server.received
    assert got.mail_params == {"RET": "HDRS", "ENVID": "k3y-12"}
    assert got.rcpt_params == [{"NOTIFY": "FAILURE,DELAY", "ORCPT": "rfc822;a+2Bb@example.com"}]
    t.close()
    smtp_server.dsn = False
    t.open()
    assert t.send(Envelope("news@example.com", "c@example.com", envid="k3y-13"), MESSAGE).code == 250
    assert smtp_server.received[-1].mail_params == {} and smtp_server.received[-1].rcpt_params == [{}]


def test_xtext_and_orcpt():
    assert xtext("k3y-12") == "k3y-12"
    assert xtext("a+b=c d\x01é") == "a+2Bb+3Dc+20d+01+C3+A9"
    assert orcpt("ann@example.com") == "rfc822;ann@example.com"
    assert orcpt("renée+x@xn--caf-dma.example") == "utf-8;renée\\x{2B}x@xn--caf-dma.example"


# ---- addresses, settings, dry-run -----------------------------------------------------------


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


def test_a_421_greeting_is_server_busy(smtp_server):
    from mailer.transport import ServerBusy

    smtp_server.max_connections = 1
    first = smtp(smtp_server)
    first.open()
    second = smtp(smtp_server)
    with pytest.raises(ServerBusy, match="421 4.7.0 Too many concurrent"):
        second.open()
    first.close()


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


def test_dot_stuffing_and_line_ends():
    from mailer.transport import dot_stuff

    assert dot_stuff(b"a\r\n.b\r\n..c\r\n") == b"a\r\n..b\r\n...c\r\n"
    assert dot_stuff(b".x\nb\n.y") == b"..x\r\nb\r\n..y\r\n"  # bare LF becomes CRLF
    assert dot_stuff(b"abc") == b"abc\r\n"
