"""Subscriber data cannot add, split or alter a header, whatever it holds."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.errors import TemplateError
from mailer.render import format_address

from .test_render import JANE, lines_ok, parse, renderer
from .test_render_headers import check_display_name

RENDERER = renderer()
BASELINE = parse(RENDERER.render(JANE).data)
HEADERS = [k.lower() for k in BASELINE.keys()]


def check_headers(sub) -> None:
    m = RENDERER.render(sub)
    lines_ok(m.data)
    msg = parse(m.data)
    assert [k.lower() for k in msg.keys()] == HEADERS
    for name in ("From", "Subject", "List-Id", "Content-Type", "MIME-Version"):
        assert msg[name] == BASELINE[name], name
    to = msg["To"].addresses
    assert [a.addr_spec for a in to] == [sub.email]
    shown = to[0].display_name
    assert "\n" not in shown and "\r" not in shown
    # What a reader sees is the whole name, with control characters and line breaks as spaces.
    check_display_name(m.data, "To", sub.full_name.encode("utf-8", "replace").decode("utf-8"))


@pytest.mark.parametrize(
    "first_name",
    [
        "Jane\r\nBcc: x@evil.example",
        "Jane\nBcc: x@evil.example",
        "Jane\n",
        "Jane\rBcc: x@evil.example",
        "=?utf-8?q?Jane=0D=0ABcc:_x@evil.example?=",
        "=?utf-8?b?SmFuZQ0KQmNjOiB4QGV2aWwuZXhhbXBsZQ==?=",
        "Jane\u2028Bcc: x@evil.example",
        "Jane\x00\x0b\x0c",
        '"Jane" <x@evil.example>, Bob',
        "Jane <x@evil.example>",
        "Jane\\",
        "J" * 2000,
        "Zoë " * 300,
    ],
)
def test_hostile_names_change_no_header(first_name):
    sub = dataclasses.replace(JANE, first_name=first_name)
    check_headers(sub)
    assert "Bcc" not in parse(RENDERER.render(sub).data)


def test_a_trailing_newline_in_the_address_cannot_reach_a_header():
    with pytest.raises(TemplateError):
        RENDERER.render(dataclasses.replace(JANE, email="jane@example.com\n"))
    with pytest.raises(TemplateError):
        RENDERER.render(dataclasses.replace(JANE, email="jane@example.com\r\nBcc: x@evil.example"))
    with pytest.raises(TemplateError):
        RENDERER.render(dataclasses.replace(JANE, email="a@b.example, x@evil.example"))


def test_an_international_domain_is_sent_in_its_ascii_form():
    sub = dataclasses.replace(JANE, email="zoe@bücher.example")
    msg = parse(RENDERER.render(sub).data)
    assert msg["To"].addresses[0].domain == "xn--bcher-kva.example"


def test_address_formatting_quotes_or_encodes():
    assert format_address("Jane Doe", "j@x.example") == '"Jane Doe" <j@x.example>'
    assert format_address('Ja"ne\\', "j@x.example") == '"Ja\\"ne\\\\" <j@x.example>'
    assert format_address("", "j@x.example") == "j@x.example"
    assert format_address("Zoë", "j@x.example") == "=?utf-8?q?Zo=C3=AB?= <j@x.example>"
    assert "\r\n" not in format_address("a\r\nb", "j@x.example")
    # a long name is folded over several encoded words, never cut
    long = format_address("Zoë Ōtsuka " * 8, "j@x.example")
    assert long.count("\r\n ") >= 2 and all(len(w) <= 75 for w in long.split())
    assert long.endswith(" <j@x.example>") and all(len(line) <= 78 for line in ("To: " + long).split("\r\n"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.text(max_size=200), last=st.text(max_size=60))
def test_no_name_whatever_changes_the_header_set(first, last):
    check_headers(dataclasses.replace(JANE, first_name=first, last_name=last))
