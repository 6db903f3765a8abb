"""Screenshots of the example messages in headless Chromium, at phone and desktop widths.

    apt-get install -y chromium        # Debian's package
    python bench/screenshots.py        # writes bench/out/*.png and the HTML beside them

Renders examples/december-specials.md and examples/monthly-news.md for a sample
subscriber with the packaged templates and the example practice of `mailer init
--example`, then photographs each HTML part. The example's image and logo URLs point at
a domain that does not exist, so they are swapped for small local pictures made here
(nothing is fetched: Chromium runs with networking features off).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailer.clock import FakeClock  # noqa: E402
from mailer.config import EXAMPLE_CONFIG, PracticeConfig  # noqa: E402
from mailer.content import load_content  # noqa: E402
from mailer.models import Subscriber  # noqa: E402
from mailer.render import compile_campaign, packaged_templates_dir  # noqa: E402

WIDTHS = {"phone": 375, "desktop": 1200}
EXAMPLES = ("december-specials.md", "monthly-news.md")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
)


def png(width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> bytes:
    """A small PNG with a vertical gradient: a stand-in for a photo, made without any library."""
    rows = []
    for y in range(height):
        f = y / max(height - 1, 1)
        colour = bytes(int(a + (b - a) * f) for a, b in zip(top, bottom))
        rows.append(b"\x00" + colour * width)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("Chromium is not installed: apt-get install -y chromium")


def shoot(chromium: str, html: Path, out: Path, width: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mailer-chromium-") as profile:
        # A tall window: the whole message fits, and the page background fills the rest.
        subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},2600",
             f"--screenshot={out}", html.as_uri()],
            check=True, capture_output=True, timeout=120,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--logo", action="store_true", help="Show a logo image instead of the practice name.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    chromium = find_chromium()

    photo = args.out / "photo.png"
    photo.write_bytes(png(520, 260, (120, 160, 140), (230, 214, 190)))
    logo = args.out / "logo.png"
    logo.write_bytes(png(160, 48, (46, 107, 87), (46, 107, 87)))
    practice = EXAMPLE_CONFIG.practice
    if args.logo:
        practice = dataclasses.replace(practice, logo_url=logo.as_uri())
    config = dataclasses.replace(EXAMPLE_CONFIG, practice=PracticeConfig(**dataclasses.asdict(practice)))
    templates = {p.name: p.read_text(encoding="utf-8") for p in packaged_templates_dir().glob("*.j2")}
    clock = FakeClock(datetime(2026, 11, 25, 15, 0, tzinfo=UTC))
    subscriber = Subscriber(email="jane.doe@example.com", first_name="Jane", last_name="Doe", id=1)

    for example in EXAMPLES:
        content = load_content(ROOT / "examples" / example)
        campaign = compile_campaign(content, templates, config, b"screenshot-secret", list_name=content.template,
                                    campaign_key="screenshots", clock=clock)
        html = campaign.render(subscriber).html
        html = html.replace("https://closter-acupuncture.example/images/electroacupuncture.jpg", photo.as_uri())
        page = args.out / (Path(example).stem + ".html")
        page.write_text(html, encoding="utf-8")
        for label, width in WIDTHS.items():
            target = args.out / f"{Path(example).stem}-{label}.png"
            shoot(chromium, page, target, width)
            print(target)


if __name__ == "__main__":
    main()
