"""A real SMTP server for the send tests, that misbehaves on request.

An `aiosmtpd` server on 127.0.0.1 (a port of its own, so tests run in parallel), served
from a background thread of the test process. `mailer` talks to it over TCP like to any
relay, in-process or from a subprocess. Every test gets a fresh one from the
`smtp_server` fixture in conftest.py; `SmtpServer.start(**config)` starts another.

    def test_greylisted_recipient_is_retried(smtp_server, mailer):
        smtp_server.respond("ana@example.com", "451 4.7.1 Greylisted, try again later")
        ...  # point [smtp] at smtp_server.host / smtp_server.port, run `mailer send`
        assert smtp_server.recipients() == ["ana@example.com", "ben@example.com"]
        assert smtp_server.received[0].message["Subject"] == "December specials"

What it records (read them after the client has had its reply; each is appended before
the server answers, so whatever a client has seen is already there):
    received       messages the server answered 250 to DATA, in order (`Received`)
    unanswered     messages whose data the server took in full but never answered
                   (a drop during DATA, or a client that gave up during `delay`)
    commands       every SMTP verb dispatched, all connections, in order
    auth_attempts  (username, password) of every AUTH, as received (decoded as UTF-8)
    connections    TCP connections accepted so far (numbered from 1)
    errors         exceptions inside the server itself; the fixture fails the test on any

How it behaves (plain attributes; set them before or between runs, or while a client is
connected: each is read when the next connection or command needs it):
    tls                   "none" | "starttls" | "ssl"; the same words as mailer's
                          [smtp] security. Read per connection.
    auth                  (username, password) to require AUTH PLAIN/LOGIN, or None (then
                          AUTH is neither offered nor accepted)
    require_tls_for_auth  with tls="starttls": AUTH is offered only after STARTTLS
    smtputf8              offer SMTPUTF8
    pipelining            offer PIPELINING (clients may send MAIL, RCPT and DATA at once)
    drop_after            drop the connection at the next MAIL once this many messages
                          have been received in total; fires once, then is None again
    drop_during_data_after  drop it after taking the next message's data, before the
                          reply (the "fate unknown" case); fires once
    hang_up               (stage, after): hang up once `after` messages have been received
                          in total, at "mail", "rcpt", "data" (just after the 354),
                          "mid-data" (after reading part of the data) or "dot" (the
                          whole data taken, before the reply); fires once
    delay                 seconds to wait before answering DATA
    hang                  accept connections but never say a word
    split_replies         write each reply in two pieces, a few ms apart (two packets)
    messages_per_connection, max_recipients_per_connection
                          after that many on one connection: 421 and close
    max_connections       connections open at once; one more is greeted with 421 4.7.0
                          "too many connections" and closed
plus per-recipient replies queued with `respond()` / `respond_data()` (or raw bytes,
garbage included, with `respond_raw()` / `respond_data_raw()`); `reset()` clears the
records and the rules (not tls/auth/smtputf8/pipelining/dsn).

Setup: `dsn` offers DSN (RFC 3461) and accepts RET, ENVID, NOTIFY and ORCPT; the
parameters of MAIL and RCPT are recorded as the client sent them (`mail_params`,
`rcpt_params`).

Helpers: `recipients()` (every accepted recipient, flattened: assert each exactly once),
`wait_for_messages(n)` (for a `mailer` subprocess), `smtp_settings()` (the [smtp] keys
pointing here), `tls_env()` (SSL_CERT_FILE for a subprocess).

Seen from smtplib: a dropped connection is SMTPServerDisconnected; so is a read timeout
(hang, or a delay longer than the client's timeout): "Connection unexpectedly closed:
timed out", with the TimeoutError only as its __context__.

The test CA is `CA_FILE` (also `SmtpServer.ca_file`): trust it with
`ssl.create_default_context(cafile=CA_FILE)`, or set SSL_CERT_FILE to it (`tls_env()`)
so that mailer's own `ssl.create_default_context()` verifies the server for real.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import collections
import email.message
import email.policy
import functools
import itertools
import logging
import os
import re
import socket
import ssl
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from pathlib import Path
from typing import Any, NoReturn

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, TLSSetupException

__all__ = ["CA_FILE", "Received", "SmtpServer"]

TLS_DIR = Path(__file__).parent / "data" / "tls"
CA_FILE = TLS_DIR / "ca.pem"
"""The test CA that signed the server certificate (for localhost, 127.0.0.1 and ::1)."""

TLS_MODES = ("none", "starttls", "ssl")
HOSTNAME = "localhost"  # given explicitly: aiosmtpd would otherwise call socket.getfqdn() per connection

log = logging.getLogger(__name__)


def _not_login_data_deprecation(record: logging.LogRecord) -> bool:
    # aiosmtpd's own smtp_AUTH sets the deprecated Session.login_data on every successful
    # login and logs a warning about it each time; it would only clutter failure reports.
    return not record.getMessage().startswith("Session.login_data is deprecated")


logging.getLogger("mail.log").addFilter(_not_login_data_deprecation)


@dataclass
class Received:
    """One message as the server got it."""

    mail_from: str
    rcpt_tos: list[str]  # the recipients the server accepted, in RCPT order
    data: bytes  # exactly as received, CRLF line ends, dot-stuffing undone
    mail_options: list[str]  # upper-cased by aiosmtpd, e.g. ["SIZE=1234", "SMTPUTF8"]
    rcpt_options: list[str]
    connection: int  # which connection (1-based) carried it
    mail_params: dict[str, str] = field(default_factory=dict)  # MAIL FROM parameters as sent (case kept)
    rcpt_params: list[dict[str, str]] = field(default_factory=list)  # per accepted recipient, as sent
    reply: str = ""  # what the server answered to DATA ("" for an unanswered message)
    tls: bool = False  # it came over TLS (STARTTLS or implicit)
    username: str | None = None  # who had logged in with AUTH on that connection

    @property
    def message(self) -> email.message.EmailMessage:
        """The data parsed with the modern email policy."""
        return BytesParser(policy=email.policy.default).parsebytes(self.data)


_REPLY = re.compile(r"^[2-5]\d\d( |$)")

_RULE_DEFAULTS: dict[str, Any] = {
    "drop_after": None,
    "drop_during_data_after": None,
    "hang_up": None,
    "delay": 0.0,
    "hang": False,
    "split_replies": False,
    "messages_per_connection": None,
    "max_recipients_per_connection": None,
    "max_connections": None,
}
_SETUP_DEFAULTS: dict[str, Any] = {
    "tls": "none",
    "auth": None,
    "require_tls_for_auth": True,
    "smtputf8": True,
    "pipelining": False,
    "dsn": False,
}
HANG_UP_STAGES = ("mail", "rcpt", "data", "mid-data", "dot")
DSN_PARAMS = {"RET", "ENVID", "NOTIFY", "ORCPT"}


class SmtpServer:
    """A controllable SMTP server on 127.0.0.1; see the module docstring."""

    host: str = "127.0.0.1"
    ca_file: Path = CA_FILE

    # What the server does (defaults; instances set their own in __init__).
    tls: str = "none"
    auth: tuple[str, str] | None = None
    require_tls_for_auth: bool = True
    smtputf8: bool = True
    pipelining: bool = False  # advertise PIPELINING (RFC 2920); commands are still read in order
    dsn: bool = False  # advertise DSN (RFC 3461) and accept its parameters
    drop_after: int | None = None
    drop_during_data_after: int | None = None
    hang_up: tuple[str, int] | None = None
    delay: float = 0.0
    hang: bool = False
    split_replies: bool = False
    messages_per_connection: int | None = None
    max_recipients_per_connection: int | None = None
    max_connections: int | None = None

    def __init__(self, **config: Any) -> None:
        self.port = 0
        self.received: list[Received] = []
        self.unanswered: list[Received] = []
        self.commands: list[str] = []
        self.auth_attempts: list[tuple[str, str]] = []
        self.auth_mechanisms: list[str] | None = None  # offer only these AUTH mechanisms (None: PLAIN and LOGIN)
        self.connections = 0
        self.open_connections = 0  # at this moment
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._rcpt_replies: dict[str, collections.deque[str]] = {}
        self._data_replies: dict[str, collections.deque[str]] = {}
        self._queue_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        for name, value in {**_SETUP_DEFAULTS, **_RULE_DEFAULTS}.items():
            setattr(self, name, value)
        self.configure(**config)

    # ---- life cycle ---------------------------------------------------------------

    @classmethod
    def start(cls, **config: Any) -> SmtpServer:
        """Start a server with this configuration; stop it with `stop()` or a `with` block."""
        server = cls(**config)
        server._start()
        return server

    def __enter__(self) -> SmtpServer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if exc_type is None:
            self.check()

    def check(self) -> None:
        """Fail if the server itself raised while handling a command (a harness bug)."""
        if self.errors:
            raise AssertionError(f"the test SMTP server raised: {self.errors!r}") from self.errors[0]

    def _start(self) -> None:
        # Bound and listening before the thread starts, so the port is known at once
        # and a client that connects early just waits in the backlog.
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say
        # so (socket.create_server's say 0), and without it aiosmtpd's line-by-line
        # EHLO reply meets Nagle and delayed ACK, which costs 40 ms per EHLO.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.bind((self.host, 0))
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = _Outcome()
        self._thread = threading.Thread(
            target=self._serve, args=(sock, ready), name=f"smtp-server-{self.port}", daemon=True
        )
        self._thread.start()
        ready.wait()

    def _serve(self, sock: socket.socket, ready: _Outcome) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            self._listener = loop.run_until_complete(loop.create_server(self._accept, sock=sock))
        except BaseException as error:  # pragma: no cover - only if the loop cannot start
            sock.close()
            loop.close()
            ready.fail(error)
            return
        loop.call_soon(ready.succeed)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self) -> None:
        """Close the listener and every open connection, and end the thread. Idempotent."""
        if self._thread is None:
            return
        loop = self._loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    async def _shutdown(self) -> None:
        assert self._listener is not None
        self._listener.close()
        for transport in list(self._transports):
            transport.abort()
        # connection_lost callbacks are scheduled with call_soon; give them their turn
        for _ in range(3):
            await asyncio.sleep(0)
        me = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._listener.wait_closed()

    # ---- configuration ------------------------------------------------------------

    def configure(self, **config: Any) -> None:
        """Set several behaviour attributes at once (unknown names are an error)."""
        for name, value in config.items():
            if name not in _SETUP_DEFAULTS and name not in _RULE_DEFAULTS:
                raise TypeError(f"SmtpServer has no setting {name!r}")
            setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "tls" and value not in TLS_MODES:
            raise ValueError(f"tls must be one of {TLS_MODES}, not {value!r}")
        if name == "auth" and value is not None:
            username, password = value
            value = (username, password)
        if name == "hang_up" and value is not None:
            stage, after = value
            if stage not in HANG_UP_STAGES:
                raise ValueError(f"hang_up stage must be one of {HANG_UP_STAGES}, not {stage!r}")
            value = (stage, int(after))
        super().__setattr__(name, value)

    def respond(self, recipient: str, *replies: str) -> None:
        """Queue replies to RCPT TO of `recipient`, used one per RCPT; then 250 again.

        The address is matched case-insensitively as it appears on the wire. A reply
        starting with 421 closes the connection after it is sent. Calls add up.
        """
        self._queue(self._rcpt_replies, recipient, replies)

    def respond_data(self, recipient: str, *replies: str) -> None:
        """Queue replies to the end of DATA of messages to `recipient`; then 250 again.

        Each accepted message takes one queued reply from every one of its recipients
        that has some; the first of them (in RCPT order) is the answer. A 2xx reply
        records the message in `received`, anything else does not. A reply starting
        with 421 closes the connection after it is sent.
        """
        self._queue(self._data_replies, recipient, replies)

    def respond_raw(self, recipient: str, *raw: bytes) -> None:
        """Queue raw bytes as replies to RCPT TO of `recipient`, written exactly as given
        (no CRLF added): garbage, an overlong line, a reply cut short. A raw reply that
        starts with 2 accepts the recipient."""
        self._queue_raw(self._rcpt_replies, recipient, raw)

    def respond_data_raw(self, recipient: str, *raw: bytes) -> None:
        """Queue raw bytes as the reply to the end of DATA, like `respond_data`; one that
        starts with 2 records the message in `received` (the server has taken it)."""
        self._queue_raw(self._data_replies, recipient, raw)

    def _queue_raw(self, table: dict, recipient: str, raw: tuple[bytes, ...]) -> None:
        if not raw or not all(isinstance(r, bytes) for r in raw):
            raise ValueError("give at least one reply, as bytes")
        with self._lock:
            table.setdefault(recipient.casefold(), collections.deque()).extend(_RawReply(r) for r in raw)

    def _take_hang_up(self, *stages: str) -> str | None:
        """The hang-up rule's stage if it is one of these and due now (it then fires: cleared)."""
        with self._lock:
            rule = self.hang_up
            if rule is None or rule[0] not in stages or len(self.received) < rule[1]:
                return None
            self.hang_up = None
            return rule[0]

    def _queue(self, table: dict[str, collections.deque[str]], recipient: str, replies: tuple[str, ...]) -> None:
        if not replies:
            raise ValueError("give at least one reply, e.g. '451 4.7.1 Try again later'")
        for reply in replies:
            if not _REPLY.match(reply):
                raise ValueError(f"not a one-line SMTP reply: {reply!r}")
        with self._lock:
            table.setdefault(recipient.casefold(), collections.deque()).extend(replies)

    def _next_reply(self, table: dict[str, collections.deque[str]], recipient: str) -> str | None:
        with self._lock:
            queue = table.get(recipient.casefold())
            if not queue:
                return None
            reply = queue.popleft()
            if not queue:
                del table[recipient.casefold()]
            return reply

    def reset(self) -> None:
        """Forget what was recorded and clear the rules (queued replies, drops, delay,
        hang, per-connection limits). tls, auth, require_tls_for_auth and smtputf8 stay:
        they are what the server is, not how it misbehaves. Call it between client runs,
        not while a client is connected."""
        with self._lock:
            self.received.clear()
            self.unanswered.clear()
            self.commands.clear()
            self.auth_attempts.clear()
            self.errors.clear()
            self.connections = 0
            self._rcpt_replies.clear()
            self._data_replies.clear()
            for name, value in _RULE_DEFAULTS.items():
                setattr(self, name, value)

    # ---- reading what happened ----------------------------------------------------

    def recipients(self) -> list[str]:
        """Every recipient of every received message, flattened, in order."""
        return [rcpt for message in list(self.received) for rcpt in message.rcpt_tos]

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least `count` messages were received (for subprocess tests)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise TimeoutError(f"{len(self.received)} of {count} messages received after {timeout}s")
            return list(self.received)

    def smtp_settings(self) -> dict[str, Any]:
        """The [smtp] keys of mailer.toml that point at this server."""
        return {
            "host": self.host,
            "port": self.port,
            "security": self.tls,
            "username": self.auth[0] if self.auth else "",
        }

    @staticmethod
    def tls_env() -> dict[str, str]:
        """Environment that makes ssl.create_default_context() trust the test CA."""
        return {"SSL_CERT_FILE": str(CA_FILE)}

    def __repr__(self) -> str:
        state = "running" if self._thread else "stopped"
        return f"<SmtpServer {self.host}:{self.port} tls={self.tls} {state}>"

    # ---- serving (everything below runs on the server's event loop) -------------------

    def _accept(self) -> asyncio.BaseProtocol:
        with self._lock:
            self.connections += 1
            number = self.connections
            busy = self.max_connections is not None and self.open_connections >= self.max_connections
            if not busy and not self.hang:
                self.open_connections += 1  # here, not in connection_made: several may be accepted at once
        if self.hang:
            return _Silent(self._transports)
        if busy:
            return _Busy(self._transports)
        tls = self.tls
        connection = _Connection(self, number, tls)
        if tls == "ssl":
            return _ImplicitTls(self._transports, self._loop, connection, _server_context(), None, server_side=True)
        return connection

    def _record(self, received: Received) -> None:
        with self._changed:
            self.received.append(received)
            self._changed.notify_all()

    def _authenticate(self, conn, session, envelope, mechanism: str, auth_data: LoginPassword) -> AuthResult:
        username = auth_data.login.decode("utf-8", "surrogateescape")
        password = auth_data.password.decode("utf-8", "surrogateescape")
        self.auth_attempts.append((username, password))
        if self.auth is not None and (username, password) == self.auth:
            return AuthResult(success=True, auth_data=auth_data)
        # handled=False without a message: aiosmtpd answers 535 5.7.8 ... credentials invalid
        return AuthResult(success=False, handled=False)


@functools.cache
def _server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS_DIR / "server.pem", TLS_DIR / "server.key")
    return context


class _Outcome:
    """Start-up result handed from the server thread to the starting thread."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._error: BaseException | None = None

    def succeed(self) -> None:
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    def wait(self) -> None:
        if not self._done.wait(10):
            raise TimeoutError("the test SMTP server did not start within 10 s")
        if self._error is not None:
            raise self._error


class _Verbatim(str):
    """A reply chosen by the test: sent exactly as given."""


class _RawReply(bytes):
    """Raw bytes chosen by the test, written as they are (no CRLF added)."""


# aiosmtpd's own error replies mostly lack RFC 3463 codes; add the fitting one.
_ENHANCED = {
    "421": "4.7.0", "454": "4.7.0",
    "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
    "530": "5.7.0", "552": "5.3.4", "553": "5.1.3", "554": "5.7.0", "555": "5.5.4",
}
_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}\b")
_BARE_ERROR = re.compile(r"^[45]\d\d[ -]")


class _Connection(SMTP):
    """One client connection: aiosmtpd's SMTP with our hooks and a few per-connection counters."""

    def __init__(self, server: SmtpServer, number: int, tls: str) -> None:
        # aiosmtpd keeps command_size_limits on the class, shared by every connection of
        # every server in the process (and grown by each EHLO); keep ours to ourselves.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(
            _Hooks(server),
            hostname=HOSTNAME,
            ident="mailer test SMTP server",
            # aiosmtpd's own SMTPUTF8 switch answers 500/501; we want 553/555 and decide
            # in the hooks, so it stays on and only the EHLO keyword comes and goes.
            enable_SMTPUTF8=True,
            tls_context=_server_context() if tls == "starttls" else None,
            # Under implicit TLS aiosmtpd does not know it is encrypted (it only tracks
            # STARTTLS), so it would refuse AUTH with 538 unless told not to check.
            auth_require_tls=tls == "starttls" and server.require_tls_for_auth,
            authenticator=server._authenticate,
            auth_exclude_mechanism=[m for m in ("PLAIN", "LOGIN") if m not in (server.auth_mechanisms or ("PLAIN", "LOGIN"))],
            loop=server._loop,
        )
        # Set after __init__: passed in, auth_required without auth_require_tls makes
        # aiosmtpd emit a UserWarning on every connection (tls="none"/"ssl" with auth).
        self._auth_required = server.auth is not None
        self.test_server = server
        self.number = number
        self.accepted_messages = 0  # on this connection
        self.accepted_recipients = 0
        self._smtp_methods = {verb: _recorded(server.commands, verb, method) for verb, method in self._smtp_methods.items()}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.test_server._transports.add(transport)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        with self.test_server._lock:
            self.test_server.open_connections -= 1
        super().connection_lost(error)

    def _getparams(self, params):  # type: ignore[override]
        # With dsn on, DSN's parameters are taken (aiosmtpd knows none of them and would answer 555).
        result = super()._getparams(params)
        if result is not None and self.test_server.dsn:
            for name in DSN_PARAMS:
                result.pop(name, None)
        return result

    async def smtp_MAIL(self, arg: str | None) -> None:
        self.raw_mail_params = _params(arg)
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        self.raw_rcpt_params = _params(arg)
        await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str | None) -> None:
        stage = None
        if self.envelope is not None and self.envelope.rcpt_tos and not arg:
            stage = self.test_server._take_hang_up("data", "mid-data")
        if stage is None:
            await super().smtp_DATA(arg)
            return
        if stage == "data":
            # The 354 and the FIN back to back, the way a server that crashes right after it looks.
            # Corked, so that both leave in one segment: the client sees the hang-up with the 354.
            assert self.transport is not None
            sock = self.transport.get_extra_info("socket")
            cork = getattr(socket, "TCP_CORK", None)
            if sock is not None and cork is not None and not self.encrypted:
                sock.setsockopt(socket.IPPROTO_TCP, cork, 1)
                os.write(sock.fileno(), b"354 End data with <CR><LF>.<CR><LF>\r\n")
                sock.shutdown(socket.SHUT_WR)
                self.hang_up()
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        if stage == "mid-data":
            await self._reader.readexactly(64)  # some of the data, far from its end
            assert self.transport is not None
            self.transport.abort()  # a reset, unread data and all
            raise asyncio.CancelledError
        self.hang_up()

    @property
    def encrypted(self) -> bool:
        return self.transport is not None and self.transport.get_extra_info("ssl_object") is not None

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, _RawReply):
            self._writer.write(bytes(status))
            await self._writer.drain()
            return
        if self.test_server.split_replies:
            data = (status.encode("utf-8") if isinstance(status, str) else status) + b"\r\n"
            half = max(1, len(data) // 2)
            self._writer.write(data[:half])
            await self._writer.drain()
            await asyncio.sleep(0.005)  # two packets: the client must put the reply together
            self._writer.write(data[half:])
            await self._writer.drain()
            return
        if (
            isinstance(status, str)
            and not isinstance(status, _Verbatim)
            and _BARE_ERROR.match(status)
            and not _HAS_ENHANCED.match(status)
        ):
            code = status[:3]
            status = f"{status[:4]}{_ENHANCED.get(code, code[0] + '.0.0')} {status[4:]}"
        await super().push(status)

    def hang_up(self) -> NoReturn:
        """Close the connection now, without a reply, and end this session's task."""
        assert self.transport is not None
        self.transport.close()
        # aiosmtpd's command loop treats CancelledError as "connection gone" and exits quietly.
        raise asyncio.CancelledError

    async def reply_and_hang_up(self, reply: str) -> NoReturn:
        await self.push(reply)
        self.hang_up()


def _recorded(commands: list[str], verb: str, method: Callable) -> Callable:
    @functools.wraps(method)  # keeps the __smtp_syntax__ attributes HELP looks for
    async def record_then_run(arg: str | None) -> None:
        commands.append(verb)
        await method(arg)

    return record_then_run


class _Hooks:
    """aiosmtpd handler: each handle_VERB gets (connection, session, envelope, *args)."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_EHLO(self, conn: _Connection, session, envelope, hostname: str, responses: list[str]) -> list[str]:
        # With an EHLO hook aiosmtpd leaves remembering the greeting to us; without it,
        # MAIL would get "503 Error: send HELO first".
        session.host_name = hostname
        server = self.server
        dropped = set()
        if not server.smtputf8:
            dropped.add("SMTPUTF8")
        if server.auth is None:
            dropped.add("AUTH")
        lines = [line for line in responses if line[4:].split(" ")[0].upper() not in dropped]
        lines.insert(-1, "250-ENHANCEDSTATUSCODES")
        if server.pipelining:
            lines.insert(-1, "250-PIPELINING")
        if server.dsn:
            lines.insert(-1, "250-DSN")
        return lines

    async def handle_AUTH(self, conn: _Connection, session, envelope, args: list[str]) -> Any:
        if self.server.auth is None:
            return "502 5.5.1 AUTH not supported"
        return MISSING  # aiosmtpd runs the mechanism and calls SmtpServer._authenticate

    async def handle_MAIL(self, conn: _Connection, session, envelope, address: str, mail_options: list[str]) -> str:
        server = self.server
        if server.drop_after is not None and len(server.received) >= server.drop_after:
            server.drop_after = None
            conn.hang_up()
        if server._take_hang_up("mail"):
            conn.hang_up()
        limit = server.messages_per_connection
        if limit is not None and conn.accepted_messages >= limit:
            await conn.reply_and_hang_up("421 4.7.0 Too many messages, closing connection")
        if not server.smtputf8 and "SMTPUTF8" in mail_options:
            return "555 5.5.4 SMTPUTF8 is not supported here"
        if not address.isascii() and not envelope.smtp_utf8:
            return "553 5.6.7 Non-ASCII address not permitted without SMTPUTF8"
        # A hook's reply replaces aiosmtpd's bookkeeping, so record the sender ourselves.
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.mail_params = getattr(conn, "raw_mail_params", {})
        envelope.rcpt_params = []
        return "250 2.1.0 OK"

    async def handle_RCPT(self, conn: _Connection, session, envelope, address: str, rcpt_options: list[str]) -> str:
        server = self.server
        if server._take_hang_up("rcpt"):
            conn.hang_up()
        limit = server.max_recipients_per_connection
        if limit is not None and conn.accepted_recipients >= limit:
            await conn.reply_and_hang_up("421 4.7.0 Too many recipients, closing connection")
        if not address.isascii() and not envelope.smtp_utf8:
            return "553 5.6.7 Non-ASCII address not permitted without SMTPUTF8"
        reply = server._next_reply(server._rcpt_replies, address)
        if reply is None:
            reply = "250 2.1.5 OK"
        if isinstance(reply, _RawReply):
            if reply.startswith(b"2"):
                envelope.rcpt_tos.append(address)
                envelope.rcpt_params.append(getattr(conn, "raw_rcpt_params", {}))
            return reply  # type: ignore[return-value]
        reply = _Verbatim(reply)
        if reply.startswith("421"):
            await conn.reply_and_hang_up(reply)
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            envelope.rcpt_params.append(getattr(conn, "raw_rcpt_params", {}))
            conn.accepted_recipients += 1
        return reply

    async def handle_DATA(self, conn: _Connection, session, envelope) -> str:
        server = self.server
        message = Received(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content),
            mail_options=list(envelope.mail_options),
            rcpt_options=list(envelope.rcpt_options),
            connection=conn.number,
            tls=conn.encrypted,
            username=_username(session),
            mail_params=dict(getattr(envelope, "mail_params", {})),
            rcpt_params=list(getattr(envelope, "rcpt_params", [])),
        )
        if server.drop_during_data_after is not None and len(server.received) >= server.drop_during_data_after:
            server.drop_during_data_after = None
            server.unanswered.append(message)
            conn.hang_up()
        if server._take_hang_up("dot"):
            server.unanswered.append(message)
            conn.hang_up()
        if server.delay:
            try:
                await asyncio.sleep(server.delay)
            except asyncio.CancelledError:  # the client gave up waiting, or the server stops
                server.unanswered.append(message)
                raise
        replies = [server._next_reply(server._data_replies, rcpt) for rcpt in envelope.rcpt_tos]
        reply = next((r for r in replies if r is not None), None)
        if isinstance(reply, _RawReply):
            if reply.startswith(b"2"):  # garbage after a 2: the server has the message
                message.reply = reply.decode("utf-8", "replace")[:60]
                conn.accepted_messages += 1
                server._record(message)
            return reply  # type: ignore[return-value]
        if reply is None:
            reply = f"250 2.0.0 OK: queued as T{next(server._queue_ids):05d}"
        reply = _Verbatim(reply)
        if reply.startswith("2"):
            message.reply = reply
            conn.accepted_messages += 1
            server._record(message)
        elif reply.startswith("421"):
            await conn.reply_and_hang_up(reply)
        return reply

    async def handle_RSET(self, conn: _Connection, session, envelope) -> str:
        return "250 2.0.0 OK"

    async def handle_NOOP(self, conn: _Connection, session, envelope, arg: str | None) -> str:
        return "250 2.0.0 OK"

    async def handle_QUIT(self, conn: _Connection, session, envelope) -> str:
        return "221 2.0.0 Bye"

    async def handle_exception(self, error: Exception) -> str:
        # A client failing the STARTTLS handshake is the client's business, not a bug here.
        if not isinstance(error, TLSSetupException):
            log.error("test SMTP server error", exc_info=error)
            self.server.errors.append(error)
        return f"451 4.3.0 Test server error: {type(error).__name__}: {error}"


def _username(session) -> str | None:
    data = session.auth_data
    if isinstance(data, LoginPassword):
        return data.login.decode("utf-8", "surrogateescape")
    return None


def _params(arg: str | None) -> dict[str, str]:
    """The parameters after the address of MAIL FROM / RCPT TO, as sent (names upper-cased)."""
    if not arg or ">" not in arg:
        return {}
    out = {}
    for word in arg.rsplit(">", 1)[1].split():
        name, _, value = word.partition("=")
        out[name.upper()] = value
    return out


class _Busy(asyncio.Protocol):
    """max_connections reached: 421 at the greeting, then close."""

    def __init__(self, transports: weakref.WeakSet) -> None:
        self._transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transports.add(transport)
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"421 4.7.0 Too many concurrent SMTP connections from this IP, try again later\r\n")
        transport.close()


class _Silent(asyncio.Protocol):
    """hang=True: take the connection and never answer."""

    def __init__(self, transports: weakref.WeakSet) -> None:
        self._transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transports.add(transport)


class _ImplicitTls(asyncio.sslproto.SSLProtocol):
    """tls="ssl", chosen per connection: what loop.create_server(ssl=...) would build,
    so that a test can switch a running server between plain and implicit TLS."""

    def __init__(self, transports: weakref.WeakSet, *args: Any, **kwargs: Any) -> None:
        self._transports = transports
        super().__init__(*args, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transports.add(transport)
        super().connection_made(transport)
