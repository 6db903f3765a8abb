"""An import killed or interrupted part-way leaves the store exactly as it was."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROWS = 80_000


def big_csv(path: Path) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("Email,First Name,Last Name\r\n")
        for i in range(ROWS):
            fh.write(f"patient{i}@example.com,Pat{i},Lee\r\n")
    return path


def run(home: Path, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "MAILER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mailer", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw
    )


def wait_until_writing(home: Path, proc: subprocess.Popen) -> None:
    """Wait (on the real process, which no clock can speed up) until the import is mid-way."""
    wal = home / "mailer.db-wal"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if wal.exists() and wal.stat().st_size > 2_000_000:
            return
        if proc.poll() is not None:
            pytest.fail(f"import ended before it could be interrupted: {proc.stderr.read().decode()}")
        time.sleep(0.02)
    pytest.fail("import never started writing")


def snapshot(home: Path) -> list[tuple]:
    conn = sqlite3.connect(home / "mailer.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT email, first_name, status, lists, updated_at FROM subscribers ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.fixture
def workspace(tmp_path) -> Path:
    home = tmp_path / "ws"
    for args in (("init", "--no-input"), ("subscribers", "add", "kept@example.com", "--first-name", "Kept")):
        proc = run(home, *args)
        assert proc.wait() == 0, proc.stderr.read()
    return home


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_interrupted_import_changes_nothing(workspace, tmp_path, sig):
    before = snapshot(workspace)
    proc = run(workspace, "import", str(big_csv(tmp_path / "big.csv")))
    wait_until_writing(workspace, proc)
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    if sig == signal.SIGINT:
        assert code == 130
        assert "Interrupted" in proc.stderr.read().decode()
    else:
        assert code == -signal.SIGKILL
    assert snapshot(workspace) == before
    # and the next import runs normally and completes
    small = tmp_path / "small.csv"
    small.write_text("email\nnew@example.com\nkept@example.com\n")
    proc = run(workspace, "import", str(small))
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert [r[0] for r in snapshot(workspace)] == ["kept@example.com", "new@example.com"]
