"""The headers we write ourselves read back right, whatever the names and the subject hold.

The renderer writes its headers itself (render/mime.py) instead of through the email
package, for speed. These property tests are what lets us keep that: over any display
name a subscriber can have and any subject a content file can have, every message
parses back with `email.parser.BytesParser(policy=email.policy.default)` with no
defect, exactly one To address, the same display name and the same subject; no line
is over 998 octets and no encoded word over 75 characters (RFC 2047).

How names and subjects are compared:
- A display name is compared exactly through the standard library's RFC 2047 decoder
  (`email.header.decode_header`), which joins adjacent encoded words as RFC 2047 6.2
  says. The parser's own display_name is compared with whitespace normalised, and on a
  Python without the fix for gh-128110 (3.11 and 3.12 at least) without whitespace at
  all: that parser keeps the space between two encoded words of a name, so a long
  name split over several words reads back with extra spaces there.
- A subject is compared with runs of whitespace made one space: the writer folds long
  subjects at whitespace and writes a run of spaces or tabs between plain words as
  one space (RFC 5322 folding happens at whitespace; a reader shows any run as one
  space anyway). Everything else, every other character, must come back exactly.
- Names are what the import and `subscribers add` accept (mailer.validate.check_text:
  no control characters, at most 100 characters); subjects what content.py accepts
  (one line, no control characters but tab, no {{ }}).
"""

from __future__ import annotations

import dataclasses
import re
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailer.content import parse_content
from mailer.render.mime import clean_name
from mailer.validate import InvalidValue, check_text

from .test_render import JANE, lines_ok, renderer

ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
PARSE = BytesParser(policy=policy.default).parsebytes
# gh-128110: before the fix the parser kept the space between two encoded words of a name.
KEEPS_SPACE_BETWEEN_WORDS = PARSE(b"To: =?utf-8?q?a?= =?utf-8?q?b?= <x@y.example>\r\n\r\n")["To"].addresses[0].display_name != "ab"


def squeeze(text: str) -> str:
    return " ".join(text.split())


def header_block(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def raw_header(data: bytes, name: str) -> str:
    """The value of a header as written, unfolded (CRLF removed, the whitespace after it kept)."""
    text = data.split(b"\r\n\r\n", 1)[0].decode("utf-8").replace("\r\n ", " ")
    for line in text.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} header")


def check_message(data: bytes):
    """Well-formed on the wire and for the parser: returns the parsed message."""
    lines_ok(data)
    for line in header_block(data):
        assert len(line) <= 998, line[:80]
        for word in ENCODED_WORD.findall(line.decode("utf-8")):
            assert len(word) <= 75, word
            [(octets, charset)] = decode_header(word)
            octets.decode(charset)  # each word whole UTF-8: no character cut between two words
    msg = PARSE(data)
    assert msg.defects == []
    for name, value in msg.items():
        assert value.defects == (), (name, value, value.defects)
    for part in msg.walk():
        assert part.defects == [], part.get_content_type()
    return msg


def check_display_name(data: bytes, header: str, expected: str) -> None:
    msg = PARSE(data)
    [address] = msg[header].addresses
    expected = clean_name(expected)
    raw = raw_header(data, header)
    if not expected:
        assert address.display_name == "" and "<" not in raw
        return
    assert raw.endswith(">")
    written = raw[: raw.rindex("<")].strip()
    if written.startswith('"'):  # a quoted string: the parser reads it exactly
        assert address.display_name == expected
        return
    assert str(make_header(decode_header(written))) == expected  # RFC 2047 decoding, exactly
    if KEEPS_SPACE_BETWEEN_WORDS:
        assert "".join(address.display_name.split()) == "".join(expected.split())
    else:
        assert squeeze(address.display_name) == squeeze(expected)


def valid_name(text: str) -> bool:
    try:
        return check_text(text, "name", 100) == text
    except InvalidValue:
        return False


NAMES = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=100).filter(valid_name)
HOSTILE = ['Jane "JJ" Doe', "O'Brien \\ Sons", "=?utf-8?q?Bcc:_x@evil.example?=", "Doe, Jane", "Jane <jane@evil.example>",
           "Zoë 😀👍🏽", "e\u0301\u0301\u0301 combining", "שלום עליכם", "مرحبا بالعالم", "名前" * 50, "J" * 100,
           "a" * 99 + "é", "👩‍👩‍👧‍👦" * 14, "Dr. Jane Q. Public, Jr.", " ".join(["Zoë"] * 25), "x=?y", "?= =?"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(first=NAMES, last=NAMES)
@example(first=HOSTILE[0], last=HOSTILE[1])
@example(first=HOSTILE[2], last=HOSTILE[3])
@example(first=HOSTILE[4], last=HOSTILE[5])
@example(first=HOSTILE[6], last=HOSTILE[7])
@example(first=HOSTILE[8], last=HOSTILE[9])
@example(first=HOSTILE[9], last=HOSTILE[10])
@example(first=HOSTILE[11], last=HOSTILE[12])
@example(first=HOSTILE[13], last=HOSTILE[14])
@example(first=HOSTILE[15], last=HOSTILE[16])
def test_every_display_name_reads_back_whole_from_one_to_address(first, last):
    sub = dataclasses.replace(JANE, first_name=first, last_name=last)
    data = RENDERER.render(sub).data
    msg = check_message(data)
    assert [a.addr_spec for a in msg["To"].addresses] == ["jane.doe@example.com"]
    check_display_name(data, "To", sub.full_name)
    assert "Bcc" not in msg and len(msg.get_all("To")) == 1


RENDERER = renderer()
SUBJECT_CHARS = st.characters(exclude_categories=("Cc", "Cs"), include_characters="\t")


def valid_subject(text: str) -> bool:
    if not text.strip() or re.search(r"\{\{|\{%|\{#|[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]", text):
        return False
    return text.strip() == text.strip(" \t")  # content.py strips ASCII whitespace only at the ends


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(subject=st.text(SUBJECT_CHARS, min_size=1, max_size=300).filter(valid_subject), from_name=NAMES)
@example(subject="Winter specials — first visit $65", from_name="John Kim, Closter Acupuncture")
@example(subject="=?utf-8?q?Re:_your_visit?= and  two   spaces\tand a tab", from_name='"Quoted" \\ name')
@example(subject="x" * 300, from_name="")
@example(subject="😀 " * 100, from_name="名前" * 50)
@example(subject="Café du matin — 20 % de réduction ✨ " * 8, from_name="Clinique Zoë " * 7)
@example(subject="https://closter-acupuncture.example/a/very/long/link/that/cannot/be/folded/anywhere/at/all?x=1",
         from_name="a" * 100)
def test_every_subject_and_sender_name_reads_back(subject, from_name):
    content = dataclasses.replace(parse_content("---\nsubject: x\n---\nHello\n", "letter.md"), subject=subject.strip(" \t"),
                                  from_name=from_name)
    data = renderer(content).render(JANE).data
    msg = check_message(data)
    assert squeeze(str(msg["Subject"])) == squeeze(subject)
    assert [a.addr_spec for a in msg["From"].addresses] == ["news@closter-acupuncture.example"]
    check_display_name(data, "From", from_name or "John Kim, Closter Acupuncture")


@pytest.mark.parametrize("name", HOSTILE)
def test_no_header_line_is_longer_than_78_but_a_link_or_an_address(name):
    sub = dataclasses.replace(JANE, first_name=name, last_name=name)
    content = dataclasses.replace(parse_content("---\nsubject: x\n---\nHello\n", "letter.md"),
                                  subject=("Zoë's long subject, " + name) * 3, from_name=name)
    for line in header_block(renderer(content).render(sub).data):
        text = line.decode("utf-8")
        if len(text) > 78:
            assert re.fullmatch(r"(\S+:)? ?<[^<> ]+>,?", text), text  # one link or address, which cannot be cut
