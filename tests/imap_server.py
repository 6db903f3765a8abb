"""A real IMAP server for the inbox tests: pymap's in-memory backend on 127.0.0.1.

pymap (pure Python, from PyPI) speaks IMAP4rev1 with UIDPLUS and MOVE. It runs in a
background thread of the test process on its own port, with the test certificate of
tests/data/tls: implicit TLS (`tls="ssl"`, like port 993) or STARTTLS (`tls="starttls"`).
mailer talks to it over TCP with imaplib, verifying the certificate against the test CA
once SSL_CERT_FILE points at it (the `imap_server` fixture does that).

    server.append(raw_bytes)           put a message into INBOX (returns nothing)
    server.uids("INBOX")               the UIDs in a folder
    server.flags("INBOX")              {uid: set of flags}, read without changing them
    server.create("Processed")         make a folder
    server.move = False                the next server announces no MOVE extension

Its helpers log in as the same user over their own connection, as a second mail
client would.
"""

from __future__ import annotations

import asyncio
import imaplib
import re
import socket
import ssl
import threading
from argparse import Namespace
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from proxyprotocol.reader import ProxyProtocolReader
from pymap.backend.dict import Config as DictConfig
from pymap.backend.dict import DictBackend, Login
from pymap.imap import IMAPServer
from pysasl.hashing import BuiltinHash

TLS_DIR = Path(__file__).parent / "data" / "tls"
CA_FILE = TLS_DIR / "ca.pem"
USER = "practice@example.com"
PASSWORD = "correct horse battery"


class _NoMoveConfig(DictConfig):
    @property
    def login_capability(self):
        return [c for c in super().login_capability if c != b"MOVE"]


class ImapServer:
    """An IMAP server on 127.0.0.1 in a thread; see the module docstring."""

    host = "127.0.0.1"
    user = USER
    password = PASSWORD
    ca_file = CA_FILE

    def __init__(self, tls: str = "ssl", move: bool = True):
        if tls not in ("ssl", "starttls"):
            raise ValueError(f"tls must be ssl or starttls, not {tls!r}")
        self.tls = tls
        self.move = move
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stack: AsyncExitStack | None = None

    @classmethod
    def start(cls, tls: str = "ssl", move: bool = True) -> ImapServer:
        server = cls(tls, move)
        server._start()
        return server

    def __enter__(self) -> ImapServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(sock, ready, errors), daemon=True,
                                        name=f"imap-server-{self.port}")
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]

    def _serve(self, sock: socket.socket, ready: threading.Event, errors: list) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._listen(sock))
        except BaseException as error:  # pragma: no cover - only if pymap cannot start
            errors.append(error)
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _listen(self, sock: socket.socket) -> None:
        args = Namespace(
            host=self.host, port=self.port, debug=False, cert=None, key=None,
            tls=self.tls == "starttls", passlib_cfg=None, proxy_protocol=None, inherited_sockets=None,
            demo_data=False, demo_user=self.user, demo_password=self.password,
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(TLS_DIR / "server.pem", TLS_DIR / "server.key")
        config_type = DictConfig if self.move else _NoMoveConfig
        # No DNS blocklist lookups (no network in tests), no pause after a wrong password,
        # and a cheap password hash (the default 500,000 rounds cost 0.3 s per login).
        config = config_type.from_args(
            args, ssl_context=context, reject_dnsbl=False, invalid_user_sleep=0.0,
            hash_context=BuiltinHash(rounds=1000),
        )
        config.apply_context()
        login = Login(config)
        await DictBackend._add_demo_user(config, login)
        backend = DictBackend(login, config)
        handler = ProxyProtocolReader(config.proxy_protocol).get_callback(IMAPServer(backend.login, config))
        self._stack = AsyncExitStack()
        server = await asyncio.start_server(handler, sock=sock, ssl=context if self.tls == "ssl" else None)
        await self._stack.enter_async_context(server)

    def stop(self) -> None:
        """Close the listener and end the thread. Idempotent."""
        if self._thread is None:
            return
        loop = self._loop
        assert loop is not None

        async def shutdown() -> None:
            if self._stack is not None:
                await self._stack.aclose()
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    # -- a second mail client, for putting messages in and looking at them --------------

    def client(self) -> imaplib.IMAP4:
        """A logged-in imaplib connection that trusts the test CA."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.tls == "ssl":
            imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=context, timeout=10)
        else:
            imap = imaplib.IMAP4(self.host, self.port, timeout=10)
            imap.starttls(ssl_context=context)
        imap.login(self.user, self.password)
        return imap

    def append(self, data: bytes, folder: str = "INBOX", flags: str = "", when: str | None = None) -> None:
        """APPEND one message (CRLF line ends, as IMAP stores them)."""
        data = re.sub(rb"\r?\n", b"\r\n", data)
        imap = self.client()
        try:
            typ, reply = imap.append(f'"{folder}"', flags or None, when and imaplib.Time2Internaldate(when), data)
            assert typ == "OK", reply
        finally:
            imap.logout()

    def create(self, folder: str) -> None:
        imap = self.client()
        try:
            typ, reply = imap.create(f'"{folder}"')
            assert typ == "OK", reply
        finally:
            imap.logout()

    def uids(self, folder: str = "INBOX") -> list[int]:
        imap = self.client()
        try:
            typ, _ = imap.select(f'"{folder}"', readonly=True)
            assert typ == "OK"
            typ, data = imap.uid("SEARCH", "ALL")
            return sorted(int(u) for u in data[0].split())
        finally:
            imap.logout()

    def flags(self, folder: str = "INBOX") -> dict[int, set[str]]:
        """{uid: flags} of every message, read from a read-only EXAMINE."""
        imap = self.client()
        try:
            typ, _ = imap.select(f'"{folder}"', readonly=True)
            assert typ == "OK"
            typ, data = imap.uid("FETCH", "1:*", "(FLAGS)")
            found = {}
            for line in data:
                if not line:
                    continue
                text = line.decode() if isinstance(line, bytes) else line[0].decode()
                uid = re.search(r"UID (\d+)", text)
                flags = re.search(r"FLAGS \(([^)]*)\)", text)
                if uid:
                    found[int(uid.group(1))] = set(flags.group(1).split()) if flags else set()
            return found
        finally:
            imap.logout()
