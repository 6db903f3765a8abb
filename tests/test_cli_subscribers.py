"""The people commands as a user runs them: init, import, validate, export, subscribers."""

from __future__ import annotations

import csv
import io
import json
import stat
from pathlib import Path

import pytest
import typer

from mailer import __version__
from mailer.cli import app
from mailer.csvio import EXPORT_COLUMNS


def write(path, text: str, encoding="utf-8"):
    path.write_text(text, encoding=encoding, newline="")
    return path


def all_commands():
    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, path + [name])

    yield from walk(typer.main.get_command(app), [])


@pytest.mark.parametrize("path", [p for p, _ in all_commands()], ids=lambda p: " ".join(p) or "mailer")
def test_every_command_has_help(bare_mailer, path):
    for flag in ("-h", "--help"):
        result = bare_mailer(*path, flag)
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.stdout
    cmd = dict((" ".join(p), c) for p, c in all_commands())[" ".join(path)]
    assert (cmd.help or "").strip(), f"{path} has no help text"


def test_version(bare_mailer):
    result = bare_mailer("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"mailer {__version__}"


def test_init_creates_a_private_workspace(bare_mailer):
    result = bare_mailer("init", "--no-input")
    assert result.exit_code == 0, result.stderr
    home = bare_mailer.home
    for d in ("templates", "outbox", "logs"):
        assert (home / d).is_dir()
    assert stat.S_IMODE((home / "mailer.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "secret.key").stat().st_mode) == 0o600
    toml = (home / "mailer.toml").read_text()
    assert "password_env" in toml and "# " in toml
    # running it again keeps the file the user may have edited
    (home / "mailer.toml").write_text(toml.replace('name = ""', 'name = "Edited"'))
    assert bare_mailer("init", "--no-input").exit_code == 0
    assert 'name = "Edited"' in (home / "mailer.toml").read_text()


def test_commands_need_a_workspace(bare_mailer):
    result = bare_mailer("subscribers", "list")
    assert result.exit_code == 2
    assert "no mailer workspace" in result.stderr
    assert "Traceback" not in result.stderr
    assert not bare_mailer.home.exists()


def test_home_comes_from_the_environment(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    home = tmp_path / "from-env"
    monkeypatch.setenv("MAILER_HOME", str(home))
    assert CliRunner().invoke(app, ["init", "--no-input"]).exit_code == 0
    assert (home / "mailer.toml").exists()


def test_broken_config_is_one_sentence_with_the_line(mailer):
    (mailer.home / "mailer.toml").write_text("[sending]\nbatch_size = fifty\n")
    result = mailer("subscribers", "list")
    assert result.exit_code == 2
    assert "mailer.toml" in result.stderr and "line 2" in result.stderr
    (mailer.home / "mailer.toml").write_text("[sending]\nbatchsize = 5\n")
    result = mailer("subscribers", "list")
    assert result.exit_code == 2
    assert "unknown key 'batchsize'" in result.stderr


def test_import_reports_exactly_the_contract_json(mailer, tmp_path):
    f = write(
        tmp_path / "people.csv",
        "Email,First Name,Last Name\n"
        "jane@example.com,Jane,Doe\n"
        "PAT@Example.com,Pat,Lee\n"
        "pat@example.com,Pat,Lee\n"
        "not-an-email,X,Y\n",
    )
    result = mailer("import", f, "--json")
    assert result.exit_code == 1  # done, but a row failed
    doc = json.loads(result.stdout)
    assert list(doc) == ["read", "added", "updated", "unchanged", "duplicates", "invalid", "suppressed", "rejects",
                         "typos", "no_consent"]
    assert doc["read"] == 4 and doc["added"] == 2 and doc["duplicates"] == 1 and doc["invalid"] == 1
    assert doc["rejects"] == [{"line": 5, "value": "not-an-email", "reason": doc["rejects"][0]["reason"]}]
    assert "@" in doc["rejects"][0]["reason"]
    again = mailer.json("import", f)
    assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, 2)


def test_import_options_apply_to_the_rows(mailer, tmp_path):
    f = write(tmp_path / "desk.csv", "email\nann@example.com\n")
    assert mailer("import", f, "--list", "news", "--tag", "front desk", "--source", "front desk").exit_code == 0
    doc = mailer.json("subscribers", "show", "ann@example.com")
    assert doc["lists"] == ["news"] and doc["tags"] == ["front desk"] and doc["source"] == "front desk"
    f2 = write(tmp_path / "site.csv", "email\nbo@example.com\n")
    mailer("import", f2)
    doc = mailer.json("subscribers", "show", "bo@example.com")
    assert doc["lists"] == ["news", "specials"] and doc["source"] == "site.csv"


def test_unknown_list_name_is_bad_usage(mailer, tmp_path):
    f = write(tmp_path / "a.csv", "email\nann@example.com\n")
    result = mailer("import", f, "--list", "news letter!")
    assert result.exit_code == 2
    assert mailer.json("subscribers", "list") == []


def test_dry_run_and_validate_write_nothing(mailer, bare_mailer, tmp_path):
    f = write(tmp_path / "a.csv", "email\nann@example.com\nbob@example.com\n")
    before = (mailer.home / "mailer.db").read_bytes()
    doc = mailer.json("import", f, "--dry-run")
    assert doc["added"] == 2
    assert mailer.json("subscribers", "list") == []
    assert mailer.json("validate", f)["added"] == 2
    assert (mailer.home / "mailer.db").read_bytes() == before
    # validate works without any workspace, and does not create one
    result = bare_mailer("validate", f, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["added"] == 2
    assert not bare_mailer.home.exists()


def test_validate_compares_with_the_current_list(mailer, tmp_path):
    f = write(tmp_path / "a.csv", "email\nann@example.com\nbob@example.com\n")
    mailer("import", f)
    mailer("subscribers", "unsubscribe", "bob@example.com")
    doc = mailer.json("validate", f)
    assert (doc["unchanged"], doc["suppressed"], doc["added"]) == (1, 1, 0)


def test_rejects_file_can_be_fixed_and_imported(mailer, tmp_path):
    f = write(tmp_path / "a.csv", "Name,Email\nAnn Lee,ann@example\nBo Yu,bo@example.com\n")
    rejects = tmp_path / "rejects.csv"
    assert mailer("import", f, "--rejects", rejects).exit_code == 1
    rows = list(csv.reader(io.StringIO(rejects.read_text(encoding="utf-8-sig"))))
    assert rows[0] == ["Name", "Email", "reject_line", "reject_reason"]
    assert rows[1][:3] == ["Ann Lee", "ann@example", "2"]
    fixed = rejects.read_text(encoding="utf-8-sig").replace("ann@example,", "ann@example.com,")
    write(rejects, fixed)
    doc = mailer.json("import", rejects)
    assert doc["added"] == 1 and doc["invalid"] == 0
    assert mailer.json("subscribers", "show", "ann@example.com")["first_name"] == "Ann"


def test_no_email_column_names_the_headers_it_saw(mailer, tmp_path):
    f = write(tmp_path / "a.csv", "Name,Phone\nAnn,555\n")
    result = mailer("import", f)
    assert result.exit_code == 2
    assert "no email column" in result.stderr and "'Name', 'Phone'" in result.stderr


def test_subscriber_lifecycle(mailer):
    assert mailer("subscribers", "add", "Kim@Example.com", "--first-name", "Kim", "--list", "specials").exit_code == 0
    assert mailer.json("subscribers", "show", "kim@example.com")["lists"] == ["specials"]
    assert mailer("subscribers", "unsubscribe", "kim@example.com", "--reason", "moved away").exit_code == 0
    shown = mailer.json("subscribers", "show", "kim@example.com")
    assert shown["status"] == "unsubscribed" and shown["unsubscribed_reason"] == "moved away"
    result = mailer("subscribers", "add", "kim@example.com")
    assert result.exit_code == 2 and "resubscribe" in result.stderr
    assert mailer("subscribers", "resubscribe", "kim@example.com").exit_code == 0
    assert mailer.json("subscribers", "show", "kim@example.com")["status"] == "active"


def test_add_rejects_what_import_rejects(mailer):
    result = mailer("subscribers", "add", "jane@example.com", "--first-name", "Jane\r\nBcc: x@evil.example")
    assert result.exit_code == 2
    assert "control character" in result.stderr
    assert mailer("subscribers", "add", "not an address").exit_code == 2


def test_show_unknown_is_exit_2(mailer):
    result = mailer("subscribers", "show", "nobody@example.com")
    assert result.exit_code == 2 and "not on the list" in result.stderr


def test_erase_asks_and_needs_yes_without_a_terminal(mailer):
    mailer("subscribers", "add", "gone@example.com")
    result = mailer("subscribers", "erase", "gone@example.com")
    assert result.exit_code == 2 and "--yes" in result.stderr
    assert mailer("subscribers", "erase", "gone@example.com", "--yes").exit_code == 0
    assert mailer("subscribers", "show", "gone@example.com").exit_code == 2
    assert mailer("subscribers", "add", "gone@example.com").exit_code == 2
    assert "gone@example.com" not in mailer("export").stdout


def test_list_filters_and_json(mailer, tmp_path):
    f = write(tmp_path / "a.csv", "email,name\nann@example.com,Ann Lee\nbo@example.com,Bo Yu\n")
    mailer("import", f)
    mailer("subscribers", "unsubscribe", "bo@example.com")
    assert [s["email"] for s in mailer.json("subscribers", "list", "--status", "active")] == ["ann@example.com"]
    assert [s["email"] for s in mailer.json("subscribers", "list", "--search", "yu")] == ["bo@example.com"]
    plain = mailer("subscribers", "list").stdout.splitlines()
    assert plain[0] == "email\tname\tstatus\tlists\ttags"
    assert plain[1] == "ann@example.com\tAnn Lee\tactive\tnews,specials\t"


def test_export_neutralises_formulas_and_filters(mailer, tmp_path):
    f = write(
        tmp_path / "a.csv",
        'email,first name,last name\nann@example.com,"=HYPERLINK(""http://evil.example"",""click"")",Lee\n'
        "bo@example.com,+Bo,@Yu\n",
    )
    mailer("import", f)
    mailer("subscribers", "unsubscribe", "bo@example.com")
    text = mailer("export").stdout
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(EXPORT_COLUMNS)
    assert rows[1][1] == "'=HYPERLINK(\"http://evil.example\",\"click\")"
    assert rows[2][1:3] == ["'+Bo", "'@Yu"]
    active = list(csv.reader(io.StringIO(mailer("export", "--status", "active").stdout)))
    assert [r[0] for r in active[1:]] == ["ann@example.com"]
    # the neutralised names come back exactly on import
    out = tmp_path / "backup.csv"
    assert mailer("export", "-o", out).exit_code == 0
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")


def test_export_import_export_is_the_same_file(mailer, tmp_path, clock):
    f = write(
        tmp_path / "a.csv",
        "Email Address,First Name,Last Name,OPTIN_TIME,OPTIN_IP,TAGS\n"
        'ann@example.com,Ann,"O\'Neil, Jr.",2019-03-04 10:22:11,203.0.113.9,"""Patient"",""VIP"""\n'
        "bo@example.com,-Bo,Yu,,,\n",
    )
    mailer("import", f)
    clock.advance(3600)
    mailer("subscribers", "unsubscribe", "bo@example.com", "--reason", "too many emails")
    first = tmp_path / "first.csv"
    mailer("export", "-o", first)
    from tests.conftest import Mailer

    other = Mailer(tmp_path / "other", clock)
    other("init", "--no-input")
    clock.advance(86400)
    doc = other.json("import", first)
    assert doc["added"] == 2 and doc["invalid"] == 0
    second = tmp_path / "second.csv"
    other("export", "-o", second)
    assert second.read_bytes() == first.read_bytes()
    shown = other.json("subscribers", "show", "bo@example.com")
    assert shown["status"] == "unsubscribed" and shown["first_name"] == "-Bo"
    assert other.json("subscribers", "show", "ann@example.com")["tags"] == ["Patient", "VIP"]


def test_excel_sep_line_names_the_delimiter(mailer, tmp_path):
    f = tmp_path / "sep.csv"
    f.write_bytes(b"sep=;\r\nEmail;Name\r\nann@example.com;Ann Lee\r\nnot-an-address;Bo\r\n")
    doc = mailer.json("import", f)
    assert (doc["added"], doc["rejects"][0]["line"]) == (1, 4)


def test_excel_for_mac_csv_is_macroman(mailer, tmp_path):
    f = tmp_path / "mac.csv"
    f.write_bytes("Email,Name\rzoe@example.com,Zoë Müller\r".encode("mac_roman"))
    mailer("import", f)
    assert mailer.json("subscribers", "show", "zoe@example.com")["first_name"] == "Zoë"


def test_control_characters_in_a_file_cannot_drive_the_terminal(mailer, tmp_path):
    f = tmp_path / "esc.csv"
    f.write_bytes(b'Email,Name\r\n"x\x1b]0;pwned\x07@example.com",A\r\n')
    result = mailer("import", f)
    assert result.exit_code == 1
    assert "\x1b" not in result.stdout + result.stderr and "\\x1b]0;pwned\\x07" in result.stdout


def test_import_from_standard_input(mailer):
    result = mailer("import", "-", "--json", input="Email,Name\nann@example.com,Ann Lee\n")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 1
    assert mailer.json("subscribers", "show", "ann@example.com")["source"] == "stdin"


def test_a_line_break_in_a_setting_is_refused_before_it_reaches_a_header(mailer):
    path = mailer.home / "mailer.toml"
    path.write_text(path.read_text().replace('from_name = "John Kim, Closter Acupuncture"', 'from_name = "John\\r\\nBcc: evil@example.com"'))
    result = mailer("subscribers", "list")
    assert result.exit_code == 2
    assert "[sender] from_name must be one line" in result.stderr


@pytest.mark.parametrize(
    "error, code, says",
    [
        (RuntimeError("boom"), 70, "This is a bug in mailer"),
        (__import__("sqlite3").OperationalError("database or disk is full"), 2, "The disk is full"),
        (__import__("sqlite3").OperationalError("database is locked"), 4, "another mailer is writing"),
    ],
    ids=["bug", "disk-full", "busy"],
)
def test_failures_are_one_sentence_never_a_traceback(mailer, tmp_path, monkeypatch, error, code, says):
    import mailer.cli.subscribers as cli

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(cli, "import_file", fail)
    f = write(tmp_path / "a.csv", "email\nann@example.com\n")
    result = mailer("import", f)
    assert result.exit_code == code
    assert says in result.stderr and "Traceback" not in result.stderr
    assert mailer.json("subscribers", "list") == []
    if code == 70:  # with --debug an unexpected error shows its traceback
        assert mailer("--debug", "import", f).exception is error


def test_a_terminal_gets_tables_and_a_pipe_gets_plain_lines(mailer, tmp_path):
    from typer.testing import CliRunner

    from mailer.cli import AppState
    from mailer.cli.output import Output

    mailer("import", write(tmp_path / "a.csv", "email,name\nann@example.com,Ann Lee\n"))
    obj = AppState(home=str(mailer.home), clock=mailer.clock, output=Output(force_terminal=True))
    on_terminal = CliRunner().invoke(app, ["subscribers", "list"], obj=obj)
    assert on_terminal.exit_code == 0
    assert "┃" in on_terminal.stdout and "ann@example.com" in on_terminal.stdout and "\t" not in on_terminal.stdout
    piped = mailer("subscribers", "list").stdout
    assert "┃" not in piped and piped.splitlines()[1].startswith("ann@example.com\t")


def test_init_on_a_terminal_offers_https_and_asks_for_a_real_address(bare_mailer):
    from typer.testing import CliRunner

    from mailer.cli import AppState
    from mailer.cli.output import Output
    from mailer.config import load_config

    obj = AppState(home=str(bare_mailer.home), clock=bare_mailer.clock, output=Output(force_terminal=True))
    answers = "\n".join([
        "Closter Acupuncture",
        "n/a", "n",                                   # not an address; not kept: asked again
        "1 Example Street, Closter, NJ 07624",
        "(201) 555-0100",
        "closter-acupuncture.example", "y",           # offered back with https://
        "http://closter-acupuncture.example/book",    # http is refused ...
        "https://closter-acupuncture.example/book",   # ... and asked again
        "",                                            # no logo
        "news@closter-acupuncture.example",
        "n",                                           # not HIPAA-covered
    ]) + "\n"
    result = CliRunner().invoke(app, ["init"], input=answers, obj=obj)
    assert result.exit_code == 0, result.output
    assert "does not look like a postal address" in result.output
    assert "Use https://closter-acupuncture.example?" in result.output and "must start with https://" in result.output
    p = load_config(bare_mailer.home / "mailer.toml").practice
    assert (p.address, p.website, p.booking_url) == (
        "1 Example Street, Closter, NJ 07624", "https://closter-acupuncture.example", "https://closter-acupuncture.example/book")


def test_a_website_without_https_is_named_with_its_key_and_file(mailer):
    path = mailer.home / "mailer.toml"
    path.write_text(path.read_text().replace('website = "https://closter-acupuncture.example"', 'website = "closter-acupuncture.example"'))
    result = mailer("check", Path(__file__).parent.parent / "examples" / "monthly-news.md")
    assert result.exit_code == 2
    assert "[practice] website in mailer.toml is 'closter-acupuncture.example'" in result.stdout.replace("\n", " ")
