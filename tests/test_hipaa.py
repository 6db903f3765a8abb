"""HIPAA: a relay under a business associate agreement, and audiences not chosen by condition."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from mailer.config import EXAMPLE_CONFIG, Config, parse_config, render_config
from mailer.errors import ConfigError
from mailer.hipaa import DEFAULT_CONDITION_WORDS, condition_warnings, condition_words_in, hipaa_problems


def configured(*, hipaa=True, host="smtp.gmail.com", baa=False, from_email="news@closter-acupuncture.example", words=None) -> Config:
    practice = dataclasses.replace(EXAMPLE_CONFIG.practice, hipaa=hipaa)
    if words is not None:
        practice = dataclasses.replace(practice, condition_words=tuple(words))
    return dataclasses.replace(
        EXAMPLE_CONFIG,
        practice=practice,
        smtp=dataclasses.replace(EXAMPLE_CONFIG.smtp, host=host, baa=baa),
        sender=dataclasses.replace(EXAMPLE_CONFIG.sender, from_email=from_email),
    )


def test_a_practice_that_is_not_covered_has_no_hipaa_problems():
    assert hipaa_problems(configured(hipaa=False, host="smtp.fastmail.com")) == []
    assert condition_warnings(configured(hipaa=False), "Back pain relief", "back-pain", ["migraine"]) == []


def test_gmail_servers_without_a_baa_say_which_plan_offers_one():
    [problem] = hipaa_problems(configured(host="smtp.gmail.com"))
    assert "smtp.gmail.com" in problem
    assert "personal Gmail does not" in problem and "Google Workspace offers one" in problem
    assert "set [smtp] baa = true" in problem


def test_a_relay_that_offers_a_baa_says_sign_it():
    [problem] = hipaa_problems(configured(host="email-smtp.us-east-1.amazonaws.com"))
    assert "Amazon SES offers one" in problem and "sign it, then set [smtp] baa = true" in problem


def test_a_relay_that_offers_none_names_those_that_do():
    [problem] = hipaa_problems(configured(host="smtp.fastmail.com"))
    assert "Fastmail does not" in problem
    for label in ("Google Workspace", "Microsoft 365", "Amazon SES", "Mailgun"):
        assert label in problem


def test_an_unknown_relay_asks_its_provider():
    [problem] = hipaa_problems(configured(host="mail.closter-acupuncture.example"))
    assert "ask its provider for one" in problem


def test_a_confirmed_baa_is_enough():
    assert hipaa_problems(configured(host="smtp.office365.com", baa=True)) == []


def test_a_free_mail_sender_cannot_be_covered_even_with_baa_set():
    [problem] = hipaa_problems(configured(host="smtp.gmail.com", baa=True, from_email="closter.acu@gmail.com"))
    assert "free gmail.com account" in problem and "own domain" in problem


def test_tags_lists_and_subjects_naming_a_condition_are_warned_about():
    warnings = condition_warnings(configured(), "Migraines: what helps", "IVF patients", ["back-pain", "newsletter", "VIP"])
    assert len(warnings) == 3
    tag, list_, subject = warnings
    assert "'back-pain'" in tag and "back pain" in tag and "disclosure of health information" in tag
    assert "'IVF patients'" in list_ and "ivf" in list_
    assert "migraine" in subject and "subject" in subject


@pytest.mark.parametrize("text", ["BackPain", "back_pain", "Back  Pain", "neck pains", "Allergies", "Bell’s Palsy"])
def test_any_spelling_of_a_condition_matches(text):
    assert condition_words_in(text, DEFAULT_CONDITION_WORDS)


@pytest.mark.parametrize("text", ["painting class", "Spain trip", "December specials", "newsletter", "smokingly good", ""])
def test_words_that_merely_contain_one_do_not(text):
    assert condition_words_in(text, DEFAULT_CONDITION_WORDS) == []


def test_the_words_come_from_mailer_toml(tmp_path):
    text = render_config(configured()).replace("hipaa = false", "hipaa = true")
    start = text.index("condition_words = [")
    end = text.index("]", start) + 1
    custom = parse_config(tomllib.loads(text[:start] + 'condition_words = ["knees", "hot flashes"]' + text[end:]), Path("mailer.toml"))
    assert custom.practice.condition_words == ("knees", "hot flashes")
    assert condition_warnings(custom, "Hot flashes, explained", "news", ["knees"]) != []
    assert condition_warnings(custom, "Back pain relief", "back-pain", []) == []  # replaced, not added to
    none = parse_config(tomllib.loads(text[:start] + "condition_words = []" + text[end:]), Path("mailer.toml"))
    assert condition_warnings(none, "Back pain relief", "back-pain", ["migraine"]) == []


def test_init_writes_the_default_words_out_so_they_can_be_edited():
    text = render_config(Config())
    parsed = parse_config(tomllib.loads(text), Path("mailer.toml"))
    assert parsed.practice.condition_words == DEFAULT_CONDITION_WORDS
    assert '"back pain"' in text and "hipaa = false" in text and "baa = false" in text


@pytest.mark.parametrize(
    "value, message",
    [
        ('"pain, migraine"', "must be a list of quoted strings"),
        ("[1, 2]", "must be a list of quoted strings"),
        ('["pain\\nX-Injected: 1"]', "one-line strings"),
    ],
)
def test_condition_words_must_be_a_list_of_strings(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(tomllib.loads(f"[practice]\ncondition_words = {value}\n"), Path("mailer.toml"))


def test_hipaa_and_baa_must_be_true_or_false():
    with pytest.raises(ConfigError, match=r"\[smtp\] baa must be true or false"):
        parse_config(tomllib.loads('[smtp]\nbaa = "yes"\n'), Path("mailer.toml"))
    with pytest.raises(ConfigError, match=r"\[practice\] hipaa must be true or false"):
        parse_config(tomllib.loads("[practice]\nhipaa = 1\n"), Path("mailer.toml"))
