"""The same letter under a new file name is not sent to the same people again.

`cp news.md march-news.md; mailer send march-news.md --yes` must be refused, naming the
earlier campaign, its date, and how many of these people already got it; --allow-repeat
sends it anyway. Against the real SMTP server, through the CLI.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mailer.cli import AppState, app
from mailer.cli.output import Output
from mailer.repeats import SIMILAR, normalise, similarity
from tests.test_send import EVERYONE, Sending, sample_workspace, sending  # noqa: F401 (fixtures)

DAY = 24 * 3600


def copy_as(sending: Sending, name: str, edit=lambda text: text):
    path = sending.content.with_name(name)
    path.write_text(edit(sending.content.read_text()))
    return path


def test_the_same_letter_under_a_new_name_is_refused_with_the_earlier_campaign(sending):
    assert sending.send(sending.content).exit_code == 0
    march = copy_as(sending, "march-specials.md")
    sending.clock.advance(3 * DAY)

    result = sending.send(march)

    assert result.exit_code == 2
    assert ("The same letter went out as campaign 1 (december-specials) on 2026-11-25 10:00 EST: "
            "46 of the 46 people it would go to got it then") in result.stderr
    assert "mailer send " in result.stderr and "--allow-repeat" in result.stderr
    assert len(sending.server.received) == EVERYONE  # nothing more went out
    assert [c["id"] for c in sending.m.json("campaign", "list")] == [1]  # and nothing was stored

    anyway = sending.send(march, "--allow-repeat")
    assert anyway.exit_code == 0, anyway.stderr
    assert "warning: repeat: The same letter went out as campaign 1" in anyway.stderr
    assert len(sending.server.received) == 2 * EVERYONE


def test_a_typo_fix_saved_as_final_is_nearly_the_same_letter(sending):
    assert sending.send(sending.content).exit_code == 0
    final = copy_as(sending, "december-specials-final.md", lambda t: t.replace("busy month", "bussy month"))

    result = sending.send(final)

    assert result.exit_code == 2
    assert "Nearly the same letter (99% alike) went out as campaign 1" in result.stderr
    assert len(sending.server.received) == EVERYONE


def test_only_people_of_this_audience_who_got_it_count(sending):
    for address in ("hannah.goldberg@example.com", "daniel.choi@example.net"):
        assert sending.m("subscribers", "add", address, "--tag", "vip").exit_code == 0
    assert sending.send(sending.content, "--tag", "vip").exit_code == 0
    assert len(sending.server.received) == 2

    result = sending.send(copy_as(sending, "everyone.md"))

    assert result.exit_code == 2
    assert "2 of the 46 people it would go to got it then" in result.stderr


def test_a_letter_to_other_people_or_older_than_30_days_is_not_a_repeat(sending):
    assert sending.send(sending.content, "--list", "news").exit_code == 0
    for address in sending.audience():
        sending.m("subscribers", "unsubscribe", address, "--list", "news")
    # Everyone left the news list: the news copy would reach nobody who got it.
    sending.m("subscribers", "add", "new.patient@example.com", "--list", "news", "--consent", "Yes to news")
    to_news = sending.send(copy_as(sending, "copy-for-news.md"), "--list", "news")
    assert to_news.exit_code == 0, to_news.stderr

    sending.clock.advance(31 * DAY)
    # the same letter a month on (its offers moved on too: an offer that has ended is an error)
    later = sending.send(copy_as(sending, "next-year.md", lambda t: t.replace("2026-12-", "2027-01-")))
    assert later.exit_code == 0, later.stderr


def test_next_months_letter_that_keeps_the_offers_is_not_a_repeat(sending):
    assert sending.send(sending.content).exit_code == 0
    january = copy_as(sending, "january-specials.md", lambda t: t.replace(
        "December specials: ease your pain before the holidays", "January specials: a fresh start for your back",
    ).replace("DEC-", "JAN-").replace("2026-12-31", "2027-01-31").replace("2026-12-24", "2027-01-31").replace(
        "December is a busy month, and pain does not take a holiday. If a stiff neck,\n"
        "an aching back or a migraine has been slowing you down, this is a good moment to\n"
        "do something about it, before the holiday rush.",
        "A new year is a good time to look after yourself. If the cold has made your\n"
        "joints stiff or the holidays left you with headaches, come and see us early in\n"
        "the month, when appointments are easy to find.",
    ))
    result = sending.send(january)
    assert result.exit_code == 0, result.stderr


def test_check_reports_the_repeat_and_allow_repeat_makes_it_a_warning(sending):
    assert sending.send(sending.content).exit_code == 0
    march = copy_as(sending, "march-specials.md")

    checked = sending.m("check", march, "--json")
    assert checked.exit_code == 2
    [repeat] = [c for c in json.loads(checked.stdout)["checks"] if c["check"] == "repeat"]
    assert repeat["level"] == "error" and "campaign 1 (december-specials)" in repeat["message"]
    allowed = json.loads(sending.m("check", march, "--json", "--allow-repeat").stdout)
    assert [c["level"] for c in allowed["checks"] if c["check"] == "repeat"] == ["warning"]
    assert allowed["ok"] is True
    dry = sending.send(march, "--dry-run")  # a dry run says what the real send would: refused
    assert dry.exit_code == 2 and "error: repeat" in dry.stderr
    assert sending.send(march, "--dry-run", "--allow-repeat").exit_code == 0


def test_a_scheduled_copy_is_refused_when_made_and_when_due(sending):
    assert sending.send(sending.content).exit_code == 0
    march = copy_as(sending, "march-specials.md")
    refused = sending.m("campaign", "create", march, "--at", "2026-11-26 09:00")
    assert refused.exit_code == 2 and "campaign 1" in refused.stderr and "--allow-repeat" in refused.stderr
    assert sending.m("campaign", "create", march, "--at", "2026-11-26 09:00", "--allow-repeat").exit_code == 0
    sending.clock.advance(DAY)
    assert sending.m("run-due").exit_code == 0  # made on purpose: sent
    assert len(sending.server.received) == 2 * EVERYONE


def test_the_question_before_sending_says_when_this_subject_last_went_out(sending):
    def ask(*args):
        obj = AppState(home=str(sending.home), clock=sending.clock, output=Output(force_terminal=True))
        return CliRunner().invoke(app, [str(a) for a in args], obj=obj, input="n\n")

    first = ask("send", sending.content)
    assert "subject last sent" in first.stdout and "never" in first.stdout
    assert sending.send(sending.content).exit_code == 0
    other = copy_as(sending, "other.md", lambda t: t.replace("December is a busy month", "We are open"))
    sending.clock.advance(DAY)

    second = ask("send", other, "--allow-repeat")

    assert second.exit_code == 2  # answered no
    assert "2026-11-25 10:00 EST, campaign 1 (46 people)" in second.stdout
    assert len(sending.server.received) == EVERYONE


def test_similarity_ignores_tokens_case_and_punctuation():
    a = normalise("Hi Jane,\nOur SPECIALS! https://x.example/u?token=MTIzOm5ld3M6MjAyNjExMjU.abcdefghijklmnop")
    b = normalise("hi jane our specials https://x.example/u?token=NDU2Om5ld3M6MjAyNjExMjY.qrstuvwxyzabcdef")
    assert a == b
    assert similarity(a, b) == 1.0
    assert similarity(normalise("one two three four"), normalise("five six seven eight")) < SIMILAR


def test_the_same_letter_cannot_be_scheduled_twice(sending):
    assert sending.m("campaign", "create", sending.content, "--at", "2026-11-26 09:00").exit_code == 0
    again = sending.m("campaign", "create", copy_as(sending, "copy.md"), "--at", "2026-11-27 09:00")
    assert again.exit_code == 2 and "Campaign 1 (december-specials, scheduled for 2026-11-26 09:00 EST)" in again.stderr
    assert len(sending.m.json("campaign", "list")) == 1
