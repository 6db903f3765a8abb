"""The mailbox loop's rules, run over real mbox and maildir files against an in-memory store."""

from __future__ import annotations

import mailbox
from datetime import date
from pathlib import Path

import pytest

from mailer.errors import InputError
from mailer.inbox.process import process_inbox
from mailer.inbox.sources import MAX_MESSAGE_BYTES, MaildirSource, MboxSource
from tests.fake_mailbox import FakeMailboxStore
from tests.inbox_samples import SECRET, names, sample

CAMPAIGN = 1

# Every sample's people, with the Message-ID our renderer gave the message each one got.
PEOPLE = [
    (12, "ana.lopez@example.org", "<0f3c8e2a9b1d4c5e6f708192a3b4c5d6@example.com>"),
    (13, "ben.okafor@example.net", "<7d2e4f6a8b0c1d3e5f7a9b1c3d5e7f90@example.com>"),
    (14, "carla.mendes@example.net", "<1a2b3c4d5e6f708192a3b4c5d6e7f809@example.com>"),
    (15, "dana.wu@example.org", "<2b4d6f8a0c1e3a5c7e9b1d3f5a7c9e1b@example.com>"),
    (16, "eli.novak@example.net", "<3c5e7a9b1d3f5a7c9e1b3d5f7a9c1e3b@example.com>"),
    (17, "fay.ito@example.org", "<4d6f8a0b2c4e6a8c0e2b4d6f8a0c2e4d@example.com>"),
    (18, "gus.berg@example.org", "<5e7a9b1c3d5f7a9b1c3d5e7f9a1b3c5d@example.com>"),
    # SES put its own Message-ID on the way out: ours is never seen again.
    (19, "hugo.silva@example.net", "<d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0@example.com>"),
    (20, "ines.costa@example.org", "<6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e@example.com>"),
    (21, "jon.park@example.org", "<7a9c1e3b5d7f9a1c3e5b7d9f1a3c5e7b@example.com>"),
    (22, "kim.lee@example.net", "<8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a@example.com>"),
    (23, "mina.lee@example.org", "<e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0@example.com>"),
    (24, "mary.quinn@example.net", "<9c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d@example.com>"),
    (25, "pat.ortiz@example.org", "<f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0@example.com>"),
    (26, "rosa.kent@example.org", "<c3e5a7b9d1f3c5e7a9b1d3f5c7e9a1b3@example.com>"),
    (27, "nora.diaz@example.org", "<a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1@example.com>"),
    (28, "omar.haddad@example.net", "<b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2@example.com>"),
    (29, "paul.reed@example.org", "<a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0@example.com>"),
    (30, "quinn.adams@example.net", "<b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0@example.com>"),
]
VERP_DELIVERY = 4242  # verp_bounce.txt's bounce address names this delivery (of subscriber 30)


@pytest.fixture
def store() -> FakeMailboxStore:
    fake = FakeMailboxStore()
    for n, (sub_id, email, message_id) in enumerate(PEOPLE, start=1):
        fake.add_subscriber(sub_id, email)
        fake.add_delivery(VERP_DELIVERY if sub_id == 30 else n, CAMPAIGN, sub_id, message_id)
    return fake


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    box = mailbox.mbox(str(path))
    for data in messages:
        box.add(data)
    box.close()
    return path


def run(source, store, clock, **kw):
    reports = []
    summary = process_inbox(source, SECRET, store, store, clock=clock, on_message=reports.append, **kw)
    return summary, {r.source_key: r for r in reports}


@pytest.fixture
def sample_mbox(tmp_path) -> Path:
    return write_mbox(tmp_path / "inbox.mbox", [sample(n) for n in names()])


def statuses(store: FakeMailboxStore) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for sub in sorted(store.subscribers.values(), key=lambda s: s.id):
        found.setdefault(sub.status, []).append(sub.id)
    return found


def test_every_sample_in_an_mbox_ends_where_a_person_would_put_it(store, sample_mbox, clock):
    summary, reports = run(MboxSource(sample_mbox), store, clock)
    assert statuses(store) == {
        "bounced": [12, 13, 14, 15, 16, 17, 18, 19, 30],
        "active": [20, 21, 25, 26, 28],
        "unsubscribed": [22, 23, 24, 27, 29],
    }
    assert summary.as_json() == {
        "source": f"mbox {sample_mbox}", "dry_run": False, "read": 19,
        "bounces": {"hard": 9, "soft": 2, "suppressed": 0},
        "unsubscribes": 4, "complaints": 1, "auto_replies": 1, "unmatched": 0, "forged": 1, "to_read": 0,
        "matched_erased": 0, "ignored": 1, "already_processed": 0, "unreadable": 0, "moved": 0,
    }
    assert store.soft == {20: {CAMPAIGN}, 21: {CAMPAIGN}}
    assert store.complaints == {CAMPAIGN: 1}
    outcomes = sorted((r.kind, r.outcome) for r in reports.values())
    assert ("forged", "refused") in outcomes and ("auto-reply", "left alone") in outcomes


def test_each_action_names_its_campaign_when_the_message_can_be_matched(store, sample_mbox, clock):
    run(MboxSource(sample_mbox), store, clock)
    by_subscriber = {e.subscriber_id: e for e in store.events}
    assert by_subscriber[12].campaign_id == CAMPAIGN  # by the returned Message-ID
    assert by_subscriber[30].campaign_id == CAMPAIGN  # by the VERP bounce address
    assert by_subscriber[24].campaign_id == CAMPAIGN  # a reply, by its In-Reply-To
    assert by_subscriber[19].campaign_id is None  # SES changed the Message-ID: matched by token only
    assert by_subscriber[23].reason == "unsubscribe mail (specials)"
    assert by_subscriber[12].reason.startswith("bounce: 5.1.1 550 5.1.1 <ana.lopez@example.org>")
    assert [e.what for e in store.events if e.subscriber_id == 22] == ["complaint", "unsubscribe"]


def test_reading_the_same_mailbox_twice_changes_nothing_the_second_time(store, sample_mbox, clock):
    run(MboxSource(sample_mbox), store, clock)
    before = store.state()
    clock.advance(3600)
    summary, _ = run(MboxSource(sample_mbox), store, clock)
    assert store.state() == before
    assert summary.already_processed == summary.read == 19


def test_a_dry_run_reports_the_same_and_changes_nothing(store, sample_mbox, clock):
    before = store.state()
    summary, reports = run(MboxSource(sample_mbox), store, clock, dry_run=True)
    assert store.state() == before
    assert (summary.bounces_hard, summary.unsubscribes, summary.complaints, summary.forged) == (9, 4, 1, 1)
    real, _ = run(MboxSource(sample_mbox), store, clock)
    assert real.already_processed == 0


def test_the_same_message_twice_in_one_mailbox_is_acted_on_once(store, tmp_path, clock):
    path = write_mbox(tmp_path / "dup.mbox", [sample("postfix_dsn_hard")] * 2 + [sample("no_message_id")] * 2)
    summary, _ = run(MboxSource(path), store, clock)
    assert (summary.read, summary.bounces_hard, summary.unsubscribes, summary.already_processed) == (4, 1, 1, 2)
    assert len(store.events) == 2


def delayed(message_id: str) -> bytes:
    raw = sample("postfix_delayed").replace(b"<7a9c1e3b5d7f9a1c3e5b7d9f1a3c5e7b@example.com>", message_id.encode())
    return raw.replace(b"Message-Id: <20261125192000.6B7C81C0A43@mail.example.com>",
                       f"Message-Id: <dsn-{message_id.strip('<>').split('@')[0]}@mail.example.com>".encode())


def test_three_temporary_bounces_on_different_campaigns_suppress_the_address(store, tmp_path, clock):
    ids = []
    for campaign in (2, 3, 4):
        message_id = f"<{campaign:032x}@example.com>"
        store.add_delivery(100 + campaign, campaign, 21, message_id)
        ids.append(message_id)
    path = write_mbox(tmp_path / "soft.mbox", [delayed(i) for i in ids])
    summary, reports = run(MboxSource(path), store, clock)
    assert [r.outcome for r in reports.values()] == ["soft bounce counted", "soft bounce counted", "suppressed"]
    assert store.status(21) == "bounced"
    assert (summary.bounces_soft, summary.suppressed, summary.bounces_hard) == (3, 1, 0)
    assert "3 temporary bounces on different campaigns" in store.events[-1].reason


def test_temporary_bounces_on_one_campaign_never_suppress(store, tmp_path, clock):
    message_id = "<7a9c1e3b5d7f9a1c3e5b7d9f1a3c5e7b@example.com>"
    messages = [delayed(message_id).replace(b"Message-Id: <dsn-", f"Message-Id: <dsn{n}-".encode()) for n in range(4)]
    summary, _ = run(MboxSource(write_mbox(tmp_path / "same.mbox", messages)), store, clock)
    assert summary.bounces_soft == 4 and summary.suppressed == 0
    assert store.status(21) == "active"


def test_a_valid_token_of_an_erased_subscriber_is_counted_and_changes_nothing(store, tmp_path, clock):
    del store.subscribers[23]  # erased: the token still verifies, the person is gone
    store.deliveries[1] = store.deliveries[1].__class__(1, CAMPAIGN, None, "")  # Ana erased too
    before = store.state()
    path = write_mbox(tmp_path / "erased.mbox", [sample("unsubscribe_mailto"), sample("postfix_dsn_hard")])
    summary, reports = run(MboxSource(path), store, clock)
    assert summary.matched_erased == 2 and summary.unsubscribes == summary.bounces_hard == 0
    assert store.events == before[2]
    assert all("erased" in r.reason for r in reports.values())


def test_a_bounce_for_nobody_we_know_is_unmatched(tmp_path, clock):
    empty = FakeMailboxStore()
    # (with this workspace's secret the returned token would say "erased": see above)
    path = write_mbox(tmp_path / "x.mbox", [sample("postfix_dsn_hard", secret=b"another"), sample("remove_me_reply")])
    summary, _ = run(MboxSource(path), empty, clock)
    assert summary.unmatched == 2 and empty.events == []


def test_a_bounce_without_message_id_match_falls_back_to_the_address_as_a_temporary_one(store, tmp_path, clock):
    raw = sample("yahoo_nonstandard").replace(b"Message-ID: <4d6f", b"Message-ID: <ffff")
    raw = raw.replace(b"unsubscribe%20", b"unsubscribe%20x")  # and no usable token either
    summary, reports = run(MboxSource(write_mbox(tmp_path / "y.mbox", [raw])), store, clock)
    # Anyone could write such a report: it counts against the last campaign that went to
    # them, like a temporary bounce; three campaigns in a row suppress the address.
    assert (summary.bounces_hard, summary.bounces_soft) == (0, 1)
    assert store.status(17) == "active"
    assert next(iter(reports.values())).campaign_id == CAMPAIGN
    for campaign in (CAMPAIGN + 1, CAMPAIGN + 2):
        store.add_delivery(100 + campaign, campaign, 17, f"<other.{campaign}@example.com>")
        again = raw.replace(b"Message-ID: <", f"Message-ID: <{campaign}".encode(), 1)
        run(MboxSource(write_mbox(tmp_path / f"y{campaign}.mbox", [again])), store, clock)
    assert store.status(17) == "bounced"


def test_a_failure_in_the_store_leaves_the_message_unprocessed_for_the_next_run(store, sample_mbox, clock):
    store.fail_on = "unsubscribe"  # the complaint's second step fails
    with pytest.raises(RuntimeError):
        run(MboxSource(sample_mbox), store, clock)
    assert store.complaints == {}  # the complaint of that message was rolled back with it
    summary, _ = run(MboxSource(sample_mbox), store, clock)
    assert store.complaints == {CAMPAIGN: 1}
    assert statuses(store)["unsubscribed"] == [22, 23, 24, 27, 29]


# -- the file readers -----------------------------------------------------------------------


def test_the_mbox_reader_streams_messages_and_undoes_from_quoting(tmp_path):
    body = b"From: a@example.org\nSubject: x\nMessage-ID: <q@example.org>\n\nFrom the start\n>From quoted\n"
    path = tmp_path / "q.mbox"
    path.write_bytes(
        b"From MAILER-DAEMON Wed Nov 25 10:00:00 2026\n" + body.replace(b"\nFrom the", b"\n>From the") + b"\n"
        b"From MAILER-DAEMON Wed Nov 25 10:00:01 2026\nFrom: b@example.org\n\nsecond\n"
    )
    items = list(MboxSource(path).messages())
    assert [i.key for i in items] == ["0", str(len(b"From MAILER-DAEMON Wed Nov 25 10:00:00 2026\n" + body) + 2)]
    assert items[0].data == body.replace(b">From quoted", b"From quoted")
    assert items[1].data == b"From: b@example.org\n\nsecond\n"


def test_a_huge_message_is_read_only_as_far_as_it_tells_what_it_is(store, tmp_path, clock):
    """A bounce with a 12 MB attachment, and a 12 MB line without a newline: each is judged on
    its first megabytes (memory stays small) and the message after it is read whole."""
    bounce = sample("postfix_dsn_hard")
    huge = bounce + b"\n" + b"QUJD" * (3 * 1024 * 1024) + b"\n"
    one_line = b"From: x@example.org\nSubject: a line\n\n" + b"y" * (12 * 1024 * 1024) + b"\n"
    path = write_mbox(tmp_path / "big.mbox", [huge, one_line, sample("remove_me_reply")])
    handed = [len(item.data) for item in MboxSource(path).messages()]
    assert len(handed) == 3 and max(handed) <= MAX_MESSAGE_BYTES + 64 * 1024
    summary, _ = run(MboxSource(path), store, clock)
    assert (summary.bounces_hard, summary.unsubscribes, summary.ignored) == (1, 1, 1)


def test_a_file_that_is_not_an_mbox_says_so(tmp_path):
    path = tmp_path / "one.eml"
    path.write_bytes(sample("baja_reply"))
    with pytest.raises(InputError, match="not an mbox file"):
        list(MboxSource(path).messages())
    with pytest.raises(InputError, match="Cannot read"):
        list(MboxSource(tmp_path / "missing.mbox").messages())


def test_since_keeps_only_messages_dated_on_or_after_the_day(tmp_path):
    old = sample("baja_reply").replace(b"Date: Thu, 26 Nov 2026", b"Date: Sun, 01 Nov 2026")
    path = write_mbox(tmp_path / "s.mbox", [old, sample("remove_me_reply")])
    kept = list(MboxSource(path, since=date(2026, 11, 20)).messages())
    assert len(kept) == 1 and b"Mary" in kept[0].data


def make_maildir(path: Path, messages: dict[str, bytes]) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for name, data in messages.items():
        (path / name).write_bytes(data)
    return path


def test_a_maildir_is_read_from_new_and_cur_and_never_changed(store, tmp_path, clock):
    box = make_maildir(tmp_path / "Maildir", {
        "new/1795620000.M1P1.host": sample("postfix_dsn_hard"),
        "cur/1795620001.M2P1.host:2,S": sample("thanks_reply"),
    })
    before = sorted(p.relative_to(box).as_posix() for p in box.rglob("*"))
    summary, reports = run(MaildirSource(box), store, clock)
    assert sorted(reports) == ["cur/1795620001.M2P1.host:2,S", "new/1795620000.M1P1.host"]
    assert (summary.bounces_hard, summary.ignored, summary.moved) == (1, 1, 0)
    assert sorted(p.relative_to(box).as_posix() for p in box.rglob("*")) == before


def test_archive_moves_what_was_handled_and_leaves_the_rest_for_a_person(store, tmp_path, clock):
    box = make_maildir(tmp_path / "Maildir", {
        "new/a.host": sample("postfix_dsn_hard"),
        "new/b.host": sample("thanks_reply"),
        "cur/c.host:2,S": sample("out_of_office"),
        "cur/d.host:2,": sample("remove_me_reply"),
    })
    summary, _ = run(MaildirSource(box, archive=tmp_path / "Done"), store, clock)
    assert summary.moved == 2
    assert sorted(p.name for p in (tmp_path / "Done" / "cur").iterdir()) == ["a.host:2,", "d.host:2,"]
    assert sorted(p.name for p in (box / "new").iterdir()) == ["b.host"]
    assert sorted(p.name for p in (box / "cur").iterdir()) == ["c.host:2,S"]


def test_a_folder_that_is_not_a_maildir_says_so(tmp_path):
    with pytest.raises(InputError, match="not a maildir"):
        MaildirSource(tmp_path)
