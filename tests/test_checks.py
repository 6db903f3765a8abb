"""Pre-send checks: what `mailer check` reports, and at which level."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from mailer.checks import run_checks
from mailer.clock import FakeClock
from mailer.config import EXAMPLE_CONFIG
from mailer.content import load_content, parse_content

from .test_render import EXAMPLES, SECRET, TEMPLATES

NOV_25 = FakeClock(datetime(2026, 11, 25, 15, 0, tzinfo=UTC))
SPECIALS_HEAD = "---\nsubject: Hi\npreheader: Offers inside\ntemplate: specials\noffers:\n  - title: A\n    details: B\n---\n"


def checks(content, *, config=EXAMPLE_CONFIG, templates=None, clock=NOV_25):
    if isinstance(content, str):
        content = parse_content(content, "letter.md")
    return run_checks(content, templates or TEMPLATES, config, SECRET, clock)


def levels(result, name):
    return [c.level for c in result if c.name == name]


def messages(result, level):
    return [f"{c.name}: {c.message}" for c in result if c.level == level]


def test_the_examples_pass_with_no_errors_or_warnings():
    for example in ("december-specials.md", "monthly-news.md"):
        result = checks(load_content(EXAMPLES / example))
        assert messages(result, "error") == [] and messages(result, "warning") == [], example
        names = {c.name for c in result}
        assert {"postal address", "unsubscribe link", "postal address shown", "links", "size", "templates"} <= names
        assert levels(result, "unsubscribe link") == ["pass", "pass"]  # text and HTML
        assert levels(result, "postal address shown") == ["pass", "pass"]


def test_a_missing_postal_address_is_an_error():
    config = dataclasses.replace(EXAMPLE_CONFIG, practice=dataclasses.replace(EXAMPLE_CONFIG.practice, address=""))
    result = checks(SPECIALS_HEAD + "Hello\n", config=config)
    assert levels(result, "postal address") == ["error"]
    assert "CAN-SPAM" in messages(result, "error")[0]


def test_offers_that_ended_or_end_today_are_warned_about():
    content = load_content(EXAMPLES / "december-specials.md")
    result = checks(content, clock=FakeClock(datetime(2026, 12, 28, 15, 0, tzinfo=UTC)))
    assert messages(result, "warning") == ["offer dates: The offer 'Holiday gift card bonus' ended on Thursday, December 24, 2026."]
    # 2026-12-31 19:00 in New York is still the 31st there, though it is January 1 in UTC
    result = checks(content, clock=FakeClock(datetime(2027, 1, 1, 0, 30, tzinfo=UTC)))
    assert "ends today" in " ".join(messages(result, "warning"))


def test_a_template_without_unsubscribe_link_or_address_fails_in_that_part():
    templates = dict(TEMPLATES)
    templates["base.txt.j2"] = "{% block content %}{% endblock %}\n"
    result = checks(SPECIALS_HEAD + "Hello\n", templates=templates)
    errors = messages(result, "error")
    assert "unsubscribe link: The text part has no unsubscribe link; print {{ unsubscribe_url }} in the template." in errors
    assert any(e.startswith("postal address shown: The text part") for e in errors)
    assert levels(result, "unsubscribe link") == ["error", "pass"]


def test_links_that_are_not_https():
    result = checks(SPECIALS_HEAD + "[old site](http://old.example) and [there](/book)\n")
    assert "link(s) use http:" in " ".join(messages(result, "warning"))
    assert "cannot work in an email (first: /book)" in " ".join(messages(result, "error"))


def test_images_need_alt_text_and_https():
    result = checks(SPECIALS_HEAD + "![](https://x.example/a.png)\n")
    assert levels(result, "image alt text") == ["warning"]
    result = checks(SPECIALS_HEAD + "![A room](images/a.png)\n")
    assert levels(result, "images") == ["error"]


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
