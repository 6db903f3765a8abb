"""How fast messages are made: render + build + serialise, for 10,000 subscribers, on one core.

    python bench/render_bench.py [--subscribers 10000] [--example december-specials.md] [--repeat 1]

Prints, from the same run:
- complete messages per second (Jinja for both parts, headers, MIME, CRLF bytes), the
  figure that matters for `mailer send`;
- Jinja alone rendering the HTML template, the ceiling for the above;
- a straightforward EmailMessage (policy.default) + as_bytes(policy=SMTP) build of the
  same parts, for comparison with what a CompiledCampaign does instead.
Afterwards every message made is parsed back with the standard parser and must have
no defects.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailer.clock import FakeClock  # noqa: E402
from mailer.config import EXAMPLE_CONFIG  # noqa: E402
from mailer.content import load_content  # noqa: E402
from mailer.models import Subscriber  # noqa: E402
from mailer.render import compile_campaign, packaged_templates_dir  # noqa: E402

FIRST = ["Jane", "Zoë", "Mohammed", "Li", "María José", "O'Brien", "", "Anne-Marie", "Sung-min", "Tom & Jerry"]
LAST = ["Doe", "Kim", "Nguyễn", "", "Smith", "García", "Park", "Müller", "Lee", "Khan"]


def subscribers(n: int) -> list[Subscriber]:
    return [
        Subscriber(
            email=f"patient{i}@example.com", email_key=f"patient{i}@example.com",
            first_name=FIRST[i % len(FIRST)], last_name=LAST[(i // 10) % len(LAST)], id=i + 1,
        )
        for i in range(n)
    ]


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s ({seconds:.2f} s for {n:,})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--example", default="december-specials.md")
    parser.add_argument("--repeat", type=int, default=1,
                        help="render everyone this many times and keep the fastest (a busy machine is noisy)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, honestly

    content = load_content(ROOT / "examples" / args.example)
    templates = {p.name: p.read_text(encoding="utf-8") for p in packaged_templates_dir().glob("*.j2")}
    clock = FakeClock(datetime(2026, 11, 25, 15, 0, tzinfo=UTC))
    subs = subscribers(args.subscribers)

    t0 = time.perf_counter()
    campaign = compile_campaign(content, templates, EXAMPLE_CONFIG, b"bench-secret", list_name=content.template,
                                campaign_key="bench", clock=clock)
    setup = time.perf_counter() - t0

    full = float("inf")
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        messages = [campaign.render(s) for s in subs]
        full = min(full, time.perf_counter() - t0)

    # Jinja alone: the HTML template for each subscriber, nothing else.
    from mailer.tokens import make_token

    contexts = [campaign._context(s, make_token(b"bench-secret", s.id, content.template, clock.now().date())) for s in subs]
    jinja_html = float("inf")
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        for ctx in contexts:
            campaign._html.render(ctx)
        jinja_html = min(jinja_html, time.perf_counter() - t0)

    # The straightforward build, on a tenth of the subscribers (it is slow).
    sample = messages[: max(1, len(messages) // 10)]
    t0 = time.perf_counter()
    for m in sample:
        msg = EmailMessage(policy=policy.default)
        msg["From"] = "John Kim <news@closter-acupuncture.example>"
        msg["To"] = m.to
        msg["Subject"] = content.subject
        msg["Date"] = format_datetime(clock.now())
        msg["Message-ID"] = make_msgid(domain="closter-acupuncture.example")
        msg.set_content(m.text)
        msg.add_alternative(m.html, subtype="html")
        msg.as_bytes(policy=policy.SMTP)
    naive = time.perf_counter() - t0

    t0 = time.perf_counter()
    parse = BytesParser(policy=policy.default).parsebytes
    defects = 0
    for m in messages:
        msg = parse(m.data)
        defects += sum(len(part.defects) for part in msg.walk())
    check = time.perf_counter() - t0
    size = sum(len(m.data) for m in messages) / len(messages)

    print(f"content: examples/{args.example} ({content.template}), {len(subs):,} subscribers, one core"
          + (f", fastest of {args.repeat} runs" if args.repeat > 1 else ""))
    print(f"campaign setup (Markdown, CSS inlining, compile, checks): {setup * 1000:.0f} ms")
    print(f"complete messages (render + build + serialise): {rate(len(subs), full)}")
    print(f"Jinja alone, HTML template:                     {rate(len(subs), jinja_html)}")
    print(f"EmailMessage policy.default + as_bytes(SMTP):   {rate(len(sample), naive)}")
    print(f"average message size: {size / 1024:.1f} KB; parsed back: {len(messages):,} messages, "
          f"{defects} defects ({check:.1f} s)")
    if defects:
        sys.exit(1)


if __name__ == "__main__":
    main()
