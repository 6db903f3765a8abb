"""A real DNS server for the sender-authentication tests: TXT records from a dict.

A `dnslib` server on 127.0.0.1, on a random port of its own (UDP, and TCP on the same
port so that a client falling back to TCP finds it), answering from a background thread.
`mailer` reaches it through dnspython exactly as it would reach a real resolver, so the
tests exercise the real DNS path: the wire format, NXDOMAIN, empty answers, long TXT
records split into strings. Nothing ever leaves the machine.

    def test_spf(dns_server):
        dns_server.txt["example.com"] = "v=spf1 include:_spf.google.com ~all"
        resolver = dns_server.resolver()          # a dns.resolver.Resolver pointed here
        ...                                       # or `--nameserver dns_server.address`

What it serves:
    txt        {name: str | list[str]}: the TXT record(s) of a name; a record longer than
               255 bytes is split into several strings, as DNS requires (dnspython joins
               them back). Names are case-insensitive, without the trailing dot.
    exists     names with no TXT record that still exist (NOERROR with an empty answer);
               any other name not in `txt` is NXDOMAIN.
    silent     when True, requests are read and never answered (a DNS outage).
    queries    every name asked for, in order (lower case).
"""

from __future__ import annotations

import socket
import socketserver
import threading

import dns.resolver
from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import DNSHandler, DNSLogger, DNSServer


def _chunks(record: str) -> list[bytes]:
    data = record.encode("utf-8")
    return [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]


class _Resolver:
    def __init__(self, owner: DnsServer):
        self.owner = owner

    def resolve(self, request, handler):
        owner = self.owner
        name = str(request.q.qname).rstrip(".").lower()
        owner.queries.append(name)
        reply = request.reply()
        records = owner.txt.get(name)
        if records is None:
            if name not in owner.exists:
                reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if request.q.qtype in (QTYPE.TXT, QTYPE.ANY):
            for record in [records] if isinstance(records, str) else records:
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(_chunks(record)), ttl=60))
        return reply


class _Handler(DNSHandler):
    def handle(self):
        if self.server.owner.silent:
            return  # read and dropped: the client waits until its own timeout
        super().handle()


class _UDP(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class DnsServer:
    """TXT records served from `txt` on 127.0.0.1:`port`, UDP and TCP."""

    host = "127.0.0.1"

    def __init__(self):
        self.txt: dict[str, str | list[str]] = {}
        self.exists: set[str] = set()
        self.silent = False
        self.queries: list[str] = []
        self._servers: list[DNSServer] = []
        self.port = 0

    @property
    def address(self) -> str:
        """`host:port`, the form `mailer check --dns --nameserver` takes."""
        return f"{self.host}:{self.port}"

    def resolver(self, lifetime: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver that asks this server and nothing else."""
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [self.host]
        r.port = self.port
        r.lifetime = lifetime
        r.timeout = lifetime
        return r

    def start(self) -> DnsServer:
        logger = DNSLogger(log="-request,-reply,-truncated,-error", logf=lambda *_: None)
        resolver = _Resolver(self)
        for _ in range(20):  # a free UDP port whose TCP twin is free too
            udp = DNSServer(resolver, address=self.host, port=0, logger=logger, handler=_Handler, server=_UDP)
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(resolver, address=self.host, port=port, tcp=True, logger=logger, handler=_Handler, server=_TCP)
            except OSError:
                udp.server.server_close()
                continue
            break
        else:  # pragma: no cover - the machine has no free port pairs at all
            raise RuntimeError("no free port for the test DNS server")
        self.port = port
        self._servers = [udp, tcp]
        for s in self._servers:
            s.server.owner = self
            s.thread = threading.Thread(target=s.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            s.thread.start()
        return self

    def stop(self) -> None:
        for s in self._servers:
            s.server.shutdown()
            s.server.server_close()
        self._servers = []

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def closed_port() -> int:
    """A UDP port on 127.0.0.1 where nothing listens (a resolver there gets no answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
