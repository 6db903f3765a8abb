"""Unsubscribe tokens: short, URL-safe, verifiable offline, and no byte can be changed."""

from __future__ import annotations

import re
import string
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.errors import InputError
from mailer.tokens import TokenInfo, make_token, verify_token

SECRET = bytes(range(32))


def test_a_token_names_subscriber_list_and_day_and_is_short_and_url_safe():
    token = make_token(SECRET, 1234, "specials", date(2026, 11, 25))
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)
    assert len(token) <= 50
    assert verify_token(SECRET, token) == TokenInfo(1234, "specials", date(2026, 11, 25))


def test_every_changed_character_makes_the_token_invalid():
    token = make_token(SECRET, 42, "news", date(2026, 12, 1))
    alphabet = string.ascii_letters + string.digits + "-_."
    for i, old in enumerate(token):
        for new in alphabet:
            if new == old:
                continue
            with pytest.raises(InputError):
                verify_token(SECRET, token[:i] + new + token[i + 1:])


def test_a_token_from_another_workspace_or_cut_short_is_refused():
    token = make_token(SECRET, 7, "news", date(2026, 1, 2))
    with pytest.raises(InputError, match="not valid"):
        verify_token(b"another workspace's secret", token)
    for bad in (token[:-1], token + "A", token.replace(".", ""), "", "unsubscribe", "a.b"):
        with pytest.raises(InputError):
            verify_token(SECRET, bad)


def test_surrounding_whitespace_from_a_pasted_link_is_forgiven():
    token = make_token(SECRET, 7, "news", date(2026, 1, 2))
    assert verify_token(SECRET, f"  {token}\n").subscriber_id == 7


@settings(max_examples=200, deadline=None)
@given(
    subscriber_id=st.integers(min_value=0, max_value=2**53),
    list_name=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True),
    issued=st.dates(min_value=date(2000, 1, 1), max_value=date(9999, 12, 31)),
)
def test_any_token_reads_back_as_made(subscriber_id, list_name, issued):
    token = make_token(SECRET, subscriber_id, list_name, issued)
    assert verify_token(SECRET, token) == (subscriber_id, list_name, issued)


# -- VERP tokens ---------------------------------------------------------------------------

from mailer.tokens import looks_like_verp_token, make_verp_token, verify_verp_token  # noqa: E402


def test_a_verp_token_names_the_delivery_and_fits_a_local_part():
    token = make_verp_token(SECRET, 987654)
    assert re.fullmatch(r"[a-z0-9-]{1,31}", token)
    assert len(f"bounces+{token}") <= 64  # RFC 5321 local-part limit
    assert verify_verp_token(SECRET, token) == 987654
    assert looks_like_verp_token(token)


def test_a_verp_token_survives_a_server_that_changes_its_case():
    token = make_verp_token(SECRET, 42)
    assert verify_verp_token(SECRET, token.upper()) == 42


def test_every_changed_character_of_a_verp_token_makes_it_invalid():
    token = make_verp_token(SECRET, 31337)
    for i, old in enumerate(token):
        for new in string.ascii_lowercase + string.digits + "-":
            if new == old:
                continue
            with pytest.raises(InputError):
                verify_verp_token(SECRET, token[:i] + new + token[i + 1:])
    with pytest.raises(InputError):
        verify_verp_token(b"another workspace", token)
    assert not looks_like_verp_token("news+weekly")
