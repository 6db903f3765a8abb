"""Can we send? The settings every message and every real send need, decided in one place.

`sending_problems` serves `mailer check`, `mailer send`, `mailer run-due` and
`mailer cron --check`: each problem names the mailer.toml key it is about.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import Config
from .hipaa import condition_warnings, hipaa_problems
from .postal import looks_like_postal_address
from .providers import free_mail_problem, is_loopback

if TYPE_CHECKING:
    from .clock import Clock
    from .config import Workspace


@dataclass(frozen=True)
class Problem:
    """One thing in the settings that stops (error) or weakens (warning) a send."""

    level: str  # "error" | "warning"
    key: str  # the mailer.toml key, e.g. "[smtp] host"
    message: str  # one sentence
    hint: str = ""

    @property
    def is_error(self) -> bool:
        return self.level == "error"

    def __str__(self) -> str:
        return self.message


def _error(key: str, message: str, hint: str = "") -> Problem:
    return Problem("error", key, message, hint)


def _warning(key: str, message: str, hint: str = "") -> Problem:
    return Problem("warning", key, message, hint)


def message_problems(config: Config) -> list[Problem]:
    """What every message needs, dry-run or not: who it is from, and the law's footer."""
    p, s, u = config.practice, config.sender, config.unsubscribe
    problems: list[Problem] = []
    if not p.name.strip():
        problems.append(_error("[practice] name", "[practice] name in mailer.toml is empty; the header and footer need it."))
    if not p.address.strip():
        problems.append(_error(
            "[practice] address",
            "[practice] address in mailer.toml is empty; the law (CAN-SPAM) requires a postal address in every message.",
        ))
    elif not looks_like_postal_address(p.address):
        problems.append(_error(
            "[practice] address",
            f"[practice] address in mailer.toml is {p.address!r}, which does not look like a postal address; the law "
            "(CAN-SPAM) requires one in every message: a street and number or a PO box, and a ZIP or postcode, "
            'e.g. "1 Example Street, Closter, NJ 07624".',
        ))
    if not p.phone.strip():
        problems.append(_warning("[practice] phone", "[practice] phone is empty, so the message offers no number to call."))
    for key in ("website", "booking_url", "logo_url"):
        value = getattr(p, key)
        if value and not value.startswith("https://"):
            web_like = value.startswith("http://") or ":" not in value.split("/", 1)[0]
            problems.append(_error(
                f"[practice] {key}",
                f"[practice] {key} in mailer.toml is {value!r}; every link in a message must start with https://.",
                f'Write it as {"https://" + value.split("://", 1)[-1]!r} in mailer.toml, after checking that it works.'
                if web_like else "Give the https:// address of a web page there.",
            ))
    if not s.from_email or "@" not in s.from_email:
        problems.append(_error(
            "[sender] from_email",
            "[sender] from_email in mailer.toml is not set, so the message has no From address.",
            'Set it, e.g. from_email = "news@your-practice.com".',
        ))
    if u.url and not u.url.startswith("https://"):
        problems.append(_error("[unsubscribe] url", f"[unsubscribe] url in mailer.toml must start with https://, not {u.url!r}."))
    free_mail = free_mail_problem(s.from_email, config.smtp.host) if s.from_email else None
    if free_mail:
        problems.append(_error("[sender] from_email", free_mail))
    problems += [_error("[smtp] baa", p) for p in hipaa_problems(config) if p != free_mail]
    return problems


def audience_problems(config: Config, subject: str, list_name: str | None, tags: tuple[str, ...] | list[str]) -> list[Problem]:
    """Warnings about how a campaign is aimed: for a HIPAA practice, a condition in a list, tag or subject."""
    return [_warning("[practice] condition_words", w) for w in condition_warnings(config, subject, list_name, tags)]


def transport_problems(config: Config, environ: Mapping[str, str]) -> list[Problem]:
    """What a real send over SMTP needs beyond the message: a server and, with a username, its password."""
    c = config.smtp
    problems: list[Problem] = []
    if not c.host:
        problems.append(_error("[smtp] host", "No SMTP server is set: fill in [smtp] host in mailer.toml."))
    if c.username and c.security == "none" and c.host and not is_loopback(c.host):
        problems.append(_error(
            "[smtp] security",
            f"[smtp] security is \"none\" with a username, so the password would cross the network to {c.host} "
            "unencrypted; mailer allows that only for a server on this machine.",
            'Use security = "starttls" (port 587) or "ssl" (port 465).',
        ))
    if c.username and not environ.get(c.password_env):
        problems.append(_error(
            "[smtp] password_env",
            f"[smtp] username is set but the environment variable {c.password_env} holding the password is empty.",
            f"export {c.password_env}='...' before running mailer (never put it in mailer.toml).",
        ))
    return problems


def sending_problems(config: Config, environ: Mapping[str, str], *, dry_run: bool = False) -> list[Problem]:
    """Every settings problem of a send (a dry-run needs no SMTP server or password)."""
    problems = message_problems(config)
    if not dry_run:
        problems += transport_problems(config, environ)
    return problems


# Gmail's and Yahoo's published ceilings for the spam-complaint rate of bulk senders.
COMPLAINT_WARN = 0.001
COMPLAINT_STOP = 0.003


def complaint_problems(complaints: int, sent: int, *, force: bool = False) -> list[Problem]:
    """The spam-complaint rate of the last 30 days: a warning above 0.1%, a stop above 0.3% (unless forced)."""
    if not sent or not complaints:
        return []
    rate = complaints / sent
    said = f"{complaints} spam complaint(s) for {sent} messages in the last 30 days ({rate:.2%})"
    if rate > COMPLAINT_STOP:
        return [Problem(
            "warning" if force else "error", "complaint rate",
            f"{said} is above the 0.3% Gmail and Yahoo allow; a new campaign now risks the whole account's mail.",
            "Look at who complained (`mailer report ID`) and why; `--force` sends anyway.",
        )]
    if rate > COMPLAINT_WARN:
        return [_warning("complaint rate", f"{said} is above 0.1%, where Gmail and Yahoo start to filter.")]
    return []


def python_problems() -> list[Problem]:
    """This Python's `email` package lacks the fix for CVE-2024-6923 (header injection when it
    writes headers; fixed in 3.11.10 and 3.12.5). mailer writes every outgoing header with its
    own code (mailer.render.mime) and never with that package, so it is a warning, not a stop."""
    import email.errors
    import platform

    if hasattr(email.errors, "HeaderWriteError"):
        return []
    return [_warning(
        "python",
        f"This Python ({platform.python_version()}) lacks the fix for CVE-2024-6923 in its email package; mailer "
        "does not use the affected code to write mail, but upgrade Python (3.11.10+, 3.12.5+) when you can.",
    )]


def private_file_problems(ws: Workspace) -> list[Problem]:
    """Files holding the list, the key or the password that others on this machine can read."""
    problems = []
    for path, what in ((ws.db_path, "the list"), (ws.secret_path, "the key"), (ws.home / "cron.env", "the password")):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            problems.append(_warning(
                str(path.name),
                f"{path} holds {what} and others on this machine can read it (mode {mode:04o}).",
                f"chmod 600 {path}",
            ))
    return problems


def unattended_problems(ws: Workspace, secret: bytes, environ: Mapping[str, str], clock: Clock,
                        *, resolver: Any = None, dns: bool = True) -> list[Problem]:
    """Everything an unattended run (cron) needs, checked now: `mailer cron --check`.

    The settings and templates of a real send, the inbox login when [inbox] is set, the
    From domain's SPF/DKIM/DMARC unless the relay is on this machine (errors stop; no DNS
    answer is only a warning), and the
    permissions of the files that hold the list, the key and the password.
    """
    from .campaigns import template_problems
    from .errors import MailerError

    problems = sending_problems(ws.config, environ)
    said = {p.message for p in problems}
    problems += [_error("templates", t) for t in template_problems(ws, secret, clock) if not any(t.endswith(m) for m in said)]
    if ws.config.inbox.host:
        from .inbox.sources import imap_source

        try:
            source = imap_source(ws, environ)
            source.open()
            source.close()
        except MailerError as exc:
            problems.append(_error("[inbox]", exc.message, exc.hint or ""))
    # A relay on this machine (a test server, a local bridge) passes mail on to servers we
    # cannot see, so there is nothing to judge SPF against.
    if dns and not any(p.is_error for p in problems) and not is_loopback(ws.config.smtp.host):
        from .dnscheck import check_sender_dns, make_resolver

        for f in check_sender_dns(ws.config, resolver or make_resolver(timeout=2.0), ws.home):
            if f.level in ("error", "warning"):
                hint = f"Publish at {f.name}: {f.publish}" if f.publish else ""
                problems.append(Problem(f.level, f.record, f"{f.record}: {f.verdict}", hint))
    return problems + private_file_problems(ws) + python_problems()
