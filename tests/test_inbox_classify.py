"""The classifier: each real-format sample of tests/data/inbox gets the verdict a person would give it."""

from __future__ import annotations

import pytest

from mailer.inbox.classify import Kind, classify, message_hash
from mailer.tokens import make_verp_token
from tests.inbox_samples import SECRET, forged, names, sample, token

OURS = "@example.com>"

# name: (kind, addresses named, first original Message-ID, subscriber id from a token, list, status)
EXPECTED = {
    "postfix_dsn_hard": (Kind.BOUNCE_HARD, ("ana.lopez@example.org",), "<0f3c8e2a9b1d4c5e6f708192a3b4c5d6" + OURS, 12, "news", "5.1.1"),
    "exim_dsn_hard": (Kind.BOUNCE_HARD, ("ben.okafor@example.net",), "<7d2e4f6a8b0c1d3e5f7a9b1c3d5e7f90" + OURS, 13, "news", "5.0.0"),
    "headers_only_dsn": (Kind.BOUNCE_HARD, ("carla.mendes@example.net",), "<1a2b3c4d5e6f708192a3b4c5d6e7f809" + OURS, 14, "news", "5.2.2"),
    "m365_ndr": (Kind.BOUNCE_HARD, ("dana.wu@example.org",), "<2b4d6f8a0c1e3a5c7e9b1d3f5a7c9e1b" + OURS, 15, "news", "5.1.10"),
    "gmail_nonstandard": (Kind.BOUNCE_HARD, ("eli.novak@example.net",), "<3c5e7a9b1d3f5a7c9e1b3d5f7a9c1e3b" + OURS, 16, "news", "5.1.1"),
    "yahoo_nonstandard": (Kind.BOUNCE_HARD, ("fay.ito@example.org",), "<4d6f8a0b2c4e6a8c0e2b4d6f8a0c2e4d" + OURS, 17, "news", ""),
    "qmail_failure": (Kind.BOUNCE_HARD, ("gus.berg@example.org",), "<5e7a9b1c3d5f7a9b1c3d5e7f9a1b3c5d" + OURS, 18, "news", "5.1.1"),
    # SES replaces the Message-ID, so the token in the returned List-Unsubscribe is what matches.
    "ses_dsn": (Kind.BOUNCE_HARD, ("hugo.silva@example.net",), "<010001936a2b3b11-0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0-000000@email.amazonses.com>", 19, "news", "5.1.1"),
    "ses_notification": (Kind.BOUNCE_SOFT, ("ines.costa@example.org",), "<6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e" + OURS, 20, "news", "4.2.2"),
    "postfix_delayed": (Kind.BOUNCE_SOFT, ("jon.park@example.org",), "<7a9c1e3b5d7f9a1c3e5b7d9f1a3c5e7b" + OURS, 21, "news", "4.7.1"),
    "arf_complaint": (Kind.COMPLAINT, ("kim.lee@example.net",), "<8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a" + OURS, 22, "news", ""),
    "unsubscribe_mailto": (Kind.UNSUBSCRIBE, (), None, 23, "specials", ""),
    "remove_me_reply": (Kind.UNSUBSCRIBE, (), "<9c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d" + OURS, None, "", ""),
    "baja_reply": (Kind.UNSUBSCRIBE, (), "<a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1" + OURS, None, "", ""),
    "out_of_office": (Kind.AUTO_REPLY, (), None, None, "", ""),
    "forged_token_reply": (Kind.FORGED, (), None, None, "", ""),
    "no_message_id": (Kind.UNSUBSCRIBE, (), None, None, "", ""),
    "verp_bounce": (Kind.BOUNCE_HARD, (), None, None, "", "5.2.1"),
    "thanks_reply": (Kind.OTHER, (), None, None, "", ""),
}


def test_every_sample_has_an_expected_verdict_and_stays_small():
    assert sorted(EXPECTED) == names()
    for name in names():
        assert len(sample(name)) < 6000, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_gets_its_verdict(name):
    kind, addresses, first_id, subscriber_id, list_name, status = EXPECTED[name]
    verdict = classify(sample(name), SECRET)
    assert verdict.kind == kind, verdict.reason
    assert verdict.addresses == addresses
    assert (verdict.original_message_ids[0] if verdict.original_message_ids else None) == first_id
    assert verdict.subscriber_id == subscriber_id
    assert verdict.list_name == list_name
    assert verdict.status == status


def test_a_bounce_says_why_in_the_servers_words():
    verdict = classify(sample("postfix_dsn_hard"), SECRET)
    (failure,) = verdict.failures
    assert failure.permanent and failure.action == "failed"
    assert "User unknown in virtual mailbox table" in failure.diagnostic
    assert "Status: 5.1.1" in verdict.reason
    assert verdict.key == "<20261125150211.4F1D21C0A3E@mail.example.com>"


def test_a_verp_bounce_names_its_delivery_even_without_the_original():
    verdict = classify(sample("verp_bounce"), SECRET)
    assert verdict.verp_delivery_id == 4242
    assert verdict.addresses == () and verdict.original_message_ids == ()
    assert verdict.failures[0].permanent


def test_a_verp_address_with_a_bad_signature_is_forged():
    raw = sample("verp_bounce").replace(
        make_verp_token(SECRET, 4242).encode(), make_verp_token(b"another workspace", 4242).encode()
    )
    assert classify(raw, SECRET).kind == Kind.FORGED


def test_a_token_from_another_workspace_is_forged_and_never_an_unsubscribe():
    raw = sample("unsubscribe_mailto", secret=b"another workspace's secret")
    verdict = classify(raw, SECRET)
    assert verdict.kind == Kind.FORGED
    assert verdict.subscriber_id is None and verdict.token


def test_a_quoted_newsletter_with_its_unsubscribe_link_is_not_a_request():
    # Rosa quotes the whole letter, footer and token included, and writes "stop" in passing.
    verdict = classify(sample("thanks_reply"), SECRET)
    assert verdict.kind == Kind.OTHER
    assert token(26, "news").encode() in sample("thanks_reply")


def test_the_spanish_reply_is_read_through_its_encoding():
    verdict = classify(sample("baja_reply"), SECRET)
    assert verdict.sender == "nora.diaz@example.org"
    assert verdict.subject == "RE: December specials"


# -- built here: variations too small for a file of their own -------------------------------


def mail(body: str, subject: str = "Re: December specials", headers: str = "", sender: str = "sam@example.org") -> bytes:
    head = (
        f"From: Sam <{sender}>\nTo: news@example.com\nSubject: {subject}\n"
        f"Date: Thu, 26 Nov 2026 10:00:00 -0500\nMessage-ID: <x1@example.org>\n{headers}"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
    )
    return (head + body).encode("utf-8")


@pytest.mark.parametrize(
    "body",
    [
        "STOP\n",
        "Baja\n",
        "Please unsubscribe me.\n\nSam\n",
        "Take me off this list please\n",
        "I'd like to opt out, thanks.\n",
        "Hola,\nPor favor eliminarme de la lista.\nSaludos\n",
        "Quiero cancelar mi suscripción.\n",
        "> old quoted text\nremove me\n",
    ],
)
def test_a_short_request_to_leave_in_the_first_lines_unsubscribes_the_sender(body):
    verdict = classify(mail(body), SECRET)
    assert verdict.kind == Kind.UNSUBSCRIBE, verdict.reason
    assert verdict.sender == "sam@example.org"


@pytest.mark.parametrize(
    "body",
    [
        "Please don't unsubscribe me, I love these!\n",
        "Can you stop by on Tuesday?\n",
        "Hi John,\nThanks for the letter.\nSee you Tuesday.\nWe talked about my back.\nPlease remove me from the waiting list for Friday.\n",
        "Hi,\n" + "I have a long question about my treatment plan. " * 20 + "\nunsubscribe\n",
        "On Wed, Nov 25, 2026 John wrote:\n> remove me\n",
    ],
)
def test_a_message_that_merely_mentions_leaving_is_left_alone(body):
    assert classify(mail(body), SECRET).kind == Kind.OTHER


@pytest.mark.parametrize(
    ("body", "subject", "why"),
    [
        ("Please remove me from the waitlist for Tuesday, I found another time.\n", None, "something other than the mailing"),
        ("Please remove me from the appointment reminders\n", None, "something other than the mailing"),
        ("Unsubscribe? Never! Love these.\n", None, "in a question"),
        ("How do I unsubscribe?\n", None, "in a question"),
        ("Can you unsubscribe my husband? His address is james.whitaker@example.net\n", None, "someone else"),
        ("Please unsubscribe jo@example.net, she moved away\n", None, "someone else"),
        ("Stop sending me the specials but keep the news please\n", None, "one list only"),
    ],
)
def test_words_of_leaving_that_are_not_plainly_the_senders_request_are_left_for_a_person(body, subject, why):
    verdict = classify(mail(body), SECRET)
    assert verdict.kind == Kind.UNCLEAR and why in verdict.reason


@pytest.mark.parametrize(
    "body",
    ["Remove me from your list please\n", "Please remove me from the mailing list.\n", "Quitarme de la lista por favor\n",
     "I don't want these anymore, unsubscribe me\n", "Unsubscribe. No thanks.\n", "Can you unsubscribe me?\n",
     "Take me off your mailing list\n"],
)
def test_a_plain_request_is_still_one(body):
    assert classify(mail(body), SECRET).kind == Kind.UNSUBSCRIBE


def test_a_reply_subject_above_words_of_their_own_is_not_their_request():
    assert classify(mail("see you soon\n", subject="Re: stop"), SECRET).kind == Kind.OTHER


def test_an_unsubscribe_subject_with_an_empty_body_is_a_request():
    assert classify(mail("", subject="Re: unsubscribe"), SECRET).kind == Kind.UNSUBSCRIBE


def test_a_token_pasted_into_the_first_line_is_a_request_for_that_subscriber():
    verdict = classify(mail(f"unsubscribe {token(31, 'specials')}\n", subject="help"), SECRET)
    assert (verdict.kind, verdict.subscriber_id, verdict.list_name) == (Kind.UNSUBSCRIBE, 31, "specials")


def test_a_forged_token_pasted_into_the_body_is_forged():
    verdict = classify(mail(f"unsubscribe {forged(31, 'news')}\n", subject="help"), SECRET)
    assert verdict.kind == Kind.FORGED


@pytest.mark.parametrize(
    "headers, subject",
    [
        ("Auto-Submitted: auto-replied\n", "Re: December specials"),
        ("X-Autoreply: yes\n", "Re: December specials"),
        ("Precedence: auto_reply\n", "Re: December specials"),
        ("Precedence: bulk\n", "Out of Office: December specials"),
        ("", "Respuesta automática: December specials"),
    ],
)
def test_auto_replies_are_recognised_even_when_they_say_remove_me(headers, subject):
    verdict = classify(mail("I am away. Please remove me from urgent lists.\n", subject=subject, headers=headers), SECRET)
    assert verdict.kind == Kind.AUTO_REPLY


def dsn(*blocks: str, headers: str = "") -> bytes:
    fields = "\n\n".join(blocks)
    return (
        "From: MAILER-DAEMON@mx.example.net\nTo: news@example.com\nSubject: Delivery report\n"
        f"Message-ID: <dsn1@mx.example.net>\n{headers}MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nReport.\n\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        f"{fields}\n\n--b--\n"
    ).encode()


def test_a_dsn_that_gave_up_for_a_temporary_reason_is_a_soft_bounce():
    verdict = classify(dsn("Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 4.4.7\n"
                           "Diagnostic-Code: smtp; 421 4.4.7 Message expired"), SECRET)
    assert verdict.kind == Kind.BOUNCE_SOFT and verdict.status == "4.4.7"


def test_each_recipient_block_is_read_on_its_own():
    verdict = classify(dsn(
        "Original-Recipient: rfc822; Old.Name@example.org\nFinal-Recipient: rfc822; new@example.org\n"
        "Action: delayed\nStatus: 4.2.2",
        "Final-Recipient: rfc822; b@example.net\nAction: failed\nDiagnostic-Code: smtp; 550 no such user",
        "Final-Recipient: rfc822; c@example.net\nAction: delivered\nStatus: 2.0.0",
    ), SECRET)
    assert verdict.kind == Kind.BOUNCE_HARD
    assert [(f.address, f.permanent, f.status) for f in verdict.failures] == [
        ("old.name@example.org", False, "4.2.2"),
        ("b@example.net", True, ""),
    ]


def test_a_report_of_successful_delivery_is_not_a_bounce():
    verdict = classify(dsn("Final-Recipient: rfc822; a@example.org\nAction: delivered\nStatus: 2.0.0"), SECRET)
    assert verdict.kind == Kind.OTHER


def test_an_authentication_failure_report_is_not_a_complaint():
    raw = sample("arf_complaint").replace(b"Feedback-Type: abuse", b"Feedback-Type: auth-failure")
    assert classify(raw, SECRET).kind == Kind.OTHER


def test_a_message_without_message_id_is_known_by_a_hash_that_survives_mailbox_formats():
    raw = sample("no_message_id")
    verdict = classify(raw, SECRET)
    assert verdict.key.startswith("sha256:") and verdict.message_id == ""
    as_imap = raw.replace(b"\n", b"\r\n")
    as_mbox = raw.replace(b"Subject:", b"Status: RO\nX-Status: A\nContent-Length: 0\nSubject:")
    assert classify(as_imap, SECRET).key == verdict.key == classify(as_mbox, SECRET).key
    assert message_hash(raw + b"another line\n") != verdict.key


def test_fragments_without_headers_are_told_apart():
    first, second = b"\x89garbled bytes, no headers at all", b"other garbage without a blank line\n"
    assert message_hash(first) != message_hash(second)
    assert message_hash(b": \n\nbody one") != message_hash(b": \n\nbody two")


@pytest.mark.parametrize("name", names())
def test_a_damaged_message_is_classified_without_an_exception(name):
    raw = sample(name)
    for cut in range(0, len(raw), max(1, len(raw) // 15)):
        classify(raw[:cut], SECRET)
    classify(raw.replace(b"boundary=", b"boundary=x"), SECRET)
    classify(bytes(range(256)) * 4 + raw, SECRET)
