"""Sending speed, end to end (render + SMTP + delivery log), against bare loops, on loopback
and through a delay line that gives the relay a real round trip.

    python bench/send_bench.py                        # loopback: 3,000 recipients, 1 and 4 connections
    python bench/send_bench.py --rtt-ms 20 --rtt-ms 50 # through a delay line (and loopback with --rtt-ms 0)
    python bench/send_bench.py --rtt-ms 20 --repeat 5 --seconds 10 --unpipelined

Every figure is measured --repeat times; the best and the spread (worst..best) are printed,
each beside a bare loop measured in the same invocation: the machine may be shared, so
only figures taken side by side compare.

The relay is Postfix's `smtp-sink` (Debian package postfix; only that program is started,
not the mail system), which accepts and discards messages at a rate no Python server
reaches. Without it the script falls back to aiosmtpd and says so. With --rtt-ms a delay
line of our own sits in front of it: a small TCP proxy, in its own process, that holds
every chunk of bytes for half the round trip in each direction. The limit of a connection
is then one message per round trip (RFC 2920 pipelining across messages reaches it), so
each figure is also printed as a fraction of connections / round trip.

Rows:
    bare smtplib loop       smtplib.sendmail of one pre-built message over one reused connection
                            (no pipelining: 4 round trips a message)
    transport alone         our SmtpTransport pipelining one pre-built message across messages,
                            no rendering, no delivery log: the ceiling of the wire part
    mailer send             a campaign through run_campaign: render, SMTP, every delivery row committed
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from mailer.campaigns import create_campaign, renderer_for  # noqa: E402
from mailer.clock import SystemClock  # noqa: E402
from mailer.config import SmtpConfig, open_workspace  # noqa: E402
from mailer.home import open_list  # noqa: E402
from mailer.imports import import_file  # noqa: E402
from mailer.runner import options_from_config, run_campaign  # noqa: E402
from mailer.transport import Envelope, Outgoing, SmtpTransport  # noqa: E402
from mailer.validate import RowDefaults  # noqa: E402

SENDER = "news@closter-acupuncture.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def sink():
    """(port, name) of a running SMTP sink."""
    port = free_port()
    exe = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
    if exe:
        args = [exe]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        proc = subprocess.Popen([*args, f"127.0.0.1:{port}", "256"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_port(port)
        try:
            yield port, "Postfix smtp-sink"
        finally:
            proc.terminate()
            proc.wait()
        return
    print("smtp-sink not found (apt-get install postfix): falling back to aiosmtpd, which limits every figure")
    sys.path.insert(0, str(REPO))
    from tests.smtp_server import SmtpServer

    with SmtpServer.start(pipelining=True) as server:
        yield server.port, "aiosmtpd (fallback)"


# ---- the delay line ------------------------------------------------------------------------


def _pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
    """Copy src to dst, each chunk leaving `delay` seconds after it arrived, in order."""
    chunks: queue.Queue = queue.Queue()

    def later() -> None:
        while True:
            due, data = chunks.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    writer = threading.Thread(target=later, daemon=True)
    writer.start()
    while True:
        try:
            data = src.recv(1 << 16)
        except OSError:
            data = b""
        chunks.put((time.monotonic() + delay, data))
        if not data:
            break
    writer.join()


def delay_line(listen_port: int, target_port: int, one_way: float) -> None:
    """Run the delay line (blocking): 127.0.0.1:listen_port -> 127.0.0.1:target_port."""
    server = socket.create_server(("127.0.0.1", listen_port), backlog=64)
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", target_port))
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(a, b, one_way), daemon=True).start()


@contextmanager
def delayed(target_port: int, rtt_ms: float):
    """A port whose connections reach target_port with rtt_ms of round trip added (0: target_port itself)."""
    if not rtt_ms:
        yield target_port
        return
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--delay-line", str(port), str(target_port), str(rtt_ms / 2000)])
    wait_for_port(port)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait()


# ---- what is measured -----------------------------------------------------------------------


def bare_loop(port: int, message: bytes, recipients: list[str], connections: int) -> float:
    """Seconds for plain smtplib to send one pre-built message to each recipient."""
    chunks = [recipients[i::connections] for i in range(connections)]

    def worker(chunk: list[str]) -> None:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local") as smtp:
            for rcpt in chunk:
                smtp.sendmail(SENDER, [rcpt], message)

    return _timed(worker, chunks)


def transport_loop(port: int, message: bytes, recipients: list[str], connections: int) -> float:
    """Seconds for our transport alone to pipeline one pre-built message to each recipient."""
    chunks = [recipients[i::connections] for i in range(connections)]

    class Accept:
        def answered(self, item: Outgoing, reply) -> None:
            assert reply.code == 250, reply

        def before_data(self, item: Outgoing) -> bool:
            return True

    def worker(chunk: list[str]) -> None:
        t = SmtpTransport(SmtpConfig(host="127.0.0.1", port=port, security="none"), None)
        t.open()
        listener = Accept()
        for rcpt in chunk:
            t.submit(Outgoing(Envelope(SENDER, rcpt), message), listener)
            t.collect(listener)
        t.drain(listener)
        t.close()

    return _timed(worker, chunks)


def _timed(worker, chunks) -> float:
    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t


def workspace(root: Path, recipients: int) -> Path:
    home = root / f"ws-{recipients}"
    subprocess.run([sys.executable, "-m", "mailer", "--home", str(home), "init", "--example"], check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    csv_path = root / f"list-{recipients}.csv"
    with open(csv_path, "w") as fh:
        fh.write("email,first name,last name\n")
        for i in range(recipients):
            fh.write(f"patient{i}@example.com,Pat{i},Lee\n")
    ws = open_workspace(home)
    store, secret = open_list(ws)
    with store:
        import_file(store, secret, csv_path, RowDefaults(), "2026-11-25T00:00:00Z")
    return home


def point(home: Path, port: int, pipelining: bool = True) -> None:
    toml = home / "mailer.toml"
    lines = []
    for line in toml.read_text().splitlines():
        if line.startswith("port = "):
            line = f"port = {port}"
        elif line.startswith("pipelining = "):
            line = f"pipelining = {'true' if pipelining else 'false'}"
        lines.append(line)
    toml.write_text("\n".join(lines) + "\n")


def mailer_send(home: Path, port: int, connections: int, pipelining: bool = True) -> tuple[float, int]:
    """Seconds for mailer to send a fresh campaign to everyone on the list; (seconds, rows marked sent)."""
    point(home, port, pipelining)
    ws = open_workspace(home)
    clock = SystemClock()
    store, secret = open_list(ws)
    with store:
        # The same letter each time, on purpose (the bench sends it again and again).
        campaign = create_campaign(store, ws, REPO / "examples" / "december-specials.md", clock, allow_repeat=True)
        options = options_from_config(ws, batch_size=10**9, pause=0, connections=connections)
        t = time.perf_counter()
        run_campaign(store, ws, campaign, clock, options, secret, allow_repeat=True)
        seconds = time.perf_counter() - t
        return seconds, store.deliveries.counts(campaign.id)["sent"]


def sample_message(home: Path) -> bytes:
    ws = open_workspace(home)
    clock = SystemClock()
    store, secret = open_list(ws)
    with store:
        campaign = create_campaign(store, ws, REPO / "examples" / "december-specials.md", clock, allow_repeat=True)
        sub = store.subscribers.get("patient0@example.com")
        assert sub is not None
        return renderer_for(campaign, ws, secret, clock).render(sub).data


def measured(repeat: int, run) -> tuple[float, float]:
    """(best, worst) messages a second over `repeat` runs of run() -> (seconds, messages)."""
    rates = []
    for _ in range(repeat):
        seconds, n = run()
        rates.append(n / seconds)
    return max(rates), min(rates)


def show(label: str, best: float, worst: float, limit: float | None, baseline: float | None) -> None:
    text = f"  {label:<44}: {best:>8,.1f} msg/s  (spread {worst:,.1f}..{best:,.1f})"
    if limit:
        text += f"  = {best / limit:.2f} of the limit"
    if baseline:
        text += f"  = {best / baseline:.2f} x the bare loop"
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt-ms", type=float, action="append", help="round trip of the delay line (repeatable; 0 = loopback)")
    parser.add_argument("--connections", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--recipients", type=int, help="recipients per mailer run (default: ~--seconds at the limit; 3,000 on loopback)")
    parser.add_argument("--seconds", type=float, default=6.0, help="aim for runs this long through the delay line")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure (best and spread are shown)")
    parser.add_argument("--unpipelined", action="store_true",
                        help="also mailer with [smtp] pipelining = false (one message at a time: 2 round trips)")
    parser.add_argument("--delay-line", nargs=3, metavar=("LISTEN", "TARGET", "ONE_WAY_S"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.delay_line:
        delay_line(int(args.delay_line[0]), int(args.delay_line[1]), float(args.delay_line[2]))
        return

    with tempfile.TemporaryDirectory(prefix="mailer-send-bench-") as d, sink() as (sink_port, name):
        root = Path(d)
        homes: dict[int, Path] = {}

        def home_for(n: int) -> Path:
            if n not in homes:
                homes[n] = workspace(root, n)
            return homes[n]

        message = sample_message(home_for(10))
        print(f"relay: {name}; message ~{len(message) / 1024:.1f} KB; each figure best of {args.repeat} "
              "(spread worst..best), bare loops measured in the same run")
        for rtt in args.rtt_ms or [0.0]:
            with delayed(sink_port, rtt) as port:
                print(f"\n{'loopback' if not rtt else f'{rtt:g} ms round trip (delay line)'}")
                for c in args.connections:
                    limit = c * 1000 / rtt if rtt else None
                    n = args.recipients or (3000 if not rtt else max(50, int(args.seconds * limit)))
                    bare_n = n if not rtt else max(20, n // 4)
                    recipients = [f"patient{i}@example.com" for i in range(n)]
                    home = home_for(n)
                    print(f" {c} connection(s)" + (f", limit {limit:,.0f} msg/s" if limit else "") + f", {n:,} recipients")
                    bare = measured(args.repeat, lambda r=recipients[:bare_n], c=c: (bare_loop(port, message, r, c), len(r)))
                    show("bare smtplib loop (pre-built message)", *bare, limit, None)
                    alone = measured(args.repeat, lambda r=recipients, c=c: (transport_loop(port, message, r, c), len(r)))
                    show("transport alone (pre-built, pipelined)", *alone, limit, bare[0])

                    def run_mailer(home: Path = home, c: int = c, n: int = n) -> tuple[float, int]:
                        seconds, sent = mailer_send(home, port, c)
                        assert sent == n, f"only {sent} of {n} sent"
                        return seconds, sent

                    show("mailer send (render + SMTP + every row)", *measured(args.repeat, run_mailer), limit, bare[0])
                    if args.unpipelined:
                        def unpipelined(home: Path = home, c: int = c) -> tuple[float, int]:
                            return mailer_send(home, port, c, pipelining=False)

                        show("mailer send, pipelining across messages off", *measured(args.repeat, unpipelined),
                             limit, bare[0])


if __name__ == "__main__":
    main()
