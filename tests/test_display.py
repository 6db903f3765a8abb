"""What a practitioner reads: help, tables, times, the sent
column, a template of one's own, and the preview in a browser."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mailer.cli import AppState, app
from mailer.cli.output import Output
from tests.conftest import REPO
from tests.test_send import EVERYONE, sample_workspace, sending  # noqa: F401 (fixtures)

SPECIALS = REPO / "examples" / "december-specials.md"
NEWS = REPO / "examples" / "monthly-news.md"


def all_paths():
    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, path + [name])

    yield from walk(typer.main.get_command(app), [])


def on_terminal(mailer, *args, **kwargs):
    obj = AppState(home=str(mailer.home), clock=mailer.clock, output=Output(force_terminal=True), **kwargs)
    return CliRunner().invoke(app, [str(a) for a in args], obj=obj)


# ---- 9. help and display ----------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p, _ in all_paths()], ids=lambda p: " ".join(p) or "mailer")
def test_help_names_values_in_words_not_python_types(bare_mailer, path):
    text = bare_mailer(*path, "--help").stdout
    assert not re.search(r"<\w|\{\w|list\[|\bstr\b|\bint range\b", text), text


@pytest.mark.parametrize("path", [p for p, c in all_paths() if getattr(c, "commands", None)], ids=lambda p: " ".join(p) or "mailer")
def test_every_command_has_a_one_line_summary_that_fits(bare_mailer, path):
    text = bare_mailer(*path, "--help").stdout
    listing = text.split("Commands:", 1)[1]
    assert "..." not in listing, listing
    assert all(len(line) <= 80 for line in listing.splitlines())


def test_the_tag_filter_is_described_as_a_filter(bare_mailer):
    for command in (["export"], ["subscribers", "list"]):
        text = bare_mailer(*command, "--help").stdout
        assert "Only subscribers with this tag" in text and "Tag to add" not in text
    assert "Tag to add" in bare_mailer("import", "--help").stdout


def test_tables_on_a_terminal_wrap_between_names_not_inside_them(mailer):
    mailer("subscribers", "add", "margaret.oconnor@example.com", "--first-name", "Margaret",
           "--last-name", "O'Connor", "--tag", "patient", "--tag", "vip", "--tag", "acupuncture")
    result = on_terminal(mailer, "subscribers", "list")
    assert result.exit_code == 0
    words = {w for line in result.stdout.splitlines() for w in re.findall(r"[\w'-]+", line)}
    assert {"news", "specials", "patient", "vip", "acupuncture", "Margaret"} <= words, result.stdout


def test_a_date_without_a_time_is_refused_with_the_fix(mailer):
    result = mailer("campaign", "create", NEWS, "--at", "2026-12-01")
    assert result.exit_code == 2
    assert "'2026-12-01' is a date without a time" in result.stderr
    assert '"2026-12-01 09:00"' in result.stderr and "00:00" in result.stderr
    assert mailer.json("campaign", "list") == []


def test_people_read_local_times_and_json_keeps_utc(mailer):
    assert mailer("campaign", "create", NEWS, "--at", "2026-12-01 09:00").exit_code == 0
    shown = mailer("campaign", "show", "1").stdout
    assert "scheduled: 2026-12-01 09:00 EST" in shown and "created: 2026-11-25 10:00 EST" in shown
    assert not re.search(r"\d\d:\d\dZ|T\d\d:", shown)
    doc = mailer.json("campaign", "show", "1")
    assert (doc["scheduled_at"], doc["created_at"]) == ("2026-12-01T14:00:00Z", "2026-11-25T15:00:00Z")


# ---- 15. the sent column ----------------------------------------------------------------------


def test_campaign_list_says_when_each_campaign_went_out_and_to_how_many(sending):
    assert sending.send(sending.content, "--batch-size", "20", "--pause", "600").exit_code == 0

    rows = sending.m("campaign", "list").stdout.splitlines()

    header = rows[0].split("\t")
    row = dict(zip(header, rows[1].split("\t")))
    assert row["sent"] == "2026-11-25 10:00 EST to 10:20 EST" and row["got it"] == str(EVERYONE)
    [doc] = sending.m.json("campaign", "list")
    assert (doc["first_sent_at"], doc["last_sent_at"], doc["sent"]) == ("2026-11-25T15:00:00Z", "2026-11-25T15:20:00Z", EVERYONE)
    assert sending.m.json("campaign", "show", "1")["sent"] == EVERYONE


# ---- 16. a template of one's own ------------------------------------------------------------


def test_templates_copy_makes_the_workspace_own_it_and_never_overwrites(mailer):
    result = mailer("templates", "copy", "news")

    assert result.exit_code == 0, result.stderr
    copied = [Path(line) for line in result.stdout.splitlines()]
    assert [p.name for p in copied] == ["news.html.j2", "news.txt.j2"]
    assert all(p.parent == mailer.home / "templates" and p.is_file() for p in copied)
    rows = {t["name"]: t["source"] for t in mailer.json("templates", "list")}
    assert rows["news.html.j2"] == rows["news.txt.j2"] == "workspace" and rows["specials.html.j2"] == "packaged"

    (mailer.home / "templates" / "news.txt.j2").write_text("my own {{ unsubscribe_url }}\n")
    again = mailer("templates", "copy", "news")
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert (mailer.home / "templates" / "news.txt.j2").read_text() == "my own {{ unsubscribe_url }}\n"
    unknown = mailer("templates", "copy", "newsletter")
    assert unknown.exit_code == 2 and "base, news, specials" in unknown.stderr
    assert mailer("templates", "copy", "specials.txt.j2").stdout.strip().endswith("templates/specials.txt.j2")


# ---- 17. the preview in a browser -----------------------------------------------------------


def test_preview_open_hands_a_private_html_file_to_the_browser(mailer):
    opened: list[str] = []

    def browser(url: str) -> bool:
        opened.append(url)
        return True

    result = on_terminal(mailer, "preview", SPECIALS, "--open", open_browser=browser)

    assert result.exit_code == 0, result.stderr
    [url] = opened
    assert url.startswith("file://") and url.endswith(".html")
    path = Path(url[len("file://"):])
    html = path.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "December specials" in html
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"Opened {path} in your web browser." in result.stderr
    path.unlink()


def test_preview_open_without_a_browser_says_where_the_file_is(mailer):
    result = on_terminal(mailer, "preview", NEWS, "--open", open_browser=lambda url: False)
    assert result.exit_code == 0
    assert "No web browser could be started here; open" in result.stderr
    Path(re.search(r"open (\S+\.html) yourself", result.stderr.replace("\n", "")).group(1)).unlink()
