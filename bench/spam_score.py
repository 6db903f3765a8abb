"""How spam filters score the packaged templates: SpamAssassin on the example letters, local rules only.

    python bench/spam_score.py [--show-message] [--spamassassin /usr/bin/spamassassin]

Renders examples/december-specials.md (template: specials) and examples/monthly-news.md
(template: news) through the real renderer, once with the example mailer.toml for a
plain-named subscriber and once with a one-click unsubscribe URL for a subscriber whose
long accented name is encoded over two words, and runs each message
through `spamassassin -L -t` (no network tests, no Bayes, a throw-away $HOME so nothing
is learnt or written to yours; SpamAssassin still makes an empty ~/.spamassassin found
through the password database, which is removed again if it was not there before).
Prints each message's score and the rules that fired.

The aim is 0 points from anything the templates or the renderer cause. Rules that
come from how this script feeds the message (no Received header because it was never
relayed, no DKIM signature because signing belongs to the relay) are marked as the
test setup's and do not count. Exits 1 when a counted rule scored.

Debian/Ubuntu: apt-get install spamassassin. Not part of the test suite: the score
depends on the installed rule set.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailer.clock import SystemClock  # noqa: E402
from mailer.config import EXAMPLE_CONFIG, UnsubscribeConfig  # noqa: E402
from mailer.content import load_content  # noqa: E402
from mailer.models import Subscriber  # noqa: E402
from mailer.render import compile_campaign, packaged_templates_dir  # noqa: E402

EXAMPLES = ("december-specials.md", "monthly-news.md")
SUBSCRIBERS = (
    Subscriber(email="jane.doe@example.com", email_key="jane.doe@example.com", first_name="Jane", last_name="Doe", id=1),
    # an encoded To header, folded over two encoded words
    Subscriber(email="zoe@example.com", email_key="zoe@example.com", first_name="Zoë Ōtsuka-Kowalczyk",
               last_name="de la Fontaine-Nguyễn Thị Minh Khai", id=2),
)
# Rules about how the message reached SpamAssassin here, not about what it says.
SETUP_RULES = {
    "NO_RECEIVED": "never relayed, so no Received header",
    "NO_RELAYS": "never relayed",
}
_LINE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")


def configs() -> list[tuple[str, object]]:
    one_click = dataclasses.replace(EXAMPLE_CONFIG, unsubscribe=UnsubscribeConfig(
        mailto="unsubscribe@closter-acupuncture.example", url="https://closter-acupuncture.example/unsubscribe"))
    return [("mailto unsubscribe", EXAMPLE_CONFIG), ("one-click unsubscribe", one_click)]


def score(spamassassin: str, message: bytes, home: Path) -> tuple[float, list[tuple[float, str, str]]]:
    """(total, [(points, rule, description)]) from `spamassassin -t`'s report."""
    env = {**os.environ, "HOME": str(home)}
    result = subprocess.run(
        [spamassassin, "-L", "-t", "--cf=use_bayes 0", "--cf=bayes_auto_learn 0"],
        input=message, capture_output=True, env=env, timeout=120, check=False,
    )
    report = result.stdout.decode("utf-8", "replace")
    total_match = re.search(r"Content analysis details:\s+\((-?[\d.]+) points", report)
    if total_match is None:
        raise SystemExit(f"spamassassin gave no report (exit {result.returncode}): {result.stderr.decode()[-500:]}")
    rules: list[tuple[float, str, str]] = []
    section = report[total_match.end():].split("\n")
    for line in section[3:]:
        match = _LINE.match(line)
        if match:
            rules.append((float(match.group(1)), match.group(2), match.group(3).strip()))
        elif line.startswith(" " * 20) and rules:  # a wrapped description
            points, rule, text = rules[-1]
            rules[-1] = (points, rule, f"{text} {line.strip()}")
    return float(total_match.group(1)), rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spamassassin", default=shutil.which("spamassassin") or "/usr/bin/spamassassin")
    parser.add_argument("--show-message", action="store_true", help="print each message's headers too")
    args = parser.parse_args()
    if not Path(args.spamassassin).exists():
        raise SystemExit("spamassassin is not installed (Debian: apt-get install spamassassin).")
    version = subprocess.run([args.spamassassin, "-V"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    templates = {p.name: p.read_text(encoding="utf-8") for p in packaged_templates_dir().glob("*.j2")}
    counted_total = 0.0
    print(f"{version}; local tests only (-L), no Bayes")
    state_dir = Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".spamassassin"
    made_state_dir = not state_dir.exists()
    with tempfile.TemporaryDirectory(prefix="mailer-spam-") as home:
        for example in EXAMPLES:
            content = load_content(ROOT / "examples" / example)
            for (label, config), subscriber in zip(configs(), SUBSCRIBERS):
                campaign = compile_campaign(content, templates, config, b"spam-score-secret", list_name=content.template,
                                            campaign_key="spam-score", clock=SystemClock())
                message = campaign.render(subscriber).data
                label = f"{label}, to {subscriber.full_name}"
                if args.show_message:
                    print(message.split(b"\r\n\r\n", 1)[0].decode("ascii"))
                total, rules = score(args.spamassassin, message, Path(home))
                counted = sum(points for points, rule, _ in rules if rule not in SETUP_RULES)
                counted_total += max(counted, 0.0)
                print(f"\n{content.template} template ({example}, {label}): {total + 0:.1f} points, "
                      f"{counted + 0:.1f} from the message itself")
                for points, rule, text in rules:
                    note = f"  [test setup: {SETUP_RULES[rule] or 'not the template'}]" if rule in SETUP_RULES else ""
                    print(f"  {points:5.1f} {rule:<24} {text}{note}")
    if made_state_dir and state_dir.is_dir() and not any(state_dir.iterdir()):
        state_dir.rmdir()
    print(f"\n{'OK: no points from the templates' if counted_total <= 0 else f'{counted_total:g} points from the templates'}")
    sys.exit(1 if counted_total > 0 else 0)


if __name__ == "__main__":
    main()
