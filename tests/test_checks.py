"""Pre-send checks: what `mailer check` reports, and at which level."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from mailer.checks import looks_like_postal_address, run_checks
from mailer.clock import FakeClock
from mailer.config import EXAMPLE_CONFIG
from mailer.content import load_content, parse_content

from .test_render import EXAMPLES, SECRET, TEMPLATES

NOV_25 = FakeClock(datetime(2026, 11, 25, 15, 0, tzinfo=UTC))
SPECIALS_HEAD = "---\nsubject: Hi\npreheader: Offers inside\ntemplate: specials\noffers:\n  - title: A\n    details: B\n---\n"


ONE_CLICK = dataclasses.replace(EXAMPLE_CONFIG, unsubscribe=dataclasses.replace(
    EXAMPLE_CONFIG.unsubscribe, url="https://closter-acupuncture.example/unsubscribe"))


def checks(content, *, config=ONE_CLICK, templates=None, clock=NOV_25):
    if isinstance(content, str):
        content = parse_content(content, "letter.md")
    return run_checks(content, templates or TEMPLATES, config, SECRET, clock)


def levels(result, name):
    return [c.level for c in result if c.name == name]


def messages(result, level):
    return [f"{c.name}: {c.message}" for c in result if c.level == level]


def test_the_examples_pass_with_no_errors_or_warnings():
    for example in ("december-specials.md", "monthly-news.md"):
        result = checks(load_content(EXAMPLES / example), config=ONE_CLICK)
        assert messages(result, "error") == [] and messages(result, "warning") == [], example
        names = {c.name for c in result}
        assert {"postal address", "unsubscribe link", "postal address shown", "links", "size", "templates"} <= names
        assert levels(result, "unsubscribe link") == ["pass", "pass"]  # text and HTML
        assert levels(result, "postal address shown") == ["pass", "pass"]


def test_without_a_one_click_url_check_says_what_gmail_and_yahoo_ask():
    result = checks(load_content(EXAMPLES / "monthly-news.md"), config=EXAMPLE_CONFIG)
    assert levels(result, "one-click unsubscribe") == ["warning"]
    assert "5,000" in " ".join(messages(result, "warning")) and "RFC 8058" in " ".join(messages(result, "warning"))
    assert levels(checks(load_content(EXAMPLES / "monthly-news.md"), config=ONE_CLICK), "one-click unsubscribe") == []


def test_a_missing_postal_address_is_an_error():
    config = dataclasses.replace(ONE_CLICK, practice=dataclasses.replace(ONE_CLICK.practice, address=""))
    result = checks(SPECIALS_HEAD + "Hello\n", config=config)
    assert levels(result, "postal address") == ["error"]
    assert "CAN-SPAM" in messages(result, "error")[0]


def test_an_offer_that_has_ended_is_an_error_and_one_ending_today_a_warning():
    content = load_content(EXAMPLES / "december-specials.md")
    result = checks(content, clock=FakeClock(datetime(2026, 12, 28, 15, 0, tzinfo=UTC)))
    assert messages(result, "error") == ["offer dates: The offer 'Holiday gift card bonus' ended on Thursday, December 24, "
                                         "2026. Change its valid_until, or take it out."]
    assert messages(result, "warning") == []
    # 2026-12-31 19:00 in New York is still the 31st there, though it is January 1 in UTC
    result = checks(content, clock=FakeClock(datetime(2027, 1, 1, 0, 30, tzinfo=UTC)))
    assert "offer dates: The offer 'First visit with electroacupuncture' ends today." in messages(result, "warning")


def test_offers_are_checked_against_the_send_time_not_today():
    content = load_content(EXAMPLES / "december-specials.md")  # offers end 2026-12-24 and 2026-12-31
    # checked on November 25 for a campaign that goes out on January 15
    result = run_checks(content, TEMPLATES, ONE_CLICK, SECRET, NOV_25, send_at=datetime(2027, 1, 15, 14, 0, tzinfo=UTC))
    errors = messages(result, "error")
    assert len(errors) == 3 and all(e.startswith("offer dates: ") for e in errors)
    assert errors[0] == ("offer dates: The offer 'First visit with electroacupuncture' ended on Thursday, December 31, 2026, "
                         "before this campaign goes out on Friday, January 15, 2027. Change its valid_until, or take it out.")
    # going out on Christmas Eve: the gift card offer ends that day, the others are fine
    result = run_checks(content, TEMPLATES, ONE_CLICK, SECRET, NOV_25, send_at=datetime(2026, 12, 24, 9, 0, tzinfo=UTC))
    assert messages(result, "error") == []
    assert messages(result, "warning") == ["offer dates: The offer 'Holiday gift card bonus' ends on Thursday, December 24, "
                                           "2026, when this campaign goes out."]
    assert levels(result, "offer dates") == ["pass", "pass", "warning"]


def test_the_send_day_is_the_workspace_zones():
    content = load_content(EXAMPLES / "december-specials.md")
    # 03:00 UTC on December 25 is still December 24 in New York; a naive time is read there too
    for send_at in (datetime(2026, 12, 25, 3, 0, tzinfo=UTC), datetime(2026, 12, 24, 22, 0)):
        result = run_checks(content, TEMPLATES, ONE_CLICK, SECRET, NOV_25, send_at=send_at)
        assert levels(result, "offer dates") == ["pass", "pass", "warning"], send_at
    result = run_checks(content, TEMPLATES, ONE_CLICK, SECRET, NOV_25, send_at=datetime(2026, 12, 25, 6, 0, tzinfo=UTC))
    assert levels(result, "offer dates") == ["pass", "pass", "error"]


def test_a_template_without_unsubscribe_link_or_address_fails_in_that_part():
    templates = dict(TEMPLATES)
    templates["base.txt.j2"] = "{% block content %}{% endblock %}\n"
    result = checks(SPECIALS_HEAD + "Hello\n", templates=templates)
    errors = messages(result, "error")
    assert "unsubscribe link: The text part has no unsubscribe link; print {{ unsubscribe_url }} in the template." in errors
    assert any(e.startswith("postal address shown: The text part") for e in errors)
    assert levels(result, "unsubscribe link") == ["error", "pass"]


UNSUBSCRIBE_LINE = '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> from these emails at any time.</p>'


@pytest.mark.parametrize(
    ("footer", "said"),
    [
        ('<div style="display:none"><a href="{{ unsubscribe_url }}">Unsubscribe</a></div>', "is hidden"),
        ('<p style="font-size:0;color:#fff"><a href="{{ unsubscribe_url }}"></a></p>', "is hidden"),
        ('<p hidden><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>', "is hidden"),
        ('<p><a href="https://evil.example/?{{ unsubscribe_url }}">Unsubscribe</a></p>', "only inside another address"),
    ],
)
def test_an_unsubscribe_link_that_is_hidden_or_leads_elsewhere_is_not_a_working_one(footer, said):
    templates = dict(TEMPLATES)
    assert UNSUBSCRIBE_LINE in templates["base.html.j2"]
    templates["base.html.j2"] = templates["base.html.j2"].replace(UNSUBSCRIBE_LINE, footer)
    result = checks(SPECIALS_HEAD + "Hello\n", templates=templates)
    assert levels(result, "unsubscribe link")[:2] == ["pass", "error"]  # text, HTML
    assert said in " ".join(messages(result, "error"))


def test_an_unsubscribe_link_inside_another_address_in_the_text_part_is_not_one():
    templates = dict(TEMPLATES)
    templates["base.txt.j2"] = templates["base.txt.j2"].replace(
        "Unsubscribe: {{ unsubscribe_url }}", "Unsubscribe: mailto:x@evil.example?body={{ unsubscribe_url }}")
    result = checks(SPECIALS_HEAD + "Hello\n", templates=templates)
    assert levels(result, "unsubscribe link")[0] == "error"


def test_a_link_that_says_unsubscribe_but_goes_elsewhere_is_an_error():
    result = checks(SPECIALS_HEAD + '<a href="https://evil.example/unsubscribe">Unsubscribe here</a>\n')
    assert "A link that says unsubscribe goes somewhere else (https://evil.example/unsubscribe)" in " ".join(
        messages(result, "error"))


@pytest.mark.parametrize(
    "html",
    [
        '<img srcset="http://evil.example/a.png 1x" src="https://ok.example/a.png" alt="z">',
        '<div style="background-image:url(http://evil.example/t.gif)">bg</div>',
        '<table background="http://evil.example/t.gif"><tr><td>t</td></tr></table>',
    ],
)
def test_anything_the_message_loads_over_http_is_an_error(html):
    result = checks(SPECIALS_HEAD + html + "\n")
    assert levels(result, "images") == ["error"] and "http://evil.example" in " ".join(messages(result, "error"))


@pytest.mark.parametrize("html", ['<meta http-equiv="refresh" content="0;url=https://evil.example">',
                                  '<base href="https://evil.example/">'])
def test_a_redirect_or_a_base_address_is_an_error(html):
    assert levels(checks(SPECIALS_HEAD + html + "\n"), "no redirects") == ["error"]


def test_a_style_block_in_the_letter_is_said_to_be_left_out():
    result = checks(SPECIALS_HEAD + "<style>p { color: red }</style>\n\nHello\n")
    assert levels(result, "styles") == ["warning"]
    assert "red" not in result and levels(checks(SPECIALS_HEAD + "Hello\n"), "styles") == []


def test_links_that_are_not_https_are_errors():
    result = checks(SPECIALS_HEAD + "[old site](http://old.example) and [there](/book)\n")
    errors = " ".join(messages(result, "error"))
    assert "links: 1 link(s) use http:, not https: (first: http://old.example)" in errors
    assert "cannot work in an email (first: /book)" in errors
    assert levels(checks(SPECIALS_HEAD + "[old site](HTTP://old.example)\n"), "links") == ["error"]


def test_images_need_alt_text_and_https():
    result = checks(SPECIALS_HEAD + "![](https://x.example/a.png)\n")
    assert levels(result, "image alt text") == ["warning"]
    result = checks(SPECIALS_HEAD + "![A room](images/a.png)\n")
    assert levels(result, "images") == ["error"]
    result = checks(SPECIALS_HEAD + "![A room](http://x.example/a.png)\n")
    assert levels(result, "images") == ["error"]


@pytest.mark.parametrize("subject", ["Re: your visit", "RE : your visit", "Fwd: December specials", "FW: specials",
                                     "Fw:specials", "AW: Ihr Termin", "TR: vos offres", "WG: Angebote", "Re[2]: hi",
                                     "  re: hi", "RV: ofertas", "SV: tilbud"])
def test_a_subject_that_poses_as_a_reply_or_forward_is_an_error(subject):
    result = checks(f"---\nsubject: \"{subject}\"\npreheader: x\n---\nHello\n")
    [error] = messages(result, "error")
    prefix = subject.strip()[: subject.strip().index(":") + 1]
    assert error.startswith(f"subject: The subject starts with {prefix!r}, as a reply")
    assert "CAN-SPAM" in error


@pytest.mark.parametrize("subject", ["Regular hours are back", "Treatments: what to expect", "Fwding news", "Ready?", "Trial offer: 20%"])
def test_an_ordinary_subject_is_not_taken_for_a_reply(subject):
    assert messages(checks(f"---\nsubject: \"{subject}\"\npreheader: x\n---\nHello\n"), "error") == []


@pytest.mark.parametrize("address", ["n/a", "TBD", "Closter", "Closter, NJ", "1 Example Street", "1234 Main Street, Springfield", "-"])
def test_a_postal_address_that_is_not_one_is_an_error_naming_the_setting(address):
    config = dataclasses.replace(ONE_CLICK, practice=dataclasses.replace(ONE_CLICK.practice, address=address))
    result = checks(SPECIALS_HEAD + "Hello\n", config=config)
    assert levels(result, "postal address") == ["error"]
    error = next(c.message for c in result if c.name == "postal address")
    assert error.startswith(f"[practice] address in mailer.toml is {address!r}, which does not look like a postal address")


@pytest.mark.parametrize("address", [
    "1 Example Street, Closter, NJ 07624", "PO Box 12, Closter, NJ 07624-1234", "P.O. Box 9, Closter NJ 07624",
    "10 Downing Street, London SW1A 2AA", "123 Main St, Toronto, ON M5V 2T6", "Hauptstraße 5, 10115 Berlin",
    "Keizersgracht 123, 1015 CJ Amsterdam", "Suite 5, 12 High St, Sydney NSW 2000",
])
def test_postal_addresses_of_several_countries_look_like_one(address):
    assert looks_like_postal_address(address)


def test_header_lines_over_78_characters_are_warned_about_unless_a_link_cannot_be_folded():
    result = checks(load_content(EXAMPLES / "december-specials.md"))
    [line] = [c for c in result if c.name == "header lines"]
    assert line.level == "pass"
    assert line.message == "Every header line is at most 78 characters, except List-Unsubscribe, whose links cannot be folded."
    config = dataclasses.replace(EXAMPLE_CONFIG, sender=dataclasses.replace(
        EXAMPLE_CONFIG.sender, from_email="newsletter-of-the-practice-with-a-very-long-local-part@closter-acupuncture.example"))
    result = checks(SPECIALS_HEAD + "Hello\n", config=config)
    assert levels(result, "header lines") == ["pass"]  # an address alone on its line cannot be folded either


def test_scripts_are_errors():
    result = checks(SPECIALS_HEAD + '<script>alert(1)</script>\n\n<a href="https://x.example" onclick="x()">x</a>\n')
    assert levels(result, "no scripts") == ["error"]


def test_a_message_gmail_would_clip_is_an_error():
    body = "\n\n".join(f"Paragraph {i}: " + "acupuncture " * 40 for i in range(300))
    result = checks(SPECIALS_HEAD + body + "\n")
    assert levels(result, "size") == ["error"]
    assert "102 KB" in messages(result, "error")[0]


def test_content_field_checks():
    result = checks("---\nsubject: " + "A very long subject line " * 4 + "\ntemplate: specials\n---\nHello {{ first_name }}\n")
    warnings = " ".join(messages(result, "warning"))
    assert "characters; phones show about 60" in warnings
    assert "no preheader" in warnings
    assert 'default("there")' in warnings
    assert levels(result, "offers") == ["error"]  # specials without offers
    assert levels(checks("---\nsubject: Hi\noffers:\n  - title: A\n    details: B\n---\nx\n"), "offers") == ["warning"]


def test_an_undefined_variable_is_an_error_naming_file_line():
    result = checks(SPECIALS_HEAD + "Hello\n\nSee you on {{ apointment }}.\n")
    errors = messages(result, "error")
    assert len(errors) == 1
    assert errors[0].startswith("templates: letter.md:11: there is no variable 'apointment'; the variables are first_name, ")


def test_no_sender_address_is_an_error_not_a_crash():
    config = dataclasses.replace(EXAMPLE_CONFIG, sender=dataclasses.replace(EXAMPLE_CONFIG.sender, from_email=""))
    result = checks(SPECIALS_HEAD + "Hello\n", config=config)
    assert "from_email" in " ".join(messages(result, "error"))
