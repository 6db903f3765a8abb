"""`mailer check --dns` and `mailer init --provider/--hipaa`, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import tomllib

from typer.testing import CliRunner

from mailer.cli import AppState, app
from mailer.cli.output import Output
from mailer.config import load_config
from mailer.dkim import load_private_key

from .conftest import DATA
from .dns_server import closed_port
from .test_cli_render import SPECIALS
from .test_dnscheck import DOMAIN, GOOD_DMARC, GOOGLE_SPF, published


def set_config(mailer, old: str, new: str) -> None:
    path = mailer.home / "mailer.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def relay(mailer, host: str) -> None:
    set_config(mailer, 'host = "127.0.0.1"', f'host = "{host}"')


def good_zone(dns_server) -> None:
    dns_server.txt.update(GOOGLE_SPF)
    dns_server.txt[DOMAIN] = "v=spf1 include:_spf.google.com ~all"
    dns_server.txt[f"_dmarc.{DOMAIN}"] = GOOD_DMARC
    dns_server.txt[f"google._domainkey.{DOMAIN}"] = published("test-2048.pem")


def test_check_dns_all_good_exits_0_with_a_table(mailer, dns_server):
    relay(mailer, "smtp.gmail.com")
    good_zone(dns_server)
    result = mailer("check", "--dns", "--nameserver", dns_server.address)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0] == "level\trecord\tname\tfound\tverdict\tpublish"
    assert [line.split("\t")[:3] for line in lines[1:]] == [
        ["pass", "SPF", DOMAIN],
        ["pass", "DMARC", f"_dmarc.{DOMAIN}"],
        ["pass", "DKIM", f"google._domainkey.{DOMAIN}"],
    ]
    assert "0 error(s), 0 warning(s)." in result.stderr


def test_check_dns_shows_the_record_to_publish_and_exits_2(mailer, dns_server):
    relay(mailer, "smtp.mailgun.org")
    good_zone(dns_server)
    dns_server.txt["mailgun.org"] = "v=spf1 ip4:209.61.151.0/24 ~all"
    result = mailer("check", "--dns", "--nameserver", dns_server.address)
    assert result.exit_code == 2
    spf = next(line.split("\t") for line in result.stdout.splitlines() if line.startswith("error\tSPF"))
    assert "does not include mailgun.org" in spf[4]
    assert spf[5] == "v=spf1 include:mailgun.org include:_spf.google.com ~all"
    assert "publish the records shown" in result.stderr


def test_check_dns_json(mailer, dns_server):
    relay(mailer, "smtp.gmail.com")
    good_zone(dns_server)
    del dns_server.txt[f"_dmarc.{DOMAIN}"]
    result = mailer("check", "--dns", "--nameserver", dns_server.address, "--json")
    assert result.exit_code == 0, result.stderr  # a missing DMARC record is a warning
    doc = json.loads(result.stdout)
    assert doc["dns"]["domain"] == DOMAIN and doc["dns"]["ok"] and doc["dns"]["checked"]
    assert doc["dns"]["warnings"] == 1 and doc["dns"]["errors"] == 0
    dmarc = next(r for r in doc["dns"]["records"] if r["record"] == "DMARC")
    assert dmarc["publish"].startswith("v=DMARC1; p=none; rua=mailto:")
    assert result.stderr == ""


def test_check_dns_without_a_dns_answer_exits_1_and_says_it_needs_dns(mailer):
    relay(mailer, "smtp.gmail.com")
    result = mailer("check", "--dns", "--nameserver", f"127.0.0.1:{closed_port()}", "--timeout", "0.3")
    assert result.exit_code == 1
    assert "Cannot check: no DNS answer" in result.stdout
    assert "needs DNS" in result.stderr


def test_a_gmail_from_through_ses_is_an_error_with_the_fix(mailer, dns_server):
    relay(mailer, "email-smtp.us-east-1.amazonaws.com")
    set_config(mailer, 'from_email = "news@closter-acupuncture.example"', 'from_email = "closter.acu@gmail.com"')
    result = mailer("check", "--dns", "--nameserver", dns_server.address)
    assert result.exit_code == 2
    assert "5.7.26" in result.stdout and "Send from an address at your own domain" in result.stdout
    assert dns_server.queries == []


def test_check_dns_with_a_dkim_key_of_ones_own(mailer, dns_server):
    shutil.copy(DATA / "dkim" / "test-2048.pem", mailer.home / "dkim.pem")
    os.chmod(mailer.home / "dkim.pem", 0o600)
    set_config(mailer, 'selector = ""', 'selector = "mail2026"')
    set_config(mailer, 'private_key_file = ""', 'private_key_file = "dkim.pem"')
    relay(mailer, "mail.closter-acupuncture.example")
    good_zone(dns_server)
    result = mailer("check", "--dns", "--nameserver", dns_server.address, "--json")
    assert result.exit_code == 2  # the key is not published yet
    dkim = next(r for r in json.loads(result.stdout)["dns"]["records"] if r["record"] == "DKIM")
    assert dkim["name"] == f"mail2026._domainkey.{DOMAIN}"
    assert dkim["publish"] == load_private_key(mailer.home / "dkim.pem").public_record()
    dns_server.txt[dkim["name"]] = dkim["publish"]  # the user publishes what they were shown
    result = mailer("check", "--dns", "--nameserver", dns_server.address, "--json")
    records = {r["record"]: r for r in json.loads(result.stdout)["dns"]["records"]}
    assert records["DKIM"]["level"] == "pass" and records["SPF"]["level"] == "warning"  # own relay: cannot tell
    assert result.exit_code == 0


def test_check_a_letter_and_the_dns_at_once(mailer, dns_server):
    relay(mailer, "smtp.gmail.com")
    good_zone(dns_server)
    result = mailer("check", SPECIALS, "--dns", "--nameserver", dns_server.address, "--json")
    assert result.exit_code == 0, result.stdout
    doc = json.loads(result.stdout)
    assert doc["file"] == SPECIALS and doc["ok"] and doc["dns"]["ok"]


def test_check_needs_a_file_or_dns(mailer):
    result = mailer("check")
    assert result.exit_code == 2 and "Nothing to check" in result.stderr and "--dns" in result.stderr
    bad = mailer("check", "--dns", "--nameserver", "not-an-address")
    assert bad.exit_code == 2 and "--nameserver" in bad.stderr


# -- init --------------------------------------------------------------------------------


def test_init_with_a_provider_fills_smtp_and_the_limits(bare_mailer):
    result = bare_mailer("init", "--provider", "m365", "--no-input")
    assert result.exit_code == 0, result.stderr
    config = load_config(bare_mailer.home / "mailer.toml")
    assert (config.smtp.host, config.smtp.port, config.smtp.security) == ("smtp.office365.com", 587, "starttls")
    assert (config.sending.rate, config.sending.per_day) == (25, 8000)
    assert "set for Microsoft 365" in result.stderr


def test_init_with_an_unknown_provider_lists_the_names_and_creates_nothing(bare_mailer):
    result = bare_mailer("init", "--provider", "hotmail", "--no-input")
    assert result.exit_code == 2
    assert "gmail, workspace, outlook, m365, ses, mailgun, fastmail, postmark" in result.stderr
    assert not bare_mailer.home.exists()


def test_init_hipaa_flag_marks_the_practice_and_warns_until_a_baa_is_confirmed(bare_mailer):
    result = bare_mailer("init", "--provider", "gmail", "--hipaa", "--no-input")
    assert result.exit_code == 0, result.stderr
    data = tomllib.loads((bare_mailer.home / "mailer.toml").read_text(encoding="utf-8"))
    assert data["practice"]["hipaa"] is True and data["smtp"]["baa"] is False
    assert "Google Workspace offers one" in result.stderr and "personal Gmail does not" in result.stderr


def test_init_on_a_terminal_asks_about_hipaa_and_the_baa(bare_mailer):
    runner = CliRunner()
    obj = AppState(home=str(bare_mailer.home), clock=bare_mailer.clock, output=Output(force_terminal=True))
    answers = "\n".join([
        "Closter Acupuncture", "1 Example Street, Closter, NJ 07624", "", "", "", "", "news@closter-acupuncture.example",
        "y",  # Is this a HIPAA-covered practice?
        "y",  # Have you signed a BAA with Google Workspace?
    ]) + "\n"
    result = runner.invoke(app, ["init", "--provider", "workspace"], input=answers, obj=obj)
    assert result.exit_code == 0, result.output
    assert "Is this a HIPAA-covered practice?" in result.output
    assert "business associate agreement (BAA) with personal Gmail" not in result.output
    config = load_config(bare_mailer.home / "mailer.toml")
    assert config.practice.hipaa and config.smtp.baa
    assert "warning" not in result.stderr


def test_init_on_a_terminal_not_covered(bare_mailer):
    runner = CliRunner()
    obj = AppState(home=str(bare_mailer.home), clock=bare_mailer.clock, output=Output(force_terminal=True))
    answers = "\n".join(["Closter Acupuncture", "1 Example Street, Closter, NJ 07624", "", "", "", "", "", "n"]) + "\n"
    result = runner.invoke(app, ["init"], input=answers, obj=obj)
    assert result.exit_code == 0, result.output
    config = load_config(bare_mailer.home / "mailer.toml")
    assert not config.practice.hipaa and not config.smtp.baa


def test_init_does_not_change_an_existing_file(mailer):
    before = (mailer.home / "mailer.toml").read_text(encoding="utf-8")
    result = mailer("init", "--provider", "ses")
    assert result.exit_code == 0
    assert (mailer.home / "mailer.toml").read_text(encoding="utf-8") == before
    assert "fill a new mailer.toml only" in result.stderr
