"""Provider presets: one table for init, the DNS check, the HIPAA check and the README."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailer.config import Config
from mailer.providers import (
    BY_NAME,
    FREE_MAIL_DOMAINS,
    PROVIDERS,
    apply_preset,
    free_mail_problem,
    markdown_table,
    provider_for_host,
    providers_for_host,
)

from .conftest import REPO


def test_the_readme_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("| provider | host |")
    end = readme.index("\n\n", start) + 1
    assert readme[start:end] == markdown_table(), "README's provider table drifted: paste `python -m mailer.providers --markdown`"


def test_the_generator_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "mailer.providers", "--markdown"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == markdown_table()
    wrong = subprocess.run([sys.executable, "-m", "mailer.providers"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "usage" in wrong.stderr


def test_the_eight_presets_the_issue_names():
    assert [p.name for p in PROVIDERS] == ["gmail", "workspace", "outlook", "m365", "ses", "mailgun", "fastmail", "postmark"]


@pytest.mark.parametrize("p", PROVIDERS, ids=lambda p: p.name)
def test_each_preset_is_usable_as_it_stands(p):
    # The port is the one its security needs: a mismatch hangs at connect.
    assert (p.security, p.port) in (("ssl", 465), ("starttls", 587))
    assert p.spf_include and " " not in p.spf_include
    assert p.rate > 0 and p.per_day >= 0
    assert p.matches_host(p.host), "a preset must recognise its own host"
    assert provider_for_host(p.host).spf_include == p.spf_include
    assert p.own_domains <= FREE_MAIL_DOMAINS


def test_which_providers_offer_a_baa():
    assert {p.name for p in PROVIDERS if p.baa} == {"workspace", "m365", "ses", "mailgun"}


def test_published_limits_are_kept_below():
    assert BY_NAME["gmail"].per_day < 500  # Gmail: 500 a day
    assert BY_NAME["workspace"].per_day < 500  # Workspace trial / unpaid-yet accounts: 500
    assert BY_NAME["m365"].rate < 30 and BY_NAME["m365"].per_day < 10_000  # Exchange Online: 30/min, 10,000/day
    assert BY_NAME["ses"].per_day <= 200 and BY_NAME["ses"].rate <= 60  # SES sandbox: 200/day, 1/s


@pytest.mark.parametrize(
    "host, name",
    [
        ("smtp.gmail.com", "gmail"),
        ("SMTP.Gmail.com.", "gmail"),
        ("smtp-relay.gmail.com", "workspace"),
        ("smtp.office365.com", "m365"),
        ("smtp-mail.outlook.com", "outlook"),
        ("email-smtp.eu-west-1.amazonaws.com", "ses"),
        ("smtp.eu.mailgun.org", "mailgun"),
        ("smtp.fastmail.com", "fastmail"),
        ("smtp.postmarkapp.com", "postmark"),
        ("smtp.gmail.com.attacker.example", None),
        ("notsmtp.gmail.com", None),
        ("email-smtp.amazonaws.com.evil.example", None),
        ("mail.closter-acupuncture.example", None),
        ("", None),
    ],
)
def test_provider_for_host(host, name):
    found = provider_for_host(host)
    assert (found.name if found else None) == name


def test_gmail_and_workspace_share_their_servers():
    assert [p.name for p in providers_for_host("smtp.gmail.com")] == ["gmail", "workspace"]


def test_a_gmail_from_through_ses_is_refused_with_the_fix():
    problem = free_mail_problem("Jane Kim <jane.kim@gmail.com>", "email-smtp.us-east-1.amazonaws.com")
    assert problem is not None
    assert "gmail.com" in problem and "5.7.26" in problem and "DMARC" in problem
    assert "address at your own domain" in problem and "smtp.gmail.com" in problem


@pytest.mark.parametrize(
    "from_email, host",
    [
        ("jane@gmail.com", "smtp.gmail.com"),
        ("jane@googlemail.com", "smtp-relay.gmail.com"),
        ("jane@outlook.com", "smtp-mail.outlook.com"),
        ("jane@hotmail.com", "smtp.office365.com"),  # Microsoft's servers, Microsoft's domain
        ("jane@yahoo.com", "smtp.mail.yahoo.com"),
        ("jane@icloud.com", "smtp.mail.me.com"),
        ("jane@fastmail.com", "smtp.fastmail.com"),
        ("news@closter-acupuncture.example", "email-smtp.us-east-1.amazonaws.com"),
        ("jane@proton.me", "127.0.0.1"),  # a local bridge: its onward route is not visible
        ("jane@gmail.com", "localhost"),
        ("jane@gmail.com", ""),
    ],
)
def test_free_mail_through_its_own_relay_is_fine(from_email, host):
    assert free_mail_problem(from_email, host) is None


@pytest.mark.parametrize(
    "from_email, host",
    [
        ("jane@yahoo.com", "smtp.gmail.com"),
        ("jane@hotmail.com", "smtp.gmail.com"),
        ("jane@gmail.com", "smtp.office365.com"),
        ("jane@aol.com", "smtp.mailgun.org"),
        ("jane@GMAIL.com", "smtp.postmarkapp.com"),
        ("jane@icloud.com", "mail.closter-acupuncture.example"),
    ],
)
def test_free_mail_through_another_relay_is_a_problem(from_email, host):
    assert "own domain" in free_mail_problem(from_email, host)


def test_apply_preset_fills_smtp_and_the_limits_only():
    config = apply_preset(Config(), "fastmail")
    assert (config.smtp.host, config.smtp.port, config.smtp.security) == ("smtp.fastmail.com", 465, "ssl")
    assert (config.sending.rate, config.sending.per_day) == (20.0, 300)
    assert config.smtp.password_env == "MAILER_SMTP_PASSWORD" and config.sending.batch_size == 50
