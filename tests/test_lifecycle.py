"""The lifecycle table: every allowed transition changes the status, every forbidden one changes nothing.

Each case puts a real row (SQLite) in a given status, calls the store's transition
method, and looks at the row again. The whole table is walked, source by source.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailer.lifecycle import (
    CAMPAIGN_TRANSITIONS,
    DELIVERY_TRANSITIONS,
    CampaignStatus,
    DeliveryStatus,
    TransitionError,
    after_crash,
)
from mailer.models import Campaign, Delivery, Outcome, Subscriber
from mailer.store import Store

NOW = "2026-11-25T15:00:00Z"
C, D = CampaignStatus, DeliveryStatus


def draft(**kw) -> Campaign:
    values = dict(
        id=0, key="k1", name="nov", content_path="/x/nov.md", content_hash="h", content="c", templates="{}",
        template="news", subject="Hello", list_name="news", tags=(), status=C.DRAFT, status_reason="",
        scheduled_at="", created_at=NOW, started_at="", finished_at="",
    )
    values.update(kw)
    return Campaign(**values)


@pytest.fixture
def store():
    s = Store.memory()
    s.subscribers.add(Subscriber(email="ann@example.com", email_key="ann@example.com", lists=("news",)), bytes(32), NOW)
    yield s
    s.close()


def force_campaign(store: Store, status: str) -> Campaign:
    c = store.campaigns.create(draft(key=f"k-{status}"), NOW)
    store.conn.execute("UPDATE campaigns SET status = ? WHERE id = ?", (status, c.id))
    return store.campaigns.require(c.id)


CAMPAIGN_CALLS = {
    "schedule": lambda s, c: s.campaigns.schedule(c.id, "2026-12-01T14:00:00Z"),
    "unschedule": lambda s, c: s.campaigns.unschedule(c.id),
    "start": lambda s, c: s.campaigns.start(c, NOW),
    "pause": lambda s, c: s.campaigns.pause(c.id, "Ctrl-C"),
    "resume": lambda s, c: s.campaigns.resume(c.id),
    "finish": lambda s, c: s.campaigns.finish(c.id, NOW),
    "cancel": lambda s, c: s.campaigns.cancel(c.id, NOW),
}


def test_every_campaign_transition_has_a_store_method():
    assert set(CAMPAIGN_CALLS) == set(CAMPAIGN_TRANSITIONS)


@pytest.mark.parametrize("name", sorted(CAMPAIGN_TRANSITIONS))
@pytest.mark.parametrize("source", list(C))
def test_campaign_transition_from_every_status(store, name, source):
    t = CAMPAIGN_TRANSITIONS[name]
    c = force_campaign(store, source)
    if source in t.sources:
        after = CAMPAIGN_CALLS[name](store, c)
        assert after.status in t.targets
        assert store.campaigns.require(c.id).status in t.targets
    else:
        with pytest.raises(TransitionError, match=f"is {source}"):
            CAMPAIGN_CALLS[name](store, c)
        assert store.campaigns.require(c.id).status == source  # nothing changed


def test_starting_fixes_the_audience_once_and_a_second_start_is_refused(store):
    c = store.campaigns.create(draft(), NOW)
    store.campaigns.start(c, NOW)
    assert store.deliveries.total(c.id) == 1
    with pytest.raises(TransitionError):
        store.campaigns.start(c, NOW)
    assert store.deliveries.total(c.id) == 1


def test_a_refused_start_fixes_no_audience(store):
    c = force_campaign(store, C.CANCELLED)
    with pytest.raises(TransitionError):
        store.campaigns.start(c, NOW)
    assert store.deliveries.total(c.id) == 0


# -- deliveries -------------------------------------------------------------------------


def force_delivery(store: Store, status: str) -> Delivery:
    c = store.campaigns.start(store.campaigns.create(draft(key=f"d-{status}"), NOW), NOW)
    store.conn.execute("UPDATE deliveries SET status = ? WHERE campaign_id = ?", (status, c.id))
    [d] = store.deliveries.of_campaign(c.id)
    return d


def status_of(store: Store, d: Delivery) -> str:
    [row] = store.deliveries.of_campaign(d.campaign_id)
    return row.status


DELIVERY_CALLS = {
    "mark_sending": [lambda s, d: s.deliveries.mark_sending(d.id, "<m@x>", NOW)],
    "record_outcome": [
        lambda s, d, st=st: s.deliveries.record_outcome(Outcome(d, st, "250 ok", NOW))
        for st in (D.SENT, D.FAILED, D.BOUNCED, D.PENDING)
    ],
    "mark_unknown": [lambda s, d: s.deliveries.mark_unknown(d.id, "silent", NOW)],
    "release": [lambda s, d: s.deliveries.release(d.id, "no byte went out", NOW)],
    "skip": [lambda s, d, st=st: s.deliveries.skip(d.id, st, "gone", NOW) for st in (D.SKIPPED, D.FAILED)],
    "give_up": [lambda s, d: s.deliveries.give_up(d, "given up after 4 days of temporary refusals", NOW)],
}


def test_every_single_delivery_transition_is_walked():
    # retry is per campaign and bounce_later comes with the mailbox loop; both are tested apart
    assert set(DELIVERY_CALLS) | {"retry", "bounce_later"} == set(DELIVERY_TRANSITIONS)


@pytest.mark.parametrize(
    "name, call", [(n, c) for n, calls in sorted(DELIVERY_CALLS.items()) for c in calls]
)
@pytest.mark.parametrize("source", list(D))
def test_delivery_transition_from_every_status(store, name, call, source):
    t = DELIVERY_TRANSITIONS[name]
    d = force_delivery(store, source)
    if source in t.sources:
        call(store, d)
        assert status_of(store, d) in t.targets
    else:
        with pytest.raises(TransitionError, match=f"is {source}"):
            call(store, d)
        assert status_of(store, d) == source


def test_an_outcome_refused_with_the_next_mark_rolls_both_back(store):
    """The previous reply and the next 'sending' mark share one commit: all or nothing."""
    c = store.campaigns.start(store.campaigns.create(draft(), NOW), NOW)
    [d] = store.deliveries.of_campaign(c.id)
    store.deliveries.mark_sending(d.id, "<a@x>", NOW)
    stale = replace(d, id=d.id)
    with pytest.raises(TransitionError):
        # a second mark of the same row is refused, so its finish is not committed either
        store.deliveries.mark_sending(d.id, "<b@x>", NOW, finish=Outcome(stale, D.SENT, "250", NOW))
    assert status_of(store, d) == D.SENDING


@pytest.mark.parametrize("source", list(D))
def test_retry_puts_back_only_failed_or_unknown(store, source):
    d = force_delivery(store, source)
    for status in (D.FAILED, D.UNKNOWN):
        store.deliveries.retry(d.campaign_id, status, NOW)
    expected = D.PENDING if source in (D.FAILED, D.UNKNOWN) else source
    assert status_of(store, d) == expected


def test_a_crash_leaves_only_rows_in_flight_unknown(store):
    sending = force_delivery(store, D.SENDING)
    sent = force_delivery(store, D.SENT)
    assert store.deliveries.mark_interrupted(NOW) == 1
    assert status_of(store, sending) == D.UNKNOWN and status_of(store, sent) == D.SENT


@pytest.mark.parametrize(
    "handed, rebooted, expected",
    [(False, False, D.PENDING), (True, False, D.UNKNOWN), (False, True, D.UNKNOWN), (True, True, D.UNKNOWN)],
    ids=["marked-only", "handed-over", "marked-only-then-power-cut", "handed-over-then-power-cut"],
)
def test_after_a_crash_only_a_message_whose_data_may_have_left_is_unknown(store, handed, rebooted, expected):
    """A row marked ahead but never handed over goes back to pending, unless the machine restarted
    since (the hand-over's commit is not synced, so after a power cut an unhanded row proves nothing)."""
    d = force_delivery(store, D.PENDING)
    store.deliveries.reserve([(d.id, "<m@x>")], NOW, boot="boot-1")
    if handed:
        store.deliveries.hand_over(d.id, NOW)
    unknown = store.deliveries.mark_interrupted(NOW, boot="boot-2" if rebooted else "boot-1")
    assert status_of(store, d) == expected
    assert unknown == (expected == D.UNKNOWN)
    assert after_crash(handed, not rebooted) == expected


@pytest.mark.parametrize("source", list(D))
def test_only_a_delivery_in_sending_is_handed_over(store, source):
    d = force_delivery(store, source)
    if source == D.SENDING:
        store.deliveries.hand_over(d.id, NOW)
        [row] = store.deliveries.of_campaign(d.campaign_id)
        assert row.attempts == 1 and row.attempted_at == NOW
    else:
        with pytest.raises(TransitionError, match=f"is {source}"):
            store.deliveries.hand_over(d.id, NOW)
    assert status_of(store, d) == source


def test_a_hand_over_carries_the_replies_before_it_in_one_commit(store):
    c = store.campaigns.start(store.campaigns.create(draft(), NOW), NOW)
    store.subscribers.add(Subscriber(email="bo@example.com", email_key="bo@example.com", lists=("news",)), bytes(32), NOW)
    c2 = store.campaigns.start(store.campaigns.create(draft(key="k2"), NOW), NOW)
    first, second = list(store.deliveries.of_campaign(c2.id))
    store.deliveries.reserve([(first.id, "<a@x>"), (second.id, "<b@x>")], NOW)
    store.deliveries.hand_over(first.id, NOW)
    with pytest.raises(TransitionError):  # the outcome is refused (first is not 'sending' twice) ...
        store.deliveries.hand_over(second.id, NOW, finish=[Outcome(first, D.SENT, "250", NOW),
                                                          Outcome(first, D.SENT, "250", NOW)])
    # ... so nothing of the commit happened
    assert [d.status for d in store.deliveries.of_campaign(c2.id)] == [D.SENDING, D.SENDING]
    assert c.id != c2.id


def test_a_bounce_outcome_suppresses_the_subscriber_in_the_same_commit(store):
    c = store.campaigns.start(store.campaigns.create(draft(), NOW), NOW)
    [d] = store.deliveries.of_campaign(c.id)
    store.deliveries.mark_sending(d.id, "<a@x>", NOW)
    store.deliveries.record_outcome(Outcome(d, D.BOUNCED, "550 5.1.1 no such user", NOW, bounce=True))
    assert store.subscribers.get("ann@example.com").status == "bounced"
