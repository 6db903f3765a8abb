"""Content files: front matter and Markdown, with file:line in every complaint."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from mailer.content import Offer, load_content, parse_content
from mailer.errors import ExitCode, TemplateError

EXAMPLES = Path(__file__).parent.parent / "examples"


def fail(text: str) -> str:
    with pytest.raises(TemplateError) as info:
        parse_content(text, "letter.md")
    assert info.value.exit_code == ExitCode.USAGE
    return info.value.message


def test_the_specials_example_reads_as_written():
    c = load_content(EXAMPLES / "december-specials.md")
    assert c.name == "december-specials.md"
    assert c.template == "specials"
    assert c.subject.startswith("December specials")
    assert c.offers[0] == Offer(
        title="First visit with electroacupuncture",
        details=c.offers[0].details,
        price="$65",
        was_price="$95",
        code="DEC-FIRST",
        valid_until=date(2026, 12, 31),
    )
    assert "60-minute treatment" in c.offers[0].details
    assert len(c.offers) == 3
    # body_line is where the body starts in the file, for file:line messages
    assert c.text.splitlines()[c.body_line - 1] == 'Hi {{ first_name | default("there") }},'
    assert c.body.startswith('Hi {{ first_name | default("there") }},')
    assert c.text == (EXAMPLES / "december-specials.md").read_text(encoding="utf-8")


def test_the_news_example_has_sections_and_defaults():
    c = load_content(EXAMPLES / "monthly-news.md")
    assert c.template == "news"
    assert c.offers == ()
    assert c.body.count("\n## ") == 3
    assert c.from_name == "" and c.reply_to == ""


def test_template_defaults_to_news_and_numbers_are_dollars():
    c = parse_content("---\nsubject: Hi\noffers:\n  - title: A\n    details: B\n    price: 65\n    was_price: 99.5\n---\nBody\n", "x.md")
    assert c.template == "news"
    assert c.offers[0].price == "$65"
    assert c.offers[0].was_price == "$99.50"
    assert c.body == "Body\n"
    assert c.body_line == 9


def test_windows_line_endings_and_a_bom_are_read():
    c = parse_content("\ufeff---\r\nsubject: Hi\r\ntemplate: specials\r\noffers:\r\n  - title: A\r\n    details: B\r\n---\r\nHello\r\n", "x.md")
    assert c.subject == "Hi" and c.template == "specials" and c.body == "Hello\n"


def test_missing_front_matter_is_explained():
    assert fail("Hello there\n").startswith("letter.md:1: a content file starts with front matter")


def test_unclosed_front_matter_is_explained():
    assert "never closed" in fail("---\nsubject: Hi\nHello\n")


def test_a_yaml_mistake_names_its_line():
    message = fail("---\nsubject: Hi\npreheader: [unclosed\ntemplate: news\n---\nbody\n")
    assert message.startswith("letter.md:4:") or message.startswith("letter.md:5:"), message
    assert "not valid YAML" in message


def test_a_missing_subject_is_refused():
    assert fail("---\ntemplate: news\n---\nbody\n") == "letter.md:2: 'subject' is required."


def test_an_unknown_key_names_its_line_and_the_known_keys():
    message = fail("---\nsubject: Hi\nsubjet: typo\n---\nbody\n")
    assert message.startswith("letter.md:3: unknown front matter key 'subjet'")
    assert "preheader" in message


def test_a_wrong_template_name_names_its_line():
    assert fail("---\nsubject: Hi\ntemplate: offers\n---\nx\n").startswith("letter.md:3: 'template' must be news or specials")


def test_an_offer_date_that_is_not_a_date_names_its_line():
    text = "---\nsubject: Hi\ntemplate: specials\noffers:\n  - title: A\n    details: B\n    valid_until: next Friday\n---\nx\n"
    assert fail(text).startswith("letter.md:7: 'valid_until' must be a date written like 2026-12-31")


def test_an_offer_without_details_names_the_offer():
    text = "---\nsubject: Hi\ntemplate: specials\noffers:\n  - title: A\n  - title: B\n    details: C\n---\nx\n"
    assert fail(text).startswith("letter.md:5: 'details' is required")


def test_a_subject_cannot_be_a_template_or_hold_a_line_break():
    assert "cannot use {{ }}" in fail("---\nsubject: Hi {{ first_name }}\n---\nx\n")
    assert "one line" in fail('---\nsubject: "Hi\\nBcc: x@evil.example"\n---\nx\n')


def test_a_bad_reply_to_is_refused():
    assert fail("---\nsubject: Hi\nreply_to: not an address\n---\nx\n").startswith("letter.md:3: 'reply_to' is not a usable address")


def test_a_template_syntax_error_in_the_body_names_the_file_line():
    text = "---\nsubject: Hi\n---\nline 4\n\nline 6 {% if first_name %}\nno end\n"
    message = fail(text)
    assert message.startswith("letter.md:6: Unexpected end of template"), message  # the unclosed {% if %}
    assert not message.endswith("..")


def test_load_content_names_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin.md"
    path.write_bytes(b"---\nsubject: Caf\xe9\n---\n")
    with pytest.raises(TemplateError, match=r"latin.md:2: the file is not UTF-8"):
        load_content(path)
    with pytest.raises(TemplateError, match="There is no content file"):
        load_content(tmp_path / "missing.md")


def test_a_yaml_alias_bomb_is_refused_at_once():
    bomb = ("---\nsubject: Hi\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
            + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(f"*{chr(97 + i)}" for _ in range(9)) + "]\n" for i in range(8))
            + "---\nHello\n")
    # refused while the text is scanned, before anything is built (2.2 GB before this)
    with pytest.raises(TemplateError, match=r"letter.md:3: the front matter uses an anchor"):
        parse_content(bomb, "letter.md")


def test_text_starting_with_an_ampersand_is_fine_in_quotes():
    content = parse_content('---\nsubject: "& more: *new* offers"\n---\nHi\n', "letter.md")
    assert content.subject == "& more: *new* offers"


def test_a_huge_front_matter_is_refused():
    with pytest.raises(TemplateError, match="front matter is"):
        parse_content("---\nsubject: Hi\npreheader: " + "x" * 70_000 + "\n---\nHi\n", "letter.md")


@pytest.mark.parametrize("value", ["2026-02-30", "2026-13-01"])
def test_a_date_that_does_not_exist_names_its_line(value):
    text = f"---\nsubject: Hi\ntemplate: specials\noffers:\n  - title: A\n    details: B\n    valid_until: {value}\n---\nHi\n"
    with pytest.raises(TemplateError, match=r"letter.md:7: the front matter holds a date that does not exist"):
        parse_content(text, "letter.md")


def test_a_key_given_twice_is_an_error_not_a_silent_choice():
    with pytest.raises(TemplateError, match=r"letter.md:3: 'subject' is given twice"):
        parse_content("---\nsubject: December specials\nsubject: Old subject\n---\nHi\n", "letter.md")


@pytest.mark.parametrize(
    ("given", "said"),
    [("/dev/zero", "looks like a binary file"), ("folder", "is a folder"), ("huge", "is larger than 2 MB")],
)
def test_a_letter_that_is_no_letter_is_refused_without_reading_it_all(tmp_path, given, said):
    if given == "folder":
        path = tmp_path
    elif given == "huge":
        path = tmp_path / "huge.md"
        path.write_text("---\nsubject: Hi\n---\n" + "word " * 600_000)
    else:
        path = Path(given)
    with pytest.raises(TemplateError, match=said):
        load_content(path)


@pytest.mark.parametrize(("value", "said"), [('"Sale \\u202eevil"', "U+202E"), ('"two\\nlines"', "a line break")])
def test_a_subject_with_a_hidden_character_says_which(value, said):
    with pytest.raises(TemplateError, match=f"'subject' must be one line of plain text; it holds .*{re.escape(said)}"):
        parse_content(f"---\nsubject: {value}\n---\nHi\n", "letter.md")
