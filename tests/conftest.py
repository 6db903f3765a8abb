"""Shared fixtures: a temporary workspace, a CLI runner bound to it, a fixed clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer.cli import AppState, app
from mailer.clock import FakeClock

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """No test ever touches the real user data directory or a real password."""
    monkeypatch.setenv("MAILER_HOME", str(tmp_path_factory.mktemp("default-home") / "ws"))
    monkeypatch.delenv("MAILER_SMTP_PASSWORD", raising=False)
    monkeypatch.delenv("MAILER_DEBUG", raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 25, 15, 0, 0, tzinfo=UTC))


class Mailer:
    """Runs `mailer ...` in-process against one workspace, like a user at a shell."""

    def __init__(self, home: Path, clock: FakeClock):
        self.home = home
        self.clock = clock
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, env: dict | None = None):
        obj = AppState(home=str(self.home), clock=self.clock)
        return self.runner.invoke(app, [str(a) for a in args], input=input, obj=obj, env=env)

    def json(self, *args: str):
        result = self(*args, "--json")
        assert result.exit_code in (0, 1), (result.exit_code, result.stdout, result.stderr)
        return json.loads(result.stdout)


@pytest.fixture
def mailer(tmp_path, clock) -> Mailer:
    """A CLI bound to a fresh, initialised workspace."""
    m = Mailer(tmp_path / "ws", clock)
    result = m("init", "--example")
    assert result.exit_code == 0, result.stderr
    return m


@pytest.fixture
def bare_mailer(tmp_path, clock) -> Mailer:
    """A CLI bound to a workspace directory that does not exist yet."""
    return Mailer(tmp_path / "fresh", clock)


@pytest.fixture
def smtp_server():
    """A real SMTP server on 127.0.0.1 for this test: a started `tests.smtp_server.SmtpServer`.

    Configure it (`tls`, `auth`, `respond(...)`, `drop_after`, ...) and point mailer's
    [smtp] at `smtp_server.host` / `smtp_server.port`. It stops after the test, and the
    test fails if the server itself raised (see `SmtpServer.errors`).
    """
    from tests.smtp_server import SmtpServer

    with SmtpServer.start() as server:
        yield server


@pytest.fixture
def dns_server():
    """A real DNS server on 127.0.0.1 for this test: a started `tests.dns_server.DnsServer`.

    Put TXT records in `dns_server.txt[name]`; point dnspython at it with
    `dns_server.resolver()`, or the CLI with `--nameserver dns_server.address`.
    """
    from tests.dns_server import DnsServer

    with DnsServer() as server:
        yield server
