"""Sending speed, end to end (render + SMTP + delivery log), against a bare smtplib loop.

    python bench/send_bench.py                    # 10,000 recipients, 1 and 4 connections
    python bench/send_bench.py --recipients 2000 --connections 1

Both sides talk to the same local sink: Postfix's `smtp-sink` (Debian package postfix;
it is only started here, the mail system is not) which accepts and discards messages at
a rate no Python server reaches. Without it the script falls back to aiosmtpd and says
so: aiosmtpd spends most of a core at about 900 messages/s and measures itself.
"""

from __future__ import annotations

import argparse
import os
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
from mailer.config import open_workspace  # noqa: E402
from mailer.imports import import_file  # noqa: E402
from mailer.runner import options_from_config, run_campaign  # noqa: E402
from mailer.store import Store  # noqa: E402
from mailer.validate import RowDefaults  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        try:
            yield port, "Postfix smtp-sink"
        finally:
            proc.terminate()
            proc.wait()
        return
    print("smtp-sink not found (apt-get install postfix): falling back to aiosmtpd, which limits both figures")
    sys.path.insert(0, str(REPO))
    from tests.smtp_server import SmtpServer

    with SmtpServer.start() as server:
        yield server.port, "aiosmtpd (fallback)"


def bare_loop(port: int, message: bytes, recipients: list[str], connections: int) -> float:
    """Seconds for plain smtplib to send one pre-built message to each recipient."""
    chunks = [recipients[i::connections] for i in range(connections)]

    def worker(chunk: list[str]) -> None:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local") as smtp:
            for rcpt in chunk:
                smtp.sendmail("news@closter-acupuncture.example", [rcpt], message)

    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t


def workspace(root: Path, port: int, recipients: int) -> Path:
    home = root / "ws"
    subprocess.run([sys.executable, "-m", "mailer", "--home", str(home), "init", "--example"], check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    toml = (home / "mailer.toml").read_text().replace("port = 8025", f"port = {port}")
    (home / "mailer.toml").write_text(toml)
    csv_path = root / "list.csv"
    with open(csv_path, "w") as fh:
        fh.write("email,first name,last name\n")
        for i in range(recipients):
            fh.write(f"patient{i}@example.com,Pat{i},Lee\n")
    ws = open_workspace(home)
    with Store.open(ws.db_path) as store:
        store.check_secret(ws.secret())
        import_file(store, ws.secret(), csv_path, RowDefaults(), "2026-11-25T00:00:00Z")
    return home


def mailer_send(home: Path, connections: int) -> tuple[float, int, bytes]:
    """Seconds for mailer to send a fresh campaign to everyone; (seconds, sent, a sample message)."""
    ws = open_workspace(home)
    clock = SystemClock()
    with Store.open(ws.db_path) as store:
        campaign = create_campaign(store, ws, REPO / "examples" / "december-specials.md", clock)
        options = options_from_config(ws, batch_size=10**9, pause=0, connections=connections)
        t = time.perf_counter()
        run_campaign(store, ws, campaign, clock, options, ws.secret())
        seconds = time.perf_counter() - t
        sent = store.deliveries.counts(campaign.id)["sent"]
        sample = next(iter(store.deliveries.of_campaign(campaign.id)))
        message = renderer_for(campaign, ws, ws.secret(), clock).render(store.subscribers.get_by_id(sample.subscriber_id)).data
    return seconds, sent, message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--connections", type=int, nargs="*", default=[1, 4])
    args = parser.parse_args()
    n = args.recipients
    with tempfile.TemporaryDirectory(prefix="mailer-send-bench-") as d, sink() as (port, name):
        home = workspace(Path(d), port, n)
        print(f"{n:,} recipients, sink: {name} on 127.0.0.1:{port}, message size ~", end="")
        recipients = [f"patient{i}@example.com" for i in range(n)]
        for connections in args.connections:
            seconds, sent, message = mailer_send(home, connections)
            if connections == args.connections[0]:
                print(f"{len(message) / 1024:.1f} KB")
            bare = bare_loop(port, message, recipients, connections)
            assert sent == n, f"only {sent} of {n} sent"
            print(f"\n{connections} connection(s)")
            print(f"  bare smtplib loop (one pre-built message)     : {n / bare:>8,.0f} msg/s")
            print(f"  mailer send (render + SMTP + delivery log)    : {n / seconds:>8,.0f} msg/s"
                  f"   = {100 * bare / seconds:.0f}% of the bare loop, {sent:,} delivery rows committed")


if __name__ == "__main__":
    main()
