"""Import speed and memory: `mailer validate` and `mailer import` against bare email-validator.

    python bench/import_bench.py            # 100,000 then 400,000 rows
    python bench/import_bench.py --rows 20000

Generates realistic rows (about 3% invalid, 2% duplicates), then runs each step in its
own process so that its peak memory (max RSS) can be read back from the kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIRST = "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan Joseph Jessica Thomas Sarah Min-jun Seo-yeon José Zoë Søren Aiko Priya".split()
LAST = "Smith Johnson Williams Brown Jones Garcia Miller Davis Kim Lee Park Choi Rodriguez Martinez Hernández Müller O'Brien Nguyen Patel Cohen".split()
DOMAINS = "gmail.com yahoo.com outlook.com aol.com icloud.com verizon.net optonline.net comcast.net hotmail.com example.org".split()
BAD = ["{f}.{l}@gmail", "{f}@@yahoo.com", "", "{f} {l}", "{f}.{l}@gmail..com", "{f}@-example.com"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    seen: list[str] = []
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("Date,Name,Email,IP\r\n")
        for i in range(rows):
            f, last = rnd.choice(FIRST), rnd.choice(LAST)
            r = rnd.random()
            if r < 0.03:
                email = rnd.choice(BAD).format(f=f.lower(), l=last.lower())
            elif r < 0.05 and seen:
                email = rnd.choice(seen).upper()
            else:
                email = f"{f.lower()}.{last.lower().replace(chr(39), '')}{i}@{rnd.choice(DOMAINS)}"
                if len(seen) < 10_000:
                    seen.append(email)
            name = f'"{last}, {f}"' if rnd.random() < 0.1 else f"{f} {last}"
            fh.write(f"2026-{1 + i % 12:02d}-{1 + i % 28:02d} 10:{i % 60:02d}:00,{name},{email},203.0.113.{i % 250}\r\n")


BARE = """
import csv, sys, time
from email_validator import validate_email, EmailNotValidError
with open(sys.argv[1], newline="", encoding="utf-8") as fh:
    addrs = [row[2] for row in csv.reader(fh)][1:]
t = time.perf_counter()
for a in addrs:
    try:
        validate_email(a, check_deliverability=False)
    except EmailNotValidError:
        pass
print(time.perf_counter() - t)
"""


def run(args: list[str]) -> tuple[float, int, str]:
    """(seconds, peak RSS in MB, stdout) of one child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {err}")
    return seconds, usage.ru_maxrss // 1024, out


def bench(rows: int, workdir: Path) -> None:
    csv_path = workdir / f"rows-{rows}.csv"
    generate(csv_path, rows)
    mailer = [sys.executable, "-m", "mailer", "--home", str(workdir / f"ws-{rows}")]
    subprocess.run([*mailer, "init", "--no-input"], check=True, capture_output=True)

    bare_validate, _, out = run([sys.executable, "-c", BARE, str(csv_path)])
    bare_validate = float(out)  # the loop alone, without reading the file or starting Python
    startup, startup_mb, _ = run([*mailer, "--version"])
    v_secs, v_mb, v_out = run([*mailer, "validate", str(csv_path), "--json"])
    i_secs, i_mb, i_out = run([*mailer, "import", str(csv_path), "--json"])
    summary = json.loads(i_out)
    assert json.loads(v_out)["added"] == summary["added"]
    v_secs, i_secs = v_secs - startup, i_secs - startup

    print(f"\n{rows:,} rows ({summary['invalid']:,} invalid, {summary['duplicates']:,} duplicates, {summary['added']:,} added)")
    print(f"  bare email-validator loop : {rows / bare_validate:>9,.0f} rows/s")
    print(f"  mailer validate           : {rows / v_secs:>9,.0f} rows/s   peak {v_mb} MB   ({v_secs / bare_validate:.2f}x the bare loop's time)")
    print(f"  mailer import             : {rows / i_secs:>9,.0f} rows/s   peak {i_mb} MB   ({i_secs / bare_validate:.2f}x the bare loop's time)")
    print(f"  (python + mailer start-up : {startup:.2f} s, {startup_mb} MB; subtracted above)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="*", default=[100_000, 400_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailer-bench-") as d:
        for rows in args.rows:
            bench(rows, Path(d))


if __name__ == "__main__":
    main()
