"""The SQLite store: migrations, permissions, merge rules, suppression and erasure."""

from __future__ import annotations

import sqlite3
import stat

import pytest

from mailer.errors import StoreError
from mailer.models import Subscriber
from mailer.store import MIGRATIONS, Store, address_hash

SECRET = b"k" * 32
NOW = "2026-11-25T15:00:00Z"
LATER = "2026-11-26T09:00:00Z"


def sub(email: str, **kw) -> Subscriber:
    kw.setdefault("lists", ("news", "specials"))
    return Subscriber(email=email, email_key=email.lower(), email_entered=email, **kw)


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "mailer.db")
    yield s
    s.close()


def test_blank_database_gets_every_migration_in_order(tmp_path):
    with Store.open(tmp_path / "m.db") as s:
        assert s.applied_migrations() == [name for name, _ in MIGRATIONS]
        assert s.schema_version() == len(MIGRATIONS)
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_applies_nothing_twice(tmp_path):
    Store.open(tmp_path / "m.db").close()
    with Store.open(tmp_path / "m.db") as s:
        assert s.conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)


def test_database_file_is_private(tmp_path):
    with Store.open(tmp_path / "m.db") as s:
        s.subscribers.add(sub("a@example.com"), SECRET, NOW)
        for name in ("m.db", "m.db-wal"):
            path = tmp_path / name
            if path.exists():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_newer_database_than_the_code_is_refused(tmp_path):
    Store.open(tmp_path / "m.db").close()
    conn = sqlite3.connect(tmp_path / "m.db")
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'm999_future', '2030-01-01T00:00:00Z')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer mailer"):
        Store.open(tmp_path / "m.db")


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    (tmp_path / "m.db").write_bytes(b"this is a text file, not SQLite" * 100)
    with pytest.raises(StoreError, match="not a mailer database"):
        Store.open(tmp_path / "m.db")


def test_wrong_secret_is_detected(store):
    store.check_secret(SECRET)
    store.check_secret(SECRET)
    with pytest.raises(StoreError, match="secret.key does not belong"):
        store.check_secret(b"x" * 32)


def test_addresses_are_one_person_whatever_their_case(store):
    assert store.subscribers.add(sub("Pat@Example.com", first_name="Pat"), SECRET, NOW) == "added"
    assert store.subscribers.add(sub("pat@example.com"), SECRET, NOW) == "unchanged"
    assert store.subscribers.count() == 1
    assert store.subscribers.get("pat@example.com").email == "Pat@Example.com"


def test_merge_joins_lists_and_tags_and_keeps_consent_facts(store):
    store.subscribers.add(sub("a@example.com", lists=("news",), tags=("vip",), source="website opt-in", optin_ip="10.0.0.1"), SECRET, NOW)
    outcome = store.subscribers.add(sub("a@example.com", lists=("specials",), tags=("front desk",), source="other.csv", optin_ip="10.9.9.9"), SECRET, LATER)
    assert outcome == "updated"
    s = store.subscribers.get("a@example.com")
    assert s.lists == ("news", "specials")
    assert s.tags == ("vip", "front desk")
    assert (s.source, s.optin_ip) == ("website opt-in", "10.0.0.1")
    assert (s.created_at, s.updated_at) == (NOW, LATER)


def test_empty_names_never_blank_stored_ones(store):
    store.subscribers.add(sub("a@example.com", first_name="Ann", last_name="Lee"), SECRET, NOW)
    assert store.subscribers.add(sub("a@example.com"), SECRET, LATER) == "unchanged"
    assert store.subscribers.get("a@example.com").full_name == "Ann Lee"


def test_unsubscribed_and_bounced_are_never_brought_back_by_an_import(store):
    store.subscribers.add(sub("u@example.com"), SECRET, NOW)
    store.subscribers.add(sub("b@example.com"), SECRET, NOW)
    store.subscribers.unsubscribe("u@example.com", "asked", NOW)
    store.subscribers.unsubscribe("b@example.com", "550 5.1.1", NOW, status="bounced")
    assert store.subscribers.add(sub("u@example.com", first_name="New"), SECRET, LATER) == "suppressed"
    assert store.subscribers.add(sub("b@example.com"), SECRET, LATER) == "suppressed"
    assert store.subscribers.get("u@example.com").status == "unsubscribed"
    assert store.subscribers.get("b@example.com").status == "bounced"
    assert store.subscribers.resubscribe("u@example.com", LATER)
    assert store.subscribers.get("u@example.com").status == "active"
    assert store.subscribers.get("u@example.com").unsubscribed_at == ""


def test_a_later_bounce_does_not_overwrite_an_unsubscribe(store):
    store.subscribers.add(sub("u@example.com"), SECRET, NOW)
    store.subscribers.unsubscribe("u@example.com", "asked", NOW)
    assert not store.subscribers.unsubscribe("u@example.com", "550", LATER, status="bounced")
    assert store.subscribers.get("u@example.com").unsubscribed_reason == "asked"


def test_erase_leaves_only_a_keyed_hash(tmp_path):
    path = tmp_path / "m.db"
    with Store.open(path) as store:
        store.subscribers.add(sub("secret.person@example.com", first_name="Zebedee"), SECRET, NOW)
        store.subscribers.add(sub("other@example.com"), SECRET, NOW)
        # Their history: a consent in their own words, a list left, a resubscribe.
        store.subscribers.add(sub("secret.person@example.com", consent_text="Zebedee says yes to news",
                                  consent_method="front-desk"), SECRET, NOW, new_consent=True)
        store.subscribers.leave("secret.person@example.com", ["specials"], "Zebedee has too much mail", NOW)
        person = store.subscribers.get("secret.person@example.com")
        assert len(store.events.history(person.id)) == 3
        assert store.subscribers.erase("secret.person@example.com", SECRET, "asked", LATER)
        assert store.events.history(person.id) == []
        assert store.conn.execute("SELECT count(*) FROM subscriber_events").fetchone()[0] == 1  # the other one's
        assert store.subscribers.get("secret.person@example.com") is None
        assert store.subscribers.is_erased(SECRET, "secret.person@example.com")
        assert store.subscribers.add(sub("Secret.Person@example.com"), SECRET, LATER) == "suppressed"
        hashes = [r[0] for r in store.conn.execute("SELECT hash FROM suppressions")]
        assert hashes == [address_hash(SECRET, "secret.person@example.com")]
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("m.db"))
    assert b"secret.person" not in raw.lower()
    assert b"Zebedee" not in raw


def test_erasing_an_unknown_address_still_keeps_it_out(store):
    assert store.subscribers.erase("never@example.com", SECRET, "asked", NOW) is False
    assert store.subscribers.add(sub("never@example.com"), SECRET, NOW) == "suppressed"


def test_import_is_all_or_nothing(store):
    store.subscribers.add(sub("first@example.com"), SECRET, NOW)

    def rows():
        yield sub("a@example.com")
        yield sub("b@example.com")
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.subscribers.import_rows(rows(), SECRET, NOW)
    assert [s.email for s in store.subscribers.stream()] == ["first@example.com"]


def test_import_counts_duplicates_within_the_file(store):
    summary = store.subscribers.import_rows(
        [sub("a@example.com"), sub("A@EXAMPLE.com"), sub("b@example.com")], SECRET, NOW
    )
    assert (summary.read, summary.added, summary.duplicates) == (3, 2, 1)
    # a second import of the same rows: nothing changes, and the same duplicate is found
    again = store.subscribers.import_rows([sub("a@example.com"), sub("A@EXAMPLE.com"), sub("b@example.com")], SECRET, LATER)
    assert (again.added, again.unchanged, again.duplicates) == (0, 2, 1)


def test_dry_run_import_reports_the_same_and_writes_nothing(store):
    rows = [sub("a@example.com"), sub("b@example.com")]
    dry = store.subscribers.import_rows(rows, SECRET, NOW, commit=False)
    assert dry.added == 2
    assert store.subscribers.count() == 0


def test_filters(store):
    store.subscribers.add(sub("a@example.com", lists=("news",), tags=("vip",), first_name="Ann"), SECRET, NOW)
    store.subscribers.add(sub("b@example.com", lists=("specials",)), SECRET, NOW)
    store.subscribers.add(sub("c@example.com"), SECRET, NOW)
    store.subscribers.unsubscribe("c@example.com", "x", NOW)
    assert [s.email for s in store.subscribers.stream(list_name="news")] == ["a@example.com", "c@example.com"]
    assert [s.email for s in store.subscribers.stream(status="active", list_name="news")] == ["a@example.com"]
    assert [s.email for s in store.subscribers.stream(tags=["vip"])] == ["a@example.com"]
    assert [s.email for s in store.subscribers.stream(search="ANN")] == ["a@example.com"]
    # a list name that is a prefix of another must not match it
    assert store.subscribers.count(list_name="new") == 0
    assert store.subscribers.status_counts() == {"active": 2, "unsubscribed": 1, "bounced": 0, "erased": 0}


def test_an_erased_persons_id_is_never_given_again(store):
    store.subscribers.add(sub("first@example.com"), SECRET, NOW)
    store.subscribers.add(sub("last@example.com"), SECRET, NOW)
    old_id = store.subscribers.get("last@example.com").id
    store.subscribers.erase("last@example.com", SECRET, "asked", NOW)
    store.subscribers.add(sub("newcomer@example.com"), SECRET, NOW)
    assert store.subscribers.get("newcomer@example.com").id > old_id  # old unsubscribe links name old_id


def test_two_processes_opening_a_new_database_at_once_migrate_it_once(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "new.db"
    code = f"from mailer.store import Store; Store.open({str(path)!r}).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 4, [p.stderr.read() for p in procs]
    with Store.open(path) as s:
        assert s.applied_migrations() == [name for name, _ in MIGRATIONS]


def test_a_commit_left_unsynced_is_synced_in_the_background_and_seen_by_others(tmp_path):
    """The send engine's 'sending' marks: committed without a sync, synced by a thread that holds no lock."""
    import os

    path = tmp_path / "m.db"
    with Store.open(path) as s:
        with s.transaction(synced=False):
            s.conn.execute("INSERT INTO meta (key, value) VALUES ('unsynced', '1')")
        synced = os.stat(f"{path}-wal").st_size
        wait = s.sync_soon()
        with s.transaction():  # the connection goes on meanwhile
            s.conn.execute("INSERT INTO meta (key, value) VALUES ('after', '1')")
        wait()
        assert synced > 0
        with Store.open(path) as other:
            assert other.conn.execute("SELECT count(*) FROM meta WHERE key IN ('unsynced', 'after')").fetchone()[0] == 2
        assert s.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for everything else
