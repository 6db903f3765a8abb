"""Validation of one value at a time: addresses as people write them, names, times."""

from __future__ import annotations

import importlib

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.validate import InvalidValue, check_text, normalise_email, parse_ip, parse_time, split_name

core = importlib.import_module("email_validator.validate_email")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("jane@example.com", ("jane@example.com", "jane@example.com", "")),
        ("  Jane@Example.COM \u00a0", ("Jane@example.com", "jane@example.com", "")),
        ("Jane Doe <jane@example.com>", ("jane@example.com", "jane@example.com", "Jane Doe")),
        ('"Doe, Jane" <jane@example.com>', ("jane@example.com", "jane@example.com", "Doe, Jane")),
        ("mailto:Pat@example.org", ("Pat@example.org", "pat@example.org", "")),
        ("MAILTO:pat@example.org?subject=hi", ("pat@example.org", "pat@example.org", "")),
        ("user@Bücher.example", ("user@bücher.example", "user@bücher.example", "")),
        ("josé@example.com", ("josé@example.com", "josé@example.com", "")),
    ],
)
def test_addresses_as_people_write_them(raw, expected):
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("", "empty"),
        ("jane.doe@gmail", "period"),
        ("bob@@example.com", "@"),
        ("jane@example.com\r\nBcc: x@evil.example", "control character"),
        ("jane\x00@example.com", "control character"),
        ("a" * 330 + "@example.com", "characters long"),
    ],
)
def test_bad_addresses_say_why(raw, reason):
    with pytest.raises(InvalidValue, match=reason):
        normalise_email(raw)


def test_names_refuse_header_breaking_characters():
    assert check_text("  Zoë ", "first name") == "Zoë"
    for bad in ("Jane\r\nBcc: x@evil.example", "Jane\n", "Ja\x00ne", "Jane\u2028Doe", "Ja\x1bne"):
        with pytest.raises(InvalidValue, match="control character"):
            check_text(bad, "first name")


@pytest.mark.parametrize(
    "full, parts",
    [
        ("Jane Doe", ("Jane", "Doe")),
        ("Doe, Jane", ("Jane", "Doe")),
        ("Cher", ("Cher", "")),
        ("Juan Carlos de la Cruz", ("Juan", "Carlos de la Cruz")),
        ('=HYPERLINK("http://evil.example","click")', ('=HYPERLINK("http://evil.example","click")', "")),
    ],
)
def test_split_name(full, parts):
    assert split_name(full) == parts


def test_times_and_ips():
    assert parse_time("2019-03-04 10:22:11") == "2019-03-04T10:22:11Z"
    assert parse_time("2026-01-31T09:00:00-05:00") == "2026-01-31T14:00:00Z"
    assert parse_time("12/24/2025") == "2025-12-24T00:00:00Z"
    assert parse_time("last spring") == "last spring"
    assert parse_ip("203.0.113.9") == "203.0.113.9"
    assert parse_ip("2001:DB8::1") == "2001:db8::1"
    assert parse_ip("999.1.1.1") == ""


def _outcome(fn, *args, **kw):
    try:
        return ("ok", fn(*args, **kw))
    except EmailNotValidError as exc:
        return ("error", str(exc))


domains = st.sampled_from(["example.com", "Bücher.example", "xn--bcher-kva.example", "a..b", "-x.com", "com", "ex_ample.com", "localhost", "ÉCOLE.fr", "例え.テスト"]) | st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20
)


@settings(max_examples=300, deadline=None)
@given(domain=domains)
def test_memoised_domain_check_gives_the_same_results_as_email_validator(domain):
    cached = core.validate_email_domain_name
    original = cached.__wrapped__
    kw = dict(test_environment=False, globally_deliverable=True)
    assert _outcome(cached, domain, **kw) == _outcome(original, domain, **kw)


@settings(max_examples=200, deadline=None)
@given(local=st.sampled_from(["jane", "J.Doe+news", "josé", "a b", ""]), domain=domains)
def test_whole_address_results_are_unchanged(local, domain):
    address = f"{local}@{domain}"
    cached_result = _outcome(validate_email, address, check_deliverability=False)
    cached = core.validate_email_domain_name
    core.validate_email_domain_name = cached.__wrapped__
    try:
        plain_result = _outcome(validate_email, address, check_deliverability=False)
    finally:
        core.validate_email_domain_name = cached
    normal = lambda r: (r[0], r[1].normalized if r[0] == "ok" else r[1])  # noqa: E731
    assert normal(cached_result) == normal(plain_result)
