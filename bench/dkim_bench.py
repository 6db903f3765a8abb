"""What DKIM signing costs per message: a ~15 KB rendered letter signed with a 2048-bit key.

    python bench/dkim_bench.py [--messages 2000] [--key tests/data/dkim/test-2048.pem]

Prints, from the same run, on one core:
- messages signed per second by `mailer.dkim.Signer` (rsa-sha256, relaxed/relaxed);
- of which the RSA private-key operation alone (dkimpy's pure-Python pow with CRT), and
  the PEM parse dkimpy repeats for every message (the Signer reads the file once);
- the size of the message signed.
Afterwards every 100th signed message is verified with dkimpy against the public key.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import dkim as dkimpy  # noqa: E402
from dkim.crypto import RSASSA_PKCS1_v1_5_sign, parse_pem_private_key  # noqa: E402

from mailer.clock import FakeClock  # noqa: E402
from mailer.config import EXAMPLE_CONFIG, DkimConfig  # noqa: E402
from mailer.content import load_content  # noqa: E402
from mailer.dkim import Signer  # noqa: E402
from mailer.models import Subscriber  # noqa: E402
from mailer.render import compile_campaign, packaged_templates_dir  # noqa: E402

PARAGRAPH = (
    "Electroacupuncture blocks pain by activating several bioactive chemicals through spinal, "
    "peripheral and supraspinal mechanisms, among them the body's own opioids. "
)


def letter_of_about(size: int) -> bytes:
    """A rendered message of about `size` bytes: the packaged news letter, padded with paragraphs."""
    content = load_content(ROOT / "examples" / "monthly-news.md")
    templates = {p.name: p.read_text(encoding="utf-8") for p in packaged_templates_dir().glob("*.j2")}
    jane = Subscriber(email="jane.doe@example.com", email_key="jane.doe@example.com", first_name="Jane", last_name="Doe", id=7)
    clock = FakeClock(datetime(2026, 11, 25, 15, tzinfo=UTC))
    body = content.body
    while True:
        trial = dataclasses.replace(content, body=body)
        data = compile_campaign(trial, templates, EXAMPLE_CONFIG, b"s" * 32, list_name="news", campaign_key="bench", clock=clock).render(jane).data
        if len(data) >= size:
            return data
        body += "\n\n" + PARAGRAPH * 3


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s ({seconds * 1000 / n:.2f} ms each, {seconds:.2f} s for {n:,})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--key", default=str(ROOT / "tests" / "data" / "dkim" / "test-2048.pem"))
    parser.add_argument("--size", type=int, default=15 * 1024)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    folder = Path(tempfile.mkdtemp())
    key = folder / "dkim.pem"
    shutil.copy(args.key, key)
    os.chmod(key, 0o600)
    signer = Signer(DkimConfig("bench", str(key)), "closter-acupuncture.example")
    data = letter_of_about(args.size)

    started = time.perf_counter()
    signed = [signer.sign(data) for _ in range(args.messages)]
    seconds = time.perf_counter() - started

    pk = parse_pem_private_key(signer.key.pem)
    digest = hashlib.sha256(b"x")
    started = time.perf_counter()
    for _ in range(args.messages):
        RSASSA_PKCS1_v1_5_sign(digest, pk)
    rsa_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.messages):
        parse_pem_private_key(signer.key.pem)
    parse_seconds = time.perf_counter() - started

    record = signer.key.public_record().encode()
    assert all(dkimpy.verify(m, dnsfunc=lambda name, timeout=5: record) for m in signed[::100])
    shutil.rmtree(folder)

    print(f"message: {len(data):,} bytes ({len(data) / 1024:.1f} KB), key: {signer.key.bits} bits")
    print(f"signed (Signer.sign, whole):   {rate(args.messages, seconds)}")
    print(f"  RSA private-key operation:   {rate(args.messages, rsa_seconds)}")
    print(f"  PEM parse (dkimpy, per msg): {rate(args.messages, parse_seconds)}")
    print(f"verified: every 100th of {args.messages:,}")


if __name__ == "__main__":
    main()
