"""One exception hierarchy for the core; the CLI turns it into a message and an exit code."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The documented exit codes (README, "Exit codes")."""

    OK = 0
    PARTIAL = 1  # done, but some recipients or rows failed
    USAGE = 2  # bad usage or bad input; nothing changed
    SMTP = 3  # cannot reach or log in to the SMTP server
    LOCKED = 4  # another run holds the lock
    INTERNAL = 70  # a bug: an exception nobody expected (EX_SOFTWARE)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
    TERMINATED = 143  # SIGTERM (128 + SIGTERM)


class MailerError(Exception):
    """An error the user can act on: one sentence, an optional hint, an exit code."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(MailerError):
    """A file, option or value the user gave cannot be used."""


class ConfigError(MailerError):
    """mailer.toml or the environment is incomplete or wrong."""


class StoreError(MailerError):
    """The database cannot be opened or is not one this version understands."""


class DiskFull(StoreError):
    """The disk is full (or failing), so a write could not be finished."""


class Busy(StoreError):
    """Another process kept the database busy for longer than we wait."""

    exit_code = ExitCode.LOCKED


class Corrupt(StoreError):
    """The database file is damaged or is not a mailer database."""


class NotFound(MailerError):
    """A subscriber or campaign that does not exist."""


class TemplateError(MailerError):
    """A template or content file cannot be rendered."""


class SmtpError(MailerError):
    """The SMTP server cannot be reached or refuses our login."""

    exit_code = ExitCode.SMTP


class LockedError(MailerError):
    """Another process holds the workspace lock."""

    exit_code = ExitCode.LOCKED


class MailboxError(MailerError):
    """The mailbox (IMAP server) cannot be reached, refuses our login, or cannot do what was asked."""

    exit_code = ExitCode.SMTP  # "cannot reach or log in to the mail server"
class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt by the CLI while a send runs: handled as Ctrl-C is."""


class Interrupted(MailerError):
    """A person (Ctrl-C) or the system (SIGTERM) stopped a send; the campaign is paused."""

    def __init__(self, message: str, hint: str | None = None, *, terminated: bool = False):
        super().__init__(message, hint)
        self.exit_code = ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED
