"""preview, check, templates list and unsubscribe, as a user runs them."""

from __future__ import annotations

import json
import re
from email import policy
from email.parser import BytesParser

from typer.testing import CliRunner

from mailer.cli import AppState, app
from mailer.cli.output import Output

from .test_render import EXAMPLES, parse

SPECIALS = str(EXAMPLES / "december-specials.md")
NEWS = str(EXAMPLES / "monthly-news.md")


def test_preview_writes_the_html_to_stdout_when_piped(mailer):
    result = mailer("preview", SPECIALS)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("<!DOCTYPE html>")
    assert "Hi Jane," in result.stdout  # the sample subscriber
    assert "First visit with electroacupuncture" in result.stdout


def test_preview_as_text_and_as_a_whole_message(mailer):
    text = mailer("preview", NEWS, "--format", "text")
    assert text.exit_code == 0 and text.stdout.startswith("CLOSTER ACUPUNCTURE\n")
    eml = mailer("preview", NEWS, "--format", "eml")
    assert eml.exit_code == 0
    msg = parse(eml.stdout_bytes)
    assert msg["Subject"] == "How electroacupuncture eases pain, and our holiday hours"
    assert msg["To"].addresses[0].addr_spec == "jane.doe@example.com"


def test_preview_for_a_stored_subscriber_into_a_file(mailer, tmp_path):
    assert mailer("subscribers", "add", "mary@example.com", "--first-name", "Mary", "--last-name", "Lee").exit_code == 0
    out = tmp_path / "mary.eml"
    result = mailer("preview", SPECIALS, "--to", "Mary@Example.com", "--format", "eml", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert str(out) in result.stderr and "mary@example.com" in result.stderr
    msg = BytesParser(policy=policy.default).parsebytes(out.read_bytes())
    assert msg["To"].addresses[0].display_name == "Mary Lee"
    assert "Hi Mary," in msg.get_body(("plain",)).get_content()


def test_preview_for_someone_not_on_the_list_fails_cleanly(mailer):
    result = mailer("preview", SPECIALS, "--to", "nobody@example.com")
    assert result.exit_code == 2
    assert "nobody@example.com is not on the list" in result.stderr
    assert "Traceback" not in result.output


def test_preview_names_file_and_line_of_an_undefined_variable(mailer, tmp_path):
    letter = tmp_path / "letter.md"
    letter.write_text("---\nsubject: Hi\n---\nHello {{ first_name }},\n\nSee you on {{ visit_day }}.\n")
    result = mailer("preview", letter)
    assert result.exit_code == 2
    assert "error: letter.md:6: there is no variable 'visit_day'; the variables are first_name, last_name, " in result.stderr
    assert result.stdout == ""


def test_preview_names_the_field_a_letter_misspelt_and_the_fields_there_are(mailer, tmp_path):
    letter = tmp_path / "letter.md"
    letter.write_text("---\nsubject: Hi\n---\nHello,\n\n## Call us\n\nOur number is {{ practice.phone_numbr }}.\n")
    result = mailer("preview", letter)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        "error: letter.md:8: practice has no field 'phone_numbr'; its fields are name, address, street, city, "
        "phone, phone_uri, website, website_label, booking_url, logo_url; did you mean 'phone'?"
    )
    assert "PracticeView" not in result.output and "#body" not in result.output and "#raw" not in result.output


def test_an_error_in_a_workspace_template_names_the_template_file_and_line(mailer):
    source = (EXAMPLES.parent / "templates" / "specials.html.j2").read_text(encoding="utf-8")
    source = source.replace("{{ offer.title }}", "{{ offer.tilte }}")
    (mailer.home / "templates" / "specials.html.j2").write_text(source)
    line = next(n for n, text in enumerate(source.splitlines(), start=1) if "offer.tilte" in text)
    for command in (["preview", SPECIALS], ["check", SPECIALS]):
        result = mailer(*command)
        assert result.exit_code == 2, command
        assert (f"specials.html.j2:{line}: offer has no field 'tilte'; its fields are title, details, details_html, "
                "details_text, price, was_price, code, valid_until, valid_until_text; did you mean 'title'?") in result.output
        assert "OfferView" not in result.output


def test_check_names_file_and_line_of_a_misspelt_variable(mailer, tmp_path):
    letter = tmp_path / "letter.md"
    letter.write_text("---\nsubject: Hi\n---\nHello {{ frist_name | default('there') }},\n")
    result = mailer("check", letter, "--json")
    assert result.exit_code == 2
    [error] = [c for c in json.loads(result.stdout)["checks"] if c["level"] == "error"]
    assert error["check"] == "templates"
    assert error["message"].startswith("letter.md:4: there is no variable 'frist_name'; the variables are ")
    assert "did you mean 'first_name'?" in error["message"]


def test_preview_on_a_terminal_shows_the_text_and_keeps_the_html_in_the_workspace(mailer):
    runner = CliRunner()
    obj = AppState(home=str(mailer.home), clock=mailer.clock, output=Output(force_terminal=True))
    result = runner.invoke(app, ["preview", SPECIALS], obj=obj)
    assert result.exit_code == 0, result.stderr
    assert "Hi Jane," in result.stdout and "Book your visit: https://" in result.stdout
    saved = mailer.home / "previews" / "december-specials.html"
    assert saved.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_check_passes_the_examples(mailer):
    result = mailer("check", SPECIALS)
    assert result.exit_code == 0, result.stdout
    assert result.stdout.startswith("level\tcheck\tmessage\n")
    assert "pass\tunsubscribe link\tThe HTML part has a working unsubscribe link." in result.stdout
    assert "0 error(s), 1 warning(s)." in result.stderr and "one-click unsubscribe" in result.stdout  # no [unsubscribe] url


def test_check_exits_2_on_an_error_and_reports_json(mailer, tmp_path):
    letter = tmp_path / "letter.md"
    letter.write_text("---\nsubject: Hi\ntemplate: specials\n---\n[book](/book)\n")
    result = mailer("check", letter, "--json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["errors"] == 2
    assert {c["check"] for c in doc["checks"] if c["level"] == "error"} == {"offers", "links"}


def test_check_reports_a_broken_content_file_as_a_check(mailer, tmp_path):
    letter = tmp_path / "letter.md"
    letter.write_text("no front matter\n")
    result = mailer("check", letter, "--json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["checks"][0]["message"].startswith("letter.md:1: a content file starts with front matter")


def test_templates_list_shows_packaged_and_overridden(mailer):
    result = mailer.json("templates", "list")
    assert {t["name"]: t["source"] for t in result} == {
        name: "packaged" for name in
        ("base.html.j2", "base.txt.j2", "news.html.j2", "news.txt.j2", "specials.html.j2", "specials.txt.j2")
    }
    (mailer.home / "templates" / "news.txt.j2").write_text("{{ intro_text }}\n{{ practice.address }}\n{{ unsubscribe_url }}\n")
    rows = {t["name"]: t for t in mailer.json("templates", "list")}
    assert rows["news.txt.j2"]["source"] == "workspace"
    assert rows["news.txt.j2"]["path"] == str(mailer.home / "templates" / "news.txt.j2")
    assert rows["news.html.j2"]["source"] == "packaged"
    assert mailer("preview", NEWS, "--format", "text").stdout.startswith("Hi Jane,\n")


def _token_for(mailer, email: str) -> str:
    eml = mailer("preview", SPECIALS, "--to", email, "--format", "eml")
    value = parse(eml.stdout_bytes)["List-Unsubscribe"]
    return re.search(r"unsubscribe%20([\w.-]+)>", value).group(1)


def test_unsubscribe_token_from_a_message_unsubscribes_from_everything(mailer):
    mailer("subscribers", "add", "mary@example.com", "--first-name", "Mary")
    token = _token_for(mailer, "mary@example.com")
    result = mailer("unsubscribe", token)
    assert result.exit_code == 0, result.stderr
    assert "mary@example.com: unsubscribed" in result.stderr
    shown = mailer.json("subscribers", "show", "mary@example.com")
    assert shown["status"] == "unsubscribed"
    assert shown["unsubscribed_reason"] == "unsubscribe link (specials)"
    again = mailer("unsubscribe", token, "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout) == {"subscriber": "mary@example.com", "list": "specials",
                                        "issued": "2026-11-25", "changed": False}


def test_an_altered_token_changes_nothing(mailer):
    mailer("subscribers", "add", "mary@example.com")
    token = _token_for(mailer, "mary@example.com")
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    result = mailer("unsubscribe", altered)
    assert result.exit_code == 2
    assert "not valid" in result.stderr
    assert mailer.json("subscribers", "show", "mary@example.com")["status"] == "active"


def test_a_token_for_an_erased_person_is_harmless(mailer):
    mailer("subscribers", "add", "mary@example.com")
    token = _token_for(mailer, "mary@example.com")
    assert mailer("subscribers", "erase", "mary@example.com", "--yes").exit_code == 0
    result = mailer("unsubscribe", token)
    assert result.exit_code == 0
    assert "no longer on the list" in result.stderr
