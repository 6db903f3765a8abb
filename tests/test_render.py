"""Rendering: content + templates + subscriber -> a correct, personal MIME message.

Every message is parsed back with the standard library's parser (policy.default) and
must have no defects.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, date, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from mailer.clock import FakeClock
from mailer.config import EXAMPLE_CONFIG, Config, UnsubscribeConfig
from mailer.content import load_content, parse_content
from mailer.errors import ConfigError, TemplateError
from mailer.models import Subscriber
from mailer.render import (
    TEMPLATE_FILES,
    CompiledCampaign,
    compile_campaign,
    markdown_to_text,
    packaged_templates_dir,
    resolve_templates,
    templates_in_use,
)
from mailer.tokens import verify_token

REPO = Path(__file__).parent.parent
EXAMPLES = REPO / "examples"
SECRET = b"s" * 32
TEMPLATES = {p.name: p.read_text(encoding="utf-8") for p in packaged_templates_dir().glob("*.j2")}
JANE = Subscriber(email="jane.doe@example.com", email_key="jane.doe@example.com", first_name="Jane",
                  last_name="Doe", id=7, lists=("news", "specials"))
REQUIRED = ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe", "MIME-Version", "Content-Type")


def clock_at(*args) -> FakeClock:
    return FakeClock(datetime(*args, tzinfo=UTC))


def renderer(content=None, *, config: Config = EXAMPLE_CONFIG, templates=None, list_name=None, clock=None, **kw) -> CompiledCampaign:
    if content is None:
        content = load_content(EXAMPLES / "december-specials.md")
    elif isinstance(content, str):
        content = parse_content(content, "letter.md")
    return compile_campaign(content, templates or TEMPLATES, config, SECRET, list_name=list_name or content.template,
                    campaign_key=kw.pop("campaign_key", "campaign-1"), clock=clock or clock_at(2026, 11, 25, 15), **kw)


def parse(data: bytes) -> EmailMessage:
    """Parse a message back and insist that neither it nor any part has a defect."""
    msg = BytesParser(policy=policy.default).parsebytes(data)
    for part in msg.walk():
        assert part.defects == [], (part.get_content_type(), part.defects)
    return msg


def lines_ok(data: bytes) -> None:
    assert b"\n" not in data.replace(b"\r\n", b""), "a bare LF"
    assert b"\r" not in data.replace(b"\r\n", b""), "a bare CR"
    assert max(len(line) for line in data.split(b"\r\n")) < 998
    data.decode("ascii")  # 7-bit clean: no server needs 8BITMIME or SMTPUTF8


def test_a_specials_message_has_the_right_structure_and_headers():
    m = renderer().render(JANE)
    lines_ok(m.data)
    msg = parse(m.data)
    for name in REQUIRED:
        assert len(msg.get_all(name, [])) == 1, name
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    # the wire form of text is CRLF lines (RFC 5322); decoded, the parts are exactly what was rendered
    assert [p.get_content().replace("\r\n", "\n") for p in parts] == [m.text, m.html]
    assert msg["From"].addresses[0].addr_spec == "news@closter-acupuncture.example"
    assert msg["From"].addresses[0].display_name == "John Kim, Closter Acupuncture"
    assert [a.addr_spec for a in msg["To"].addresses] == ["jane.doe@example.com"]
    assert msg["To"].addresses[0].display_name == "Jane Doe"
    assert msg["Subject"] == "December specials: ease your pain before the holidays"
    assert msg["List-Id"] == "Closter Acupuncture specials <specials.closter-acupuncture.example>"
    assert m.to == "jane.doe@example.com"
    assert msg["Message-ID"] == m.message_id
    assert "Reply-To" not in msg and "List-Unsubscribe-Post" not in msg


def test_date_comes_from_the_clock_in_the_practice_time_zone():
    msg = parse(renderer(clock=clock_at(2026, 11, 25, 15, 0, 0)).render(JANE).data)
    assert msg["Date"] == "Wed, 25 Nov 2026 10:00:00 -0500"
    assert msg["Date"].datetime == datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def test_list_unsubscribe_mailto_carries_a_token_for_this_subscriber_list_and_day():
    m = renderer().render(JANE)
    msg = parse(m.data)
    value = msg["List-Unsubscribe"]
    match = re.fullmatch(r"<mailto:unsubscribe@closter-acupuncture\.example\?subject=unsubscribe%20([\w.-]+)>", value)
    assert match, value
    assert verify_token(SECRET, match.group(1)) == (7, "specials", date(2026, 11, 25))
    # the same link is in the footer of both parts
    assert f"subject=unsubscribe%20{match.group(1)}" in m.text
    assert f'href="mailto:unsubscribe@closter-acupuncture.example?subject=unsubscribe%20{match.group(1)}"' in m.html


def test_with_an_https_endpoint_there_is_one_click_unsubscribe_too():
    config = dataclasses.replace(EXAMPLE_CONFIG, unsubscribe=UnsubscribeConfig(
        mailto="unsubscribe@closter-acupuncture.example", url="https://closter-acupuncture.example/unsubscribe"))
    m = renderer(config=config).render(JANE)
    msg = parse(m.data)
    links = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
    # the https link first: mail programs use the leftmost one they support (RFC 2369)
    assert links[0].startswith("https://closter-acupuncture.example/unsubscribe?token=")
    assert links[1].startswith("mailto:unsubscribe@closter-acupuncture.example?subject=unsubscribe%20")
    token = links[0].split("token=")[1]
    assert verify_token(SECRET, token).subscriber_id == 7
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert f'href="https://closter-acupuncture.example/unsubscribe?token={token}"' in m.html
    assert f"Unsubscribe: https://closter-acupuncture.example/unsubscribe?token={token}" in m.text


def test_an_http_unsubscribe_url_is_refused():
    config = dataclasses.replace(EXAMPLE_CONFIG, unsubscribe=UnsubscribeConfig(url="http://x.example/u"))
    with pytest.raises(ConfigError, match="https"):
        renderer(config=config)


def test_message_id_is_on_the_sender_domain_and_the_same_for_a_retry():
    r = renderer()
    first = r.render(JANE).message_id
    assert re.fullmatch(r"<[0-9a-f]{32}@closter-acupuncture\.example>", first)
    assert r.render(JANE).message_id == first
    assert renderer().render(JANE).message_id == first  # a new process, the same campaign
    assert r.render(dataclasses.replace(JANE, id=8)).message_id != first
    assert renderer(campaign_key="campaign-2").render(JANE).message_id != first


def test_an_injected_message_id_source_is_used_and_checked():
    m = renderer(message_id=lambda s: f"<fixed.{s.id}@example.org>").render(JANE)
    assert parse(m.data)["Message-ID"] == "<fixed.7@example.org>" == m.message_id
    with pytest.raises(TemplateError):
        renderer(message_id=lambda s: "<x@y>\r\nBcc: evil@example.org").render(JANE)


def test_a_non_ascii_subject_and_sender_are_encoded_and_read_back():
    text = "---\nsubject: Café du matin — 20 % de réduction ✨\nfrom_name: Clinique Zoë\n---\nBonjour {{ first_name }} !\n"
    m = renderer(text).render(dataclasses.replace(JANE, first_name="Zoë", last_name="Ōtsuka"))
    lines_ok(m.data)
    assert b"=?utf-8?" in m.data
    msg = parse(m.data)
    assert msg["Subject"] == "Café du matin — 20 % de réduction ✨"
    assert msg["From"].addresses[0].display_name == "Clinique Zoë"
    assert msg["To"].addresses[0].display_name == "Zoë Ōtsuka"
    assert "Bonjour Zoë !" in msg.get_body(("plain",)).get_content()


def test_reply_to_from_the_content_file():
    m = renderer("---\nsubject: Hi\nreply_to: john@closter-acupuncture.example\n---\nHello\n").render(JANE)
    assert parse(m.data)["Reply-To"] == "john@closter-acupuncture.example"


def test_offers_show_price_was_price_code_and_date_in_words_in_both_parts():
    m = renderer().render(JANE)
    for part in (m.text, m.html):
        assert "$65" in part and "$95" in part
        assert "DEC-FIRST" in part
        assert "Thursday, December 31, 2026" in part
        assert "First visit with electroacupuncture" in part.replace("FIRST VISIT WITH ELECTROACUPUNCTURE", "First visit with electroacupuncture")
    assert 'href="https://closter-acupuncture.example/book"' in m.html  # the booking button
    assert "Book your visit: https://closter-acupuncture.example/book" in m.text


def test_footer_has_practice_address_phone_and_why_in_both_parts():
    m = renderer().render(JANE)
    for part in (m.text, m.html):
        assert "1 Example Street, Closter, NJ 07624" in part
        assert "(201) 297-7703" in part
        assert "you signed up" in part
        assert "It was sent to jane.doe@example.com." in " ".join(part.split())
    assert max(len(line) for line in m.text.splitlines() if "mailto:" not in line) <= 78  # read as text
    assert 'href="tel:+12012977703"' in m.html


def test_the_html_has_inlined_css_no_scripts_and_a_single_column_layout():
    html = renderer().render(JANE).html
    assert html.startswith("<!DOCTYPE html>")
    assert 'style="' in html and html.count('style="') > 40
    styles = re.findall(r"<style[^>]*>(.*?)</style>", html, re.S)
    assert len(styles) == 1 and styles[0].strip().startswith("@media")  # only what cannot be inlined
    assert "<script" not in html.lower()
    assert 'name="viewport"' in html
    assert "max-width: 600px" in html
    assert "{{" not in html and "{%" not in html and "JJ" not in html


def test_news_sections_images_and_text_written_for_reading():
    m = renderer(load_content(EXAMPLES / "monthly-news.md")).render(JANE)
    parse(m.data)
    html, text = m.html, m.text
    for title in ("How electroacupuncture eases pain", "Conditions we treat", "Holiday hours"):
        assert re.search(r"<h2[^>]*>" + title + "</h2>", html), title
        assert f"{title}\n{'-' * len(title)}\n" in text
    img = re.search(r"<img [^>]*>", html).group(0)
    assert 'alt="Acupuncture needles connected to a small electroacupuncture device"' in img
    assert "max-width: 100%" in img
    assert not re.search(r"<[a-z/][^>]*>", text)  # no HTML tags in the text part
    assert "- Headache and migraine\n- Arthritis and stenosis\n" in text
    flowing = " ".join(text.split())  # paragraphs are refilled to 72 columns
    assert "book online (https://closter-acupuncture.example/book)" in flowing
    assert "Call us at (201) 297-7703 and ask." in flowing


def test_a_missing_name_falls_back_to_the_default():
    r = renderer(load_content(EXAMPLES / "monthly-news.md"))
    assert "Hi Jane," in r.render(JANE).text
    nameless = r.render(dataclasses.replace(JANE, first_name="", last_name=""))
    assert "Hi there," in nameless.text and "Hi there," in nameless.html
    assert parse(nameless.data)["To"] == "jane.doe@example.com"


@pytest.mark.parametrize("name", ["{{ 7*7 }}", "{% raw %}", "<script>alert(1)</script>", "Tom & Jerry", '"><img src=x onerror=alert(1)>'])
def test_subscriber_data_is_shown_literally_never_run_or_trusted(name):
    m = renderer(load_content(EXAMPLES / "monthly-news.md")).render(dataclasses.replace(JANE, first_name=name))
    parse(m.data)
    assert f"Hi {name}," in m.text  # text is text: shown as typed
    assert "49" not in m.text
    escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")
    assert f"Hi {escaped}," in m.html
    assert "<script>" not in m.html and "<img src=x" not in m.html


def test_an_undefined_variable_in_the_body_names_the_file_line():
    text = "---\nsubject: Hi\n---\nHello {{ first_name }},\n\n## News\n\nYour visit is on {{ visit_date }}.\n"
    with pytest.raises(TemplateError) as info:
        renderer(text)
    assert info.value.message == (
        "letter.md:8: there is no variable 'visit_date'; the variables are first_name, last_name, full_name, "
        "email, subject, preheader, practice, offers, booking_url, unsubscribe_url, unsubscribe_mailto, "
        "unsubscribe_web, body_html, body_text, intro_html, intro_text, sections, list_name, sender_name, "
        "template, range, namespace."
    )
    assert 'default("there")' in info.value.hint


def test_a_misspelt_variable_gets_a_did_you_mean():
    with pytest.raises(TemplateError, match=r"^letter.md:4: there is no variable 'frist_name'; .*; did you mean 'first_name'\?$"):
        renderer("---\nsubject: Hi\n---\nHello {{ frist_name }},\n")


def test_an_undefined_variable_in_a_template_names_the_template_line():
    templates = dict(TEMPLATES)
    templates["news.txt.j2"] = templates["news.txt.j2"].replace("{{ intro_text }}", "{{ intro_text }}\n{{ practice.fax }}")
    line = templates["news.txt.j2"].splitlines().index("{{ practice.fax }}") + 1
    with pytest.raises(TemplateError) as info:
        renderer("---\nsubject: Hi\n---\nHello\n", templates=templates)
    assert info.value.message == (
        f"news.txt.j2:{line}: practice has no field 'fax'; its fields are name, address, street, city, phone, "
        "phone_uri, website, website_label, booking_url, logo_url."
    )


@pytest.mark.parametrize("expression, message", [
    ("{{ practice.phone_numbr }}", "practice has no field 'phone_numbr'; its fields are name, address, street, city, "
     "phone, phone_uri, website, website_label, booking_url, logo_url; did you mean 'phone'?"),
    ("{% for o in offers %}{{ o.titel }}{% endfor %}", "offer has no field 'titel'; its fields are title, details, "
     "details_html, details_text, price, was_price, code, valid_until, valid_until_text; did you mean 'title'?"),
    ("{% for s in sections %}{{ s.heading }}{% endfor %}", "section has no field 'heading'; its fields are title, title_html, text, html."),
    ("{{ body_html.text }}", "this part of the letter is text and has no field 'text'."),
    ("{{ lipsum(2) }}", "there is no variable 'lipsum': Jinja's lipsum, cycler, joiner, dict are not available in letters and templates."),
])
def test_an_unknown_field_lists_the_fields_there_are(expression, message):
    text = "---\nsubject: Hi\ntemplate: specials\noffers:\n  - title: A\n    details: B\n---\nHello\n\n## News\n\n" + expression + "\n"
    with pytest.raises(TemplateError) as info:
        renderer(text)
    assert info.value.message == "letter.md:12: " + message


def test_an_error_in_a_section_names_the_content_file_not_an_internal_name():
    # The section's title runs through Markdown before Jinja: an error there is still the author's line.
    text = "---\nsubject: Hi\n---\nHello\n\n## News for {{ frist_name }}\n\nText.\n"
    with pytest.raises(TemplateError, match=r"^letter.md:6: there is no variable 'frist_name'"):
        renderer(text)
    text = "---\nsubject: Hi\n---\nHello\n\n## News\n\nOne {{ 1 / 0 }}.\n"
    with pytest.raises(TemplateError, match=r"^letter.md:8: division by zero\.$"):
        renderer(text)


def test_a_template_syntax_error_names_the_template_line():
    templates = dict(TEMPLATES)
    templates["base.html.j2"] = templates["base.html.j2"].replace("{% endif %}", "{% endiff %}", 1)
    with pytest.raises(TemplateError, match=r"^base.html.j2:\d+: Encountered unknown tag 'endiff'"):
        renderer(templates=templates)


def test_a_block_tag_alone_on_a_line_leaves_no_empty_paragraph():
    text = "---\nsubject: Hi\n---\n{% if first_name %}\n\nWelcome back, {{ first_name }}!\n\n{% else %}\n\nWelcome!\n\n{% endif %}\n\nBye.\n"
    r = renderer(text)
    named, nameless = r.render(JANE), r.render(dataclasses.replace(JANE, first_name=""))
    assert "Welcome back, Jane!" in named.html and "Welcome!" not in named.html
    assert "Welcome!" in nameless.html and "Welcome back" not in nameless.html
    assert not re.search(r"<p[^>]*>\s*</p>", named.html)
    assert "Welcome back, Jane!\n\nBye." in named.text


def test_a_jinja_link_in_markdown_keeps_its_url():
    m = renderer("---\nsubject: Hi\n---\n[Book now]({{ practice.booking_url }}) or [email us](mailto:{{ email }})\n").render(JANE)
    assert 'href="https://closter-acupuncture.example/book"' in m.html
    assert 'href="mailto:jane.doe@example.com"' in m.html
    assert "Book now (https://closter-acupuncture.example/book) or email us" in m.text


def test_the_body_can_use_jinja_globals_and_filters():
    m = renderer("---\nsubject: Hi\n---\n{% for i in range(3) %}{{ i }}{% endfor %} {{ 'x' | upper }}\n").render(JANE)
    assert "012 X" in m.text and "012 X" in m.html


def test_without_a_from_address_there_is_no_message():
    config = dataclasses.replace(EXAMPLE_CONFIG, sender=dataclasses.replace(EXAMPLE_CONFIG.sender, from_email=""))
    with pytest.raises(ConfigError, match="from_email"):
        renderer(config=config)


def test_markdown_to_text_reads_like_text():
    text = markdown_to_text("# Title\n\nA *soft* and **strong** [link](https://x.example).\n\n> quoted\n\n1. one\n2. two\n\n![pic](https://x.example/p.png)\n")
    assert text == "Title\n=====\n\nA soft and *strong* link (https://x.example).\n\n> quoted\n\n1. one\n2. two"


def test_packaged_templates_are_the_repository_ones_in_an_editable_install():
    assert packaged_templates_dir() == REPO / "templates"
    assert sorted(TEMPLATES) == sorted(TEMPLATE_FILES)


def test_a_workspace_template_overrides_the_packaged_one_file_by_file(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "specials.txt.j2").write_text("{{ subject }} for {{ first_name }}\n{{ unsubscribe_url }} {{ practice.address }}\n")
    in_use = {name: (origin, path) for name, origin, path in templates_in_use(tmp_path)}
    assert in_use["specials.txt.j2"] == ("workspace", tmp_path / "templates" / "specials.txt.j2")
    assert in_use["specials.html.j2"] == ("packaged", REPO / "templates" / "specials.html.j2")
    m = renderer(templates=resolve_templates(tmp_path)).render(JANE)
    assert m.text.startswith("December specials: ease your pain before the holidays for Jane\n")
    assert "Book your visit" in m.html  # the packaged HTML still in use


def test_a_missing_template_is_reported(tmp_path):
    templates = {k: v for k, v in TEMPLATES.items() if k != "news.html.j2"}
    with pytest.raises(TemplateError, match="there is no template news.html.j2"):
        renderer("---\nsubject: Hi\n---\nx\n", templates=templates)


IDN = dataclasses.replace(
    EXAMPLE_CONFIG,
    sender=dataclasses.replace(EXAMPLE_CONFIG.sender, from_email="news@straße.example", reply_to="info@bücher.example"),
    unsubscribe=UnsubscribeConfig(mailto="unsubscribe@straße.example", url="https://bücher.example/abmelden?liste=größe"),
)


def test_international_domains_are_idna_2008_a_labels_in_every_header():
    # straße.example is xn--strae-oqa.example in IDNA 2008; IDNA 2003 would write strasse.example
    m = renderer(config=IDN).render(dataclasses.replace(JANE, email="zoe@straße.example"))
    lines_ok(m.data)
    assert b"strasse" not in m.data and b"=?utf-8?q?b=C3=BCcher?=" not in m.data
    msg = parse(m.data)
    assert msg["From"].addresses[0].addr_spec == "news@xn--strae-oqa.example"
    assert msg["Reply-To"].addresses[0].addr_spec == "info@xn--bcher-kva.example"
    assert msg["To"].addresses[0].addr_spec == "zoe@xn--strae-oqa.example"
    assert m.message_id.endswith("@xn--strae-oqa.example>")
    assert msg["List-Id"] == "Closter Acupuncture specials <specials.xn--strae-oqa.example>"
    links = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
    assert {link.split("?")[0] for link in links} == {
        "mailto:unsubscribe@xn--strae-oqa.example", "https://xn--bcher-kva.example/abmelden"}
    assert any("liste=gr%C3%B6%C3%9Fe&token=" in link for link in links)
    # the footer's link is the same one
    assert "Unsubscribe: https://xn--bcher-kva.example/abmelden?liste=gr%C3%B6%C3%9Fe&token=" in m.text


def test_an_international_reply_to_in_the_front_matter_is_an_a_label():
    m = renderer("---\nsubject: Hi\nreply_to: info@bücher.example\n---\nHello\n").render(JANE)
    assert "Reply-To: info@xn--bcher-kva.example\r\n" in m.data.decode("ascii")


def test_a_non_ascii_sender_local_part_is_refused_naming_the_setting():
    config = dataclasses.replace(EXAMPLE_CONFIG, sender=dataclasses.replace(EXAMPLE_CONFIG.sender, from_email="zoë@example.com"))
    with pytest.raises(ConfigError, match=r"^\[sender\] from_email in mailer.toml 'zoë@example.com' has non-ASCII"):
        renderer(config=config)


def test_the_names_errors_offer_are_exactly_the_names_templates_get():
    from mailer.render.environment import TEMPLATE_VARIABLES

    assert set(renderer()._context(JANE, "token")) == set(TEMPLATE_VARIABLES)
