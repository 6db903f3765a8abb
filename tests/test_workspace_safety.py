"""A lost, empty or wrong secret.key or mailer.db is refused, never silently replaced.

The suppression list and every unsubscribe link depend on the pair: a new key beside
an old list (or a new list beside an old key) would forget erasures and let an old
link unsubscribe a different person. Each case runs the real command.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from mailer.tokens import make_token

ANN = "ann@example.com"


@pytest.fixture
def used(mailer):
    """A workspace with two people, one of them erased: a list worth keeping."""
    assert mailer("subscribers", "add", ANN, "--first-name", "Ann").exit_code == 0
    assert mailer("subscribers", "add", "bob@example.com").exit_code == 0
    assert mailer("subscribers", "erase", "bob@example.com", "--yes").exit_code == 0
    return mailer


def status_of(m, email):
    return m.json("subscribers", "show", email)["status"]


def test_an_empty_key_is_refused_and_its_tokens_change_nothing(used):
    key = used.home / "secret.key"
    key.write_bytes(b"")  # what a full disk left behind
    token = make_token(b"", 1, "news", date(2026, 11, 25))
    result = used("unsubscribe", token)
    assert result.exit_code == 2
    assert "secret.key is empty or cut short" in result.stderr and "restore it from your backup" in result.stderr
    assert "Traceback" not in result.stderr
    key.write_text("ab" * 16 + "\n")  # 16 bytes: too short to be trusted either
    assert used("subscribers", "list").exit_code == 2


def test_a_missing_key_is_never_made_again_beside_a_used_list(used):
    (used.home / "secret.key").unlink()
    result = used("subscribers", "list")
    assert result.exit_code == 2
    assert "secret.key is missing" in result.stderr and "restore it from your backup" in result.stderr
    assert not (used.home / "secret.key").exists()
    assert used("init", "--no-input").exit_code == 2  # init does not paper over it either
    assert not (used.home / "secret.key").exists()


@pytest.mark.parametrize("how", ["deleted", "zero bytes"])
def test_a_lost_database_beside_its_key_is_refused(used, how):
    db = used.home / "mailer.db"
    for suffix in ("", "-wal", "-shm"):
        p = used.home / f"mailer.db{suffix}"
        if p.exists():
            p.unlink()
    if how == "zero bytes":
        db.write_bytes(b"")
    result = used("subscribers", "list")
    assert result.exit_code == 2
    assert ("missing" if how == "deleted" else "empty") in result.stderr
    assert "mailer init --new-list" in result.stderr and "Traceback" not in result.stderr
    assert db.exists() == (how == "zero bytes") and (not db.exists() or db.stat().st_size == 0)


def test_new_list_starts_over_with_a_new_key_and_keeps_the_old_pair(used):
    old_key = (used.home / "secret.key").read_text()
    old_token = make_token(bytes.fromhex(old_key.strip()), 1, "news", date(2026, 11, 25))
    (used.home / "mailer.db").unlink()
    result = used("init", "--new-list")
    assert result.exit_code == 0, result.stderr
    assert (used.home / "secret.key").read_text() != old_key
    kept = sorted(p.name for p in used.home.iterdir() if ".old-" in p.name)
    assert any(n.startswith("secret.key.old-") for n in kept)
    # someone added to the new list is not reachable with a token of the old one
    assert used("subscribers", "add", "carol@example.com").exit_code == 0
    assert used("unsubscribe", old_token).exit_code == 2
    assert status_of(used, "carol@example.com") == "active"


def test_new_list_keeps_a_used_database_renamed_with_its_wal(used):
    assert used("init", "--new-list").exit_code == 0
    [old_db] = [p for p in used.home.iterdir() if p.name.startswith("mailer.db.old-") and p.name.count("-") <= 3]
    with sqlite3.connect(old_db) as db:  # the old list is all there, readable as it was
        assert db.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 1
    assert used.json("subscribers", "list") == []


def test_a_damaged_database_is_one_sentence_exit_2(used):
    db = used.home / "mailer.db"
    used("subscribers", "list")  # leave it checkpointed and closed
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the header's tail and the schema page
    db.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        (used.home / f"mailer.db{suffix}").unlink(missing_ok=True)
    result = used("subscribers", "list")
    assert result.exit_code == 2, result.stderr
    assert "damaged" in result.stderr and "bug in mailer" not in result.stderr and "Traceback" not in result.stderr


def test_a_key_is_written_whole_or_not_at_all(bare_mailer, monkeypatch):
    real_fsync = os.fsync

    def full_disk(fd):
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(".secret.key."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    result = bare_mailer("init", "--no-input")
    assert result.exit_code != 0
    assert not (bare_mailer.home / "secret.key").exists()
    assert not [p for p in bare_mailer.home.iterdir() if p.name.startswith(".secret.key")]
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert bare_mailer("init", "--no-input").exit_code == 0  # nothing was used yet: a key is made now
    assert len(bytes.fromhex((bare_mailer.home / "secret.key").read_text())) == 32


def test_both_files_gone_from_a_used_workspace_are_not_silently_replaced(used):
    used("send", "--dry-run", Path(__file__).parent.parent / "examples" / "december-specials.md")  # leaves a run log
    for name in ("mailer.db", "mailer.db-wal", "mailer.db-shm", "secret.key"):
        (used.home / name).unlink(missing_ok=True)
    result = used("status")
    assert result.exit_code == 2 and "both missing" in result.stderr and "init --new-list" in result.stderr
    assert not (used.home / "mailer.db").exists() and not (used.home / "secret.key").exists()
    assert used("init", "--no-input").exit_code == 2
    assert used("init", "--new-list").exit_code == 0  # on purpose


def test_new_list_twice_in_one_second_keeps_every_old_list(used):
    assert used("init", "--new-list").exit_code == 0
    assert used("subscribers", "add", "carol@example.com").exit_code == 0
    assert used("init", "--new-list").exit_code == 0  # the same second: the clock does not move
    kept = sorted(p.name for p in used.home.iterdir() if p.name.startswith("mailer.db.old-") and not p.name.endswith(("-wal", "-shm")))
    assert len(kept) == 2, kept
    counts = []
    for name in kept:
        with sqlite3.connect(used.home / name) as db:
            counts.append(db.execute("SELECT count(*) FROM subscribers").fetchone()[0])
    assert sorted(counts) == [1, 1]  # Ann from the first list, Carol from the second


@pytest.mark.parametrize("folder", ["logs", "outbox"])
def test_a_file_where_a_workspace_folder_belongs_is_one_sentence(used, folder):
    place = used.home / folder
    if place.is_dir():
        for child in sorted(place.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
        place.rmdir()
    place.write_text("x\n")
    for command in (("status",), ("cron", "--check"), ("subscribers", "list")):
        result = used(*command)
        assert result.exit_code == 2, (command, result.stderr)
        assert f"{place} is a file, not a folder" in result.stderr and "bug" not in result.stderr


def _read_only(path: Path):
    """Make a folder read-only for this process: chmod for a user, a read-only bind mount for root."""
    if os.geteuid() != 0:
        path.chmod(0o500)
        return lambda: path.chmod(0o700)
    import subprocess

    for args in (["mount", "--bind", str(path), str(path)], ["mount", "-o", "remount,bind,ro", str(path)]):
        if subprocess.run(args, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(path)], capture_output=True)
            pytest.skip("root, and no mount here to make a folder read-only")
    return lambda: subprocess.run(["umount", str(path)], check=True)


def test_a_read_only_workspace_is_said_to_be_read_only(used):
    used("subscribers", "list")
    undo = _read_only(used.home)
    try:
        result = used("subscribers", "list")
    finally:
        undo()
    assert result.exit_code == 2, result.stderr
    assert "cannot be written" in result.stderr and "report what it prints" not in result.stderr
