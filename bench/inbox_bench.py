"""Inbox processing speed and memory: an mbox of mixed returned mail, read, classified, acted on.

    python bench/inbox_bench.py                     # 5,000 and 20,000 messages
    python bench/inbox_bench.py --messages 50000

The mbox is built from the real-format samples of tests/data/inbox (bounces of every
kind, complaints, unsubscribe mails and replies, auto-replies, forged tokens, ordinary
replies), each copy with a Message-ID of its own. Each size is measured in a child
process of its own, so its peak memory (ru_maxrss) is that run's alone: the MboxSource
reader, the classifier and process_inbox, with an in-memory MailboxActions whose
processed-message log keeps only a set of keys (as the SQLite store would on disk).
Memory should stay flat as the mbox grows: the reader streams one message at a time.
"""

from __future__ import annotations

import argparse
import mailbox
import re
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from mailer.clock import FakeClock  # noqa: E402
from mailer.inbox.process import DeliveryRef, SubscriberRef, process_inbox  # noqa: E402
from mailer.inbox.sources import MboxSource  # noqa: E402
from tests.inbox_samples import SECRET, names, sample  # noqa: E402

_MESSAGE_ID = re.compile(rb"^(Message-I[dD]: <)([^>@]+)@", re.M)


def build_mbox(path: Path, count: int) -> int:
    """Write `count` messages cycling through the samples; returns the file's size."""
    samples = [sample(n) for n in names()]
    box = mailbox.mbox(str(path))
    box.lock()
    try:
        for i in range(count):
            raw = samples[i % len(samples)]
            # Only the message's own (first) Message-ID changes: the returned original's stays,
            # so bounces still match a delivery.
            raw = _MESSAGE_ID.sub(lambda m, i=i: m.group(1) + b"b%d." % i + m.group(2) + b"@", raw, count=1)
            box.add(raw)
        box.flush()
    finally:
        box.unlock()
        box.close()
    return path.stat().st_size


class BenchStore:
    """MailboxActions + ProcessedLog in memory: lookups that hit, actions that count."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.actions = 0
        self._sub = SubscriberRef(1, "someone@example.org", "active")

    def find_delivery_by_message_id(self, message_id):
        return DeliveryRef(1, 1, 1, "someone@example.org") if message_id.endswith("@example.com>") else None

    def find_delivery(self, delivery_id):
        return DeliveryRef(delivery_id, 1, 1, "someone@example.org")

    def find_subscriber(self, *, email=None, subscriber_id=None):
        return self._sub

    def hard_bounce(self, *a):
        self.actions += 1
        return True

    def soft_bounce(self, *a):
        self.actions += 1
        return 1

    def unsubscribe(self, *a):
        self.actions += 1
        return True

    def complaint(self, *a):
        self.actions += 1

    def atomic(self):
        return nullcontext()

    def already_processed(self, key):
        return key in self.keys

    def remember(self, key, verdict, outcome, when):
        self.keys.add(key)

    def cursor(self, name):
        return None

    def save_cursor(self, name, position, when):
        pass


def child(path: Path) -> None:
    store = BenchStore()
    clock = FakeClock(datetime(2026, 11, 26, tzinfo=UTC))
    start = time.perf_counter()
    cpu = time.process_time()
    summary = process_inbox(MboxSource(path), SECRET, store, store, clock=clock)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{summary.read} {wall:.3f} {cpu:.3f} {peak_kib} {summary.bounces_hard + summary.bounces_soft} "
          f"{summary.unsubscribes} {summary.complaints} {summary.auto_replies} {summary.forged} {summary.ignored}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, nargs="*", default=[5000, 20000])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"python {sys.version.split()[0]}, one process, one core (taskset when available)")
    print(f"{'messages':>9} {'mbox MB':>8} {'seconds':>8} {'msg/s':>7} {'peak RSS MB':>12}  bounces unsub complaints auto forged other")
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.messages:
            path = Path(tmp) / f"inbox-{count}.mbox"
            size = build_mbox(path, count)
            command = [sys.executable, __file__, "--child", str(path)]
            if Path("/usr/bin/taskset").exists():
                command = ["taskset", "-c", "0", *command]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
            read, wall, cpu, peak, *kinds = out
            print(f"{int(read):>9} {size / 1e6:>8.1f} {float(wall):>8.2f} {int(read) / float(wall):>7.0f} "
                  f"{int(peak) / 1024:>12.1f}  {' '.join(kinds)}")


if __name__ == "__main__":
    main()
