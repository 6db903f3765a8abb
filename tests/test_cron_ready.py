"""`mailer cron`: a crontab line that works in any folder, and a --check that finds what cron would trip on."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Mailer
from tests.imap_server import CA_FILE, ImapServer
from tests.test_send import set_config

SES = "email-smtp.us-east-1.amazonaws.com"
DOMAIN = "closter-acupuncture.example"


def test_the_crontab_line_runs_in_a_folder_with_spaces_quotes_and_dollars(tmp_path, clock):
    odd = tmp_path / "Dr. Kim's list $(touch PWNED); `touch PWNED2` 100%"
    m = Mailer(odd, clock)
    assert m("init", "--example").exit_code == 0
    (odd / "cron.env").write_text("export MAILER_SMTP_PASSWORD='x'\n")
    line = [x for x in m("cron").stdout.splitlines() if not x.startswith("#")][0]
    command = line.split(" ", 5)[5].replace("\\%", "%")  # what cron hands to sh, after the five time fields
    env = {k: v for k, v in os.environ.items() if k != "MAILER_HOME"}
    done = subprocess.run(["sh", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.rglob("PWNED*"))  # nothing in the path ran as a command
    log = (odd / "logs" / "mailer.log").read_text()
    assert '"command": "run-due"' in log  # the run really happened in that workspace


def dns_ready(dns_server) -> None:
    dns_server.txt[DOMAIN] = "v=spf1 include:amazonses.com ~all"
    dns_server.txt["amazonses.com"] = "v=spf1 ip4:199.255.192.0/22 ip4:199.127.232.0/22 ~all"
    dns_server.txt[f"_dmarc.{DOMAIN}"] = f"v=DMARC1; p=none; rua=mailto:dmarc@{DOMAIN}"


def test_check_looks_up_the_senders_domain(mailer, dns_server, monkeypatch):
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", "x")
    set_config(mailer.home, "smtp", host=SES, security="starttls", port=587, username="AKIAEXAMPLE")
    dns_ready(dns_server)
    result = mailer("cron", "--check", "--nameserver", dns_server.address)
    assert result.exit_code == 0, result.stderr
    assert any(q.startswith(f"_dmarc.{DOMAIN}") for q in dns_server.queries), dns_server.queries
    del dns_server.txt[DOMAIN]
    result = mailer("cron", "--check", "--nameserver", dns_server.address)
    assert result.exit_code == 2
    assert "SPF" in result.stderr and "include:amazonses.com" in result.stderr  # what to publish


def test_check_logs_in_to_the_inbox(mailer, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(CA_FILE))
    with ImapServer.start() as server:
        set_config(mailer.home, "inbox", host=server.host, port=server.port, username=server.user,
                   password_env="MAILER_IMAP_PASSWORD")
        monkeypatch.setenv("MAILER_IMAP_PASSWORD", "wrong")
        result = mailer("cron", "--check")
        assert result.exit_code == 2 and "refused the login" in result.stderr and "wrong" not in result.stderr
        monkeypatch.setenv("MAILER_IMAP_PASSWORD", server.password)
        assert mailer("cron", "--check").exit_code == 0


@pytest.mark.parametrize("name", ["mailer.db", "secret.key", "cron.env"])
def test_check_warns_about_files_others_can_read(mailer, name):
    path = mailer.home / name
    if not path.exists():
        path.write_text("export MAILER_SMTP_PASSWORD='x'\n")
    path.chmod(0o644)
    result = mailer("cron", "--check")
    assert result.exit_code == 0, result.stderr  # ready, with a warning
    assert re.search(rf"warning: .*{re.escape(name)}.*others on this machine can read it", result.stderr.replace("\n", " "))
    assert f"chmod 600 {path}" in result.stderr
    path.chmod(0o600)
    assert "others on this machine" not in mailer("cron", "--check").stderr


def test_status_warns_about_files_others_can_read(mailer):
    (mailer.home / "secret.key").chmod(0o640)
    result = mailer("status")
    assert "others on this machine can read it" in result.stderr and "chmod 600" in result.stderr
    assert stat.S_IMODE((mailer.home / "secret.key").stat().st_mode) == 0o640  # said, not changed


def test_outbox_and_previews_are_private(mailer, tmp_path):
    assert mailer("import", Path(__file__).parent.parent / "examples" / "patients.csv").exit_code in (0, 1)
    specials = Path(__file__).parent.parent / "examples" / "december-specials.md"
    assert mailer("send", specials, "--dry-run").exit_code == 0
    folder = mailer.home / "outbox" / "december-specials"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}
    out = tmp_path / "preview.eml"
    assert mailer("preview", specials, "--format", "eml", "-o", out).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
