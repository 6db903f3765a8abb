"""Workspace discovery (--home, MAILER_HOME, user data dir), mailer.toml and secrets."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError
from .hipaa import DEFAULT_CONDITION_WORDS
from .text import CONTROL

CONFIG_NAME = "mailer.toml"
DB_NAME = "mailer.db"
SECRET_NAME = "secret.key"
HOME_ENV = "MAILER_HOME"


@dataclass(frozen=True)
class PracticeConfig:
    name: str = ""
    address: str = ""
    phone: str = ""
    website: str = ""
    booking_url: str = ""
    logo_url: str = ""
    hipaa: bool = False  # a HIPAA covered entity: the relay needs a BAA ([smtp] baa)
    condition_words: tuple[str, ...] = DEFAULT_CONDITION_WORDS


@dataclass(frozen=True)
class SenderConfig:
    from_name: str = ""
    from_email: str = ""
    reply_to: str = ""


@dataclass(frozen=True)
class SmtpConfig:
    host: str = ""
    port: int = 587
    security: str = "starttls"
    username: str = ""
    password_env: str = "MAILER_SMTP_PASSWORD"
    timeout: float = 30.0  # float defaults: _coerce casts a value to its default's type
    envelope_from: str = ""
    baa: bool = False  # a business associate agreement covers this relay
    pipelining: bool = True  # with a server offering PIPELINING: the next message's envelope travels with this one's data


@dataclass(frozen=True)
class SendingConfig:
    batch_size: int = 50
    pause: float = 10.0
    rate: float = 0.0
    per_day: int = 0
    timezone: str = ""
    max_lateness: float = 12.0  # hours
    connections: int = 1
    give_up_after: float = 4.0  # days a temporarily refused message is tried again before it counts as failed


@dataclass(frozen=True)
class UnsubscribeConfig:
    mailto: str = ""
    url: str = ""


@dataclass(frozen=True)
class DkimConfig:
    selector: str = ""
    private_key_file: str = ""  # PEM, mode 0600; relative to the workspace


@dataclass(frozen=True)
class InboxConfig:
    host: str = ""
    port: int = 993
    security: str = "ssl"
    username: str = ""
    password_env: str = ""  # "" = the SMTP one ([smtp] password_env)
    folder: str = "INBOX"
    before_send: bool = False


@dataclass(frozen=True)
class Config:
    practice: PracticeConfig = field(default_factory=PracticeConfig)
    sender: SenderConfig = field(default_factory=SenderConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    sending: SendingConfig = field(default_factory=SendingConfig)
    unsubscribe: UnsubscribeConfig = field(default_factory=UnsubscribeConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    inbox: InboxConfig = field(default_factory=InboxConfig)


_SECTION_TYPES = {
    "practice": PracticeConfig,
    "sender": SenderConfig,
    "smtp": SmtpConfig,
    "sending": SendingConfig,
    "unsubscribe": UnsubscribeConfig,
    "dkim": DkimConfig,
    "inbox": InboxConfig,
}


def _toml(value: Any) -> str:
    """A value as it is written in mailer.toml (true, "10", 1.5, [...]), for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (str, int, float)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "a table"
    return str(value)


def _coerce(section: str, key: str, value: Any, default: Any, path: Path) -> Any:
    where = f"{path}: [{section}] {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false (without quotes), not {_toml(value)}.")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of quoted strings, like [\"pain\", \"migraine\"].")
        if any(CONTROL.search(v) for v in value):
            raise ConfigError(f"{where} must hold one-line strings, without line breaks or control characters.")
        return tuple(v.strip() for v in value if v.strip())
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number (without quotes), not {_toml(value)}.")
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a number of seconds or messages, not {_toml(value)}.")
        if value < 0:
            raise ConfigError(f"{where} must not be negative.")
        return type(default)(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a quoted string, not {_toml(value)}.")
    if CONTROL.search(value):
        # Settings end up in mail headers: a line break there would add headers of its own.
        raise ConfigError(f"{where} must be one line of text, without line breaks or control characters.")
    return value.strip()


def parse_config(data: Mapping[str, Any], path: Path) -> Config:
    """Turn the parsed TOML document into a Config, refusing unknown keys and wrong types."""
    sections: dict[str, Any] = {}
    for name, table in data.items():
        cls = _SECTION_TYPES.get(name)
        if cls is None:
            raise ConfigError(
                f"{path}: unknown section [{name}]; known sections are "
                + ", ".join(f"[{s}]" for s in _SECTION_TYPES)
                + "."
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}] must be a table of settings.")
        defaults = cls()
        known = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(
                    f"{path}: unknown key '{key}' in [{name}]; known keys are {', '.join(sorted(known))}."
                )
            values[key] = _coerce(name, key, value, getattr(defaults, key), path)
        sections[name] = cls(**values)
    config = Config(**sections)
    if config.smtp.security not in ("ssl", "starttls", "none"):
        raise ConfigError(
            f"{path}: [smtp] security must be \"ssl\", \"starttls\" or \"none\", not {config.smtp.security!r}."
        )
    for section in ("smtp", "inbox"):
        port = getattr(config, section).port
        if not 1 <= port <= 65535:
            raise ConfigError(f"{path}: [{section}] port must be a port number from 1 to 65535, not {port}.")
    if config.smtp.timeout <= 0:  # smtplib cannot wait 0 seconds: it would fail mid-send
        raise ConfigError(f"{path}: [smtp] timeout must be more than 0 seconds, e.g. 30.")
    if config.sending.timezone:
        try:
            ZoneInfo(config.sending.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"{path}: [sending] timezone {json.dumps(config.sending.timezone)} is not a known time zone; "
                "use a name like \"America/New_York\" (or \"\" for this machine's)."
            ) from None
    if bool(config.dkim.selector) != bool(config.dkim.private_key_file):
        raise ConfigError(f"{path}: [dkim] selector and private_key_file go together; set both, or neither.")
    _inbox_checks(config, path)
    return _with_checked_addresses(config, path)


_ADDRESS_SETTINGS = (("sender", "from_email"), ("smtp", "envelope_from"), ("sender", "reply_to"), ("unsubscribe", "mailto"))


def setting_address(value: str, where: str) -> str:
    """An address from mailer.toml as it may travel in SMTP and headers: IDN domains as A-labels.

    Our own addresses go out in MAIL FROM and in From/Reply-To/List-Unsubscribe, where a
    relay without SMTPUTF8 cannot carry a non-ASCII local part: refused, naming the key.
    """
    from .validate import InvalidValue, ascii_domain, normalise_email

    raw = value[7:] if value[:7].lower() == "mailto:" else value
    if "?" in raw or "<" in raw or "," in raw:
        raise ConfigError(f"{where} must be a plain address like news@example.com, not {value!r}.")
    try:
        address = normalise_email(raw)[0]
        local, _, domain = address.rpartition("@")
        domain = ascii_domain(domain)
    except InvalidValue as exc:
        raise ConfigError(f"{where} is not a usable address ({value!r}): {exc}") from None
    if not local.isascii():
        raise ConfigError(
            f"{where} has non-ASCII characters before the @ ({value!r}), which most relays cannot carry "
            "(they would need SMTPUTF8); use an ASCII address for the practice's own addresses."
        )
    return f"{local}@{domain}"


def setting_url(value: str, where: str) -> str:
    """An https link from mailer.toml: one line, no spaces or quotes, the host as an A-label."""
    from urllib.parse import urlsplit

    from .validate import InvalidValue, ascii_domain

    if not value.startswith("https://"):
        raise ConfigError(f"{where} must start with https:// (a link in every message), not {value!r}.")
    if any(c in value for c in ' <>"\\'):
        raise ConfigError(f"{where} contains spaces or characters a link cannot hold: {value!r}.")
    parts = urlsplit(value)
    host = parts.hostname or ""
    if not host:
        raise ConfigError(f"{where} has no host name: {value!r}.")
    try:
        ascii_host = ascii_domain(host)
    except InvalidValue as exc:
        raise ConfigError(f"{where} has a host name that cannot be used ({exc}).") from None
    return value if ascii_host == host else value.replace(host, ascii_host, 1)


def _with_checked_addresses(config: Config, path: Path) -> Config:
    """Every address setting checked (and IDN domains made ASCII) as the file is read."""
    for section, key in _ADDRESS_SETTINGS:
        table = getattr(config, section)
        value = getattr(table, key)
        if value:
            checked = setting_address(value, f"{path}: [{section}] {key}")
            config = dataclasses.replace(config, **{section: dataclasses.replace(table, **{key: checked})})
    if config.unsubscribe.url:
        url = setting_url(config.unsubscribe.url, f"{path}: [unsubscribe] url")
        config = dataclasses.replace(config, unsubscribe=dataclasses.replace(config.unsubscribe, url=url))
    return config


def _inbox_checks(config: Config, path: Path) -> None:
    """[inbox]: IMAP always over TLS, and a folder to read."""
    if config.inbox.security not in ("ssl", "starttls"):
        raise ConfigError(
            f"{path}: [inbox] security must be \"ssl\" or \"starttls\", not {config.inbox.security!r}."
        )
    if not config.inbox.folder:
        raise ConfigError(f"{path}: [inbox] folder must name a folder, e.g. \"INBOX\".")


def load_config(path: Path) -> Config:
    """Read mailer.toml; a missing file means all defaults."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}.") from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}.", hint="Fix the line named, or compare with a fresh `mailer init`.") from None
    return parse_config(data, path)


def default_home() -> Path:
    """The platform's user data directory for mailer."""
    import platformdirs

    return Path(platformdirs.user_data_dir("mailer", appauthor=False))


def resolve_home(option: str | os.PathLike | None, environ: Mapping[str, str] | None = None) -> Path:
    """--home, else $MAILER_HOME, else the platform's user data directory."""
    environ = os.environ if environ is None else environ
    if option:
        return Path(option).expanduser().absolute()
    if environ.get(HOME_ENV):
        return Path(environ[HOME_ENV]).expanduser().absolute()
    return default_home()


@dataclass(frozen=True)
class Workspace:
    """One directory holding one mailing list's world."""

    home: Path
    config: Config

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_NAME

    @property
    def db_path(self) -> Path:
        return self.home / DB_NAME

    @property
    def secret_path(self) -> Path:
        return self.home / SECRET_NAME

    @property
    def templates_dir(self) -> Path:
        return self.home / "templates"

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def lock_path(self) -> Path:
        return self.home / "mailer.lock"

    def inbox_password(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The IMAP password: [inbox] password_env, else the SMTP one's variable."""
        environ = os.environ if environ is None else environ
        return environ.get(self.config.inbox.password_env or self.config.smtp.password_env) or None

    def smtp_password(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The SMTP password from the environment variable named in [smtp] password_env."""
        environ = os.environ if environ is None else environ
        return environ.get(self.config.smtp.password_env) or None


def open_workspace(option: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Workspace:
    """Find the workspace and read its configuration (defaults when there is no mailer.toml)."""
    home = resolve_home(option, environ)
    if home.exists() and not home.is_dir():
        raise ConfigError(f"The workspace {home} is a file, not a directory.")
    return Workspace(home=home, config=load_config(home / CONFIG_NAME))


def _q(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value, ensure_ascii=False)


def _toml_list(items: Sequence[str]) -> str:
    """A TOML array of strings, wrapped at about 88 columns."""
    if not items:
        return "[]"
    lines, line = [], "   "
    for item in items:
        piece = f" {_q(item)},"
        if len(line) + len(piece) > 88:
            lines.append(line)
            line = "   "
        line += piece
    lines.append(line)
    return "[\n" + "\n".join(lines) + "\n]"


CONFIG_TEMPLATE = """\
# mailer.toml: settings for this mailing list's workspace.
# Every key is optional; a missing key takes the default shown in its comment.
# Secrets never go here: the SMTP password is read from the environment
# variable named by [smtp] password_env.

[practice]
# Shown in the header and footer of every message. The postal address is
# required by law (CAN-SPAM) before anything can be sent.
name = {practice_name}
address = {practice_address}
phone = {practice_phone}
website = {practice_website}
booking_url = {practice_booking_url}   # the "Book now" button of specials
logo_url = {practice_logo_url}         # https URL of a logo image, or ""
hipaa = {practice_hipaa}               # true for a HIPAA covered entity: the relay must be under a BAA
# Audiences (tags, list names) and subjects naming these are warned about when hipaa = true:
condition_words = {practice_condition_words}

[sender]
from_name = {sender_from_name}
from_email = {sender_from_email}
reply_to = {sender_reply_to}           # "" = replies go to from_email

[smtp]
host = {smtp_host}
port = {smtp_port}                      # 587 for starttls, 465 for ssl
security = {smtp_security}              # ssl | starttls | none
username = {smtp_username}
password_env = {smtp_password_env}      # name of the environment variable holding the password
timeout = {smtp_timeout}                # seconds
envelope_from = {smtp_envelope_from}    # bounce address for MAIL FROM; "" = from_email
baa = {smtp_baa}                      # true once a business associate agreement covers this relay
pipelining = {smtp_pipelining}          # send the next message's envelope with this one's data when the server allows

[sending]
batch_size = {sending_batch_size}       # messages per connection before a pause
pause = {sending_pause}                 # seconds between batches
rate = {sending_rate}                   # messages per minute; 0 = unlimited
per_day = {sending_per_day}             # daily cap (`mailer init --provider` sets one); 0 = no cap
timezone = {sending_timezone}           # e.g. "America/New_York"; "" = this machine's
max_lateness = {sending_max_lateness}   # hours; a scheduled campaign later than this waits for a human
connections = {sending_connections}     # SMTP connections at once; most relays want 1
give_up_after = {sending_give_up_after}       # days a temporarily refused message is tried again, then failed

[unsubscribe]
mailto = {unsubscribe_mailto}           # always offered; "" = from_email
url = {unsubscribe_url}                 # https one-click endpoint, when you have one

[dkim]
# Only if you run your own relay: mailer signs each message itself. Your provider's
# relay signs for you (turn DKIM on in its console) and these stay "".
selector = {dkim_selector}              # publish the key at <selector>._domainkey.<your domain>
private_key_file = {dkim_private_key_file}   # PEM file, chmod 600; never stored in the database

[inbox]
# Where replies, bounces and unsubscribe mails arrive (`mailer inbox process`).
host = {inbox_host}                     # IMAP server; or use --mbox FILE / --maildir DIR
port = {inbox_port}                     # 993 for ssl, 143 for starttls
security = {inbox_security}             # ssl | starttls (the certificate is always verified)
username = {inbox_username}
password_env = {inbox_password_env}     # "" = the same variable as [smtp] password_env
folder = {inbox_folder}
before_send = {inbox_before_send}       # run-due processes the inbox before sending
"""


def render_config(config: Config) -> str:
    """A commented mailer.toml holding the values of config."""
    values = {}
    for section in _SECTION_TYPES:
        for key, value in dataclasses.asdict(getattr(config, section)).items():
            if isinstance(value, bool):
                values[f"{section}_{key}"] = "true" if value else "false"
            elif isinstance(value, str):
                values[f"{section}_{key}"] = _q(value)
            elif isinstance(value, (tuple, list)):
                values[f"{section}_{key}"] = _toml_list(value)
            elif isinstance(value, float) and value.is_integer():
                values[f"{section}_{key}"] = str(int(value))
            else:
                values[f"{section}_{key}"] = str(value)
    return CONFIG_TEMPLATE.format(**values)


EXAMPLE_CONFIG = Config(
    practice=PracticeConfig(
        name="Closter Acupuncture",
        address="1 Example Street, Closter, NJ 07624",
        phone="(201) 297-7703",
        website="https://closter-acupuncture.example",
        booking_url="https://closter-acupuncture.example/book",
    ),
    sender=SenderConfig(from_name="John Kim, Closter Acupuncture", from_email="news@closter-acupuncture.example"),
    smtp=SmtpConfig(host="127.0.0.1", port=8025, security="none"),
    sending=SendingConfig(timezone="America/New_York"),
    unsubscribe=UnsubscribeConfig(mailto="unsubscribe@closter-acupuncture.example"),
)
