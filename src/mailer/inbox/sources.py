"""Where returned mail is read from: an mbox file, a maildir, or an IMAP folder.

Every source yields one message at a time as an `Incoming` (where it is, its raw bytes),
so memory stays flat however big the mailbox. None of them changes the mailbox while
reading: the mbox and maildir are only read, IMAP is read with BODY.PEEK[] (nothing is
marked \\Seen) from a folder opened read-only. Only `handled()` moves a message, and only
when asked (`--archive DIR` for a maildir, `--move-to FOLDER` for IMAP). Nothing is ever
deleted or expunged.
"""

from __future__ import annotations

import email.utils
import imaplib
import os
import re
import socket
import ssl
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, Protocol

from ..config import InboxConfig
from ..errors import ConfigError, InputError, MailboxError

if TYPE_CHECKING:
    from ..config import Workspace


class Incoming(NamedTuple):
    """One message as it came out of its source."""

    key: str  # where it is: the mbox byte offset, the maildir file (new/NAME), the IMAP UID
    data: bytes  # the message, exactly as stored (mbox ">From " quoting undone)
    position: str | None = None  # IMAP "UIDVALIDITY:UID": where the next run may start after it


class Source(Protocol):
    """A mailbox to read returned mail from."""

    name: str  # for messages: "mbox /path", "maildir /path", "imap user@host/INBOX"

    @property
    def cursor_name(self) -> str | None:
        """The key under which the resume position is kept; None = not resumable."""
        ...

    def messages(self, after: str | None = None) -> Iterator[Incoming]:
        """Each message, oldest first; `after` is the saved position (IMAP only)."""
        ...

    def handled(self, item: Incoming) -> bool:
        """The message was acted on: move or archive it if this source was asked to.
        True if it was moved."""
        ...

    def close(self) -> None:
        """Let go of files and connections."""
        ...


class OneMessage:
    """A single pasted or saved mail (`mailer unsubscribe --mail FILE`), read like a mailbox of one."""

    cursor_name = None

    def __init__(self, data: bytes, name: str):
        self.data = data
        self.name = name

    def messages(self, after: str | None = None) -> Iterator[Incoming]:
        yield Incoming(self.name, self.data)

    def handled(self, item: Incoming) -> bool:
        return False

    def close(self) -> None:
        pass


# -- mbox -------------------------------------------------------------------------------

_QUOTED_FROM = re.compile(rb"^>+From ")


class MboxSource:
    """An mbox file, read as a stream: one message in memory at a time.

    A message starts at a "From " line at the top of the file or after a blank line; a
    body line that was quoted as ">From " (mboxrd) gets one ">" back off. The standard
    library's mailbox.mbox would first scan the whole file to build a table of contents;
    reading it once, front to back, is all this needs.
    """

    cursor_name = None

    def __init__(self, path: Path, since: date | None = None):
        self.path = Path(path)
        self.since = since
        self.name = f"mbox {self.path}"

    def messages(self, after: str | None = None) -> Iterator[Incoming]:
        """Each message of the file, front to back (`after` is ignored: an mbox has no position)."""
        try:
            handle = open(self.path, "rb")
        except OSError as exc:
            raise InputError(f"Cannot read the mbox file {self.path}: {exc.strerror}.") from None
        with handle:
            for item in _split_mbox(handle, self.path):
                if _since(item.data, self.since):
                    yield item

    def handled(self, item: Incoming) -> bool:
        """An mbox is never rewritten: moving a message out of it would mean rewriting the file."""
        return False

    def close(self) -> None:
        """Nothing stays open between messages."""


# What is read of one message: the reports, headers and first lines that tell what it is
# come first; a 200 MB attachment after them is skipped, so memory stays small.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_LINE_PIECE = 64 * 1024  # a "line" of 200 MB without a newline is read in pieces


def _split_mbox(handle: BinaryIO, path: Path) -> Iterator[Incoming]:
    offset = 0  # of the current line in the file
    start = 0  # of the current message's "From " line: its key
    lines: list[bytes] | None = None
    kept = 0  # bytes of the current message kept
    after_blank = True
    for line in iter(lambda: handle.readline(_LINE_PIECE), b""):
        size = len(line)
        if after_blank and line.startswith(b"From "):
            if lines is not None:
                yield Incoming(str(start), _mbox_message(lines))
            lines = []
            kept = 0
            start = offset
        elif lines is None:
            if line.strip():
                raise InputError(
                    f"{path} is not an mbox file: it does not start with a \"From \" line.",
                    hint="For a folder of messages use --maildir.",
                )
        else:
            if line[:1] == b">" and _QUOTED_FROM.match(line):
                line = line[1:]
            if kept < MAX_MESSAGE_BYTES:
                lines.append(line)
                kept += len(line)
        after_blank = line in (b"\n", b"\r\n")
        offset += size
    if lines is not None:
        yield Incoming(str(start), _mbox_message(lines))


def _mbox_message(lines: list[bytes]) -> bytes:
    # The blank line before the next "From " belongs to the mbox, not to the message.
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines.pop()
    return b"".join(lines)


# -- maildir ------------------------------------------------------------------------------


class MaildirSource:
    """A maildir (new/ and cur/), read and never changed, unless `archive` names another
    maildir to move handled messages into."""

    cursor_name = None

    def __init__(self, path: Path, archive: Path | None = None, since: date | None = None):
        self.path = Path(path)
        self.archive = Path(archive) if archive else None
        self.since = since
        self.name = f"maildir {self.path}"
        if not (self.path / "cur").is_dir() or not (self.path / "new").is_dir():
            raise InputError(
                f"{self.path} is not a maildir: it has no cur/ and new/ folders.",
                hint="Point --maildir at the folder holding cur/, new/ and tmp/.",
            )
        if self.archive is not None and self.archive.resolve() == self.path.resolve():
            raise InputError("--archive must name another maildir than the one being read.")

    def messages(self, after: str | None = None) -> Iterator[Incoming]:
        """Each message of new/, then cur/, in file-name order (delivery order for most programs)."""
        for sub in ("new", "cur"):
            try:
                names = sorted(n for n in os.listdir(self.path / sub) if not n.startswith("."))
            except OSError as exc:
                raise InputError(f"Cannot read the maildir {self.path / sub}: {exc.strerror}.") from None
            for name in names:
                try:
                    with open(self.path / sub / name, "rb") as fh:
                        data = fh.read(MAX_MESSAGE_BYTES)
                except FileNotFoundError:
                    continue  # another program moved it since the listing
                except OSError as exc:
                    raise InputError(f"Cannot read {self.path / sub / name}: {exc.strerror}.") from None
                if _since(data, self.since):
                    yield Incoming(f"{sub}/{name}", data)

    def handled(self, item: Incoming) -> bool:
        """Move the message into the --archive maildir's cur/, if one was given."""
        if self.archive is None:
            return False
        for sub in ("cur", "new", "tmp"):
            (self.archive / sub).mkdir(parents=True, exist_ok=True)
        sub, _, name = item.key.partition("/")
        if sub == "new" and ":2," not in name:
            name += ":2,"  # a message in cur/ carries its (empty) flags
        try:
            os.replace(self.path / item.key, self.archive / "cur" / name)
        except FileNotFoundError:
            return False  # already gone: someone else moved it
        except OSError as exc:
            raise InputError(f"Cannot move {item.key} into {self.archive}: {exc.strerror}.") from None
        return True

    def close(self) -> None:
        """Nothing stays open between messages."""


def _since(data: bytes, since: date | None) -> bool:
    """Is the message dated on or after `since` (always, when it has no readable Date)?"""
    if since is None:
        return True
    head = data[:16384].split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    match = re.search(rb"(?im)^Date:[ \t]*(.+(?:\r?\n[ \t].+)*)", head)
    if not match:
        return True
    try:
        when = email.utils.parsedate_to_datetime(match.group(1).decode("ascii", "replace"))
    except (TypeError, ValueError, IndexError):
        return True
    return when.date() >= since


# -- IMAP ----------------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class ImapSource:
    """An IMAP folder: UID SEARCH, then each message with BODY.PEEK[], one at a time.

    The folder is opened read-only (EXAMINE) unless `move_to` is given; then handled
    messages are moved with UID MOVE (RFC 6851), never copied and deleted. By default only
    messages with a UID above the last one processed are fetched (the position is
    "UIDVALIDITY:UID", so a folder rebuilt by the server is read again from the start);
    `since` searches by date instead.
    """

    def __init__(
        self,
        config: InboxConfig,
        password: str | None,
        *,
        since: date | None = None,
        move_to: str | None = None,
        timeout: float = 30.0,
        password_env: str = "",
    ):
        if not config.host:
            raise ConfigError(
                "No IMAP server is set: fill in [inbox] host in mailer.toml, or use --mbox FILE or --maildir DIR."
            )
        if not config.username:
            raise ConfigError("[inbox] username is empty: the IMAP server needs a login.")
        if not password:
            raise ConfigError(
                f"The environment variable {password_env or 'named by [inbox] password_env'} holding the IMAP password is empty.",
                hint=f"export {password_env or 'MAILER_SMTP_PASSWORD'}='...' before running mailer (never put it in mailer.toml).",
            )
        self.config = config
        self._password = password
        self.since = since
        self.move_to = move_to
        self.timeout = timeout
        self.where = f"{config.host}:{config.port}"
        self.name = f"imap {config.username}@{config.host}/{config.folder}"
        self.cursor_name = f"imap:{config.username}@{config.host}:{config.port}/{config.folder}"
        self._imap: imaplib.IMAP4 | None = None
        self.uidvalidity = ""

    def __repr__(self) -> str:  # never show the password
        return f"ImapSource({self.name})"

    # -- connection ---------------------------------------------------------------------

    def open(self) -> None:
        """Connect with the certificate verified, log in, open the folder."""
        if self._imap is not None:
            return
        c = self.config
        context = ssl.create_default_context()
        try:
            if c.security == "ssl":
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(c.host, c.port, ssl_context=context, timeout=self.timeout)
            else:
                imap = imaplib.IMAP4(c.host, c.port, timeout=self.timeout)
            try:
                if c.security == "starttls":
                    if "STARTTLS" not in imap.capabilities:
                        raise MailboxError(
                            f"The IMAP server {self.where} does not offer STARTTLS, so mailer stopped before "
                            "sending the password unencrypted.",
                            hint='Check [inbox] port and security ("ssl" for port 993).',
                        )
                    imap.starttls(ssl_context=context)
                imap.login(c.username, self._password)
            except BaseException:
                _quietly_logout(imap)
                raise
        except ssl.SSLCertVerificationError as exc:
            raise MailboxError(f"The certificate of the IMAP server {self.where} could not be verified: {exc.verify_message}.") from None
        except imaplib.IMAP4.error as exc:
            raise MailboxError(
                f"The IMAP server {self.where} refused the login of {c.username!r}: {_text(exc)}.",
                hint="Check [inbox] username and the password in the environment variable named by [inbox] password_env.",
            ) from None
        except (ssl.SSLError, OSError) as exc:
            raise MailboxError(
                f"Cannot reach the IMAP server {self.where}: {_reason(exc)}.",
                hint="Check [inbox] host, port and security in mailer.toml, and the network.",
            ) from None
        self._imap = imap
        try:
            self._select()
        except BaseException:
            self.close()
            raise

    def _select(self) -> None:
        imap = self._imap
        assert imap is not None
        if self.move_to:
            capabilities = _capabilities(imap)  # asked again: servers announce MOVE after login
            if "MOVE" not in capabilities:
                raise MailboxError(
                    f"The IMAP server {self.where} cannot move messages (no MOVE extension), and mailer never "
                    "deletes mail, so --move-to cannot be used with it."
                )
            typ, _ = imap.status(_quote(self.move_to), "(MESSAGES)")
            if typ != "OK":
                raise ConfigError(f"The IMAP folder {self.move_to!r} (for --move-to) does not exist on {self.where}.")
        typ, data = imap.select(_quote(self.config.folder), readonly=not self.move_to)
        if typ != "OK":
            raise ConfigError(f"The IMAP folder {self.config.folder!r} ([inbox] folder) does not exist on {self.where}: {_text(data)}.")
        _, validity = imap.response("UIDVALIDITY")
        self.uidvalidity = (validity[0] or b"").decode("ascii", "replace") if validity and validity[0] else ""

    def close(self) -> None:
        """Log out (idempotent)."""
        # LOGOUT, never CLOSE: CLOSE would expunge whatever another client flagged \Deleted.
        if self._imap is not None:
            _quietly_logout(self._imap)
            self._imap = None

    # -- reading ------------------------------------------------------------------------

    def messages(self, after: str | None = None) -> Iterator[Incoming]:
        """Each message above the UID in `after` (or dated since `since`), in UID order."""
        self.open()
        imap = self._imap
        assert imap is not None
        last = 0
        if after and self.since is None:
            validity, _, after_uid = after.partition(":")
            if validity == self.uidvalidity and after_uid.isdigit():
                last = int(after_uid)
        if self.since is not None:
            day = self.since
            criteria = ["SINCE", f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"]
        elif last:
            criteria = ["UID", f"{last + 1}:*"]
        else:
            criteria = ["ALL"]
        typ, data = self._command("UID", "SEARCH", *criteria)
        uids = sorted({int(u) for line in data if line for u in line.split() if u.isdigit()})
        for uid in uids:
            if uid <= last:
                continue  # "N:*" always matches the highest UID, even below N
            typ, data = self._command("UID", "FETCH", str(uid), f"(BODY.PEEK[]<0.{MAX_MESSAGE_BYTES}>)")
            body = next((part[1] for part in data if isinstance(part, tuple) and b"BODY[]" in part[0].upper()), None)
            if body is None:
                continue  # expunged by another client meanwhile
            yield Incoming(str(uid), bytes(body), f"{self.uidvalidity}:{uid}")

    def handled(self, item: Incoming) -> bool:
        """UID MOVE the message to --move-to, if given."""
        if not self.move_to:
            return False
        self._command("UID", "MOVE", item.key, _quote(self.move_to))
        return True

    def _command(self, *args: str) -> tuple[str, list]:
        imap = self._imap
        assert imap is not None
        try:
            if args[0] == "UID":
                typ, data = imap.uid(args[1], *args[2:])
            else:
                typ, data = getattr(imap, args[0].lower())(*args[1:])
        except imaplib.IMAP4.abort as exc:
            raise MailboxError(f"The IMAP server {self.where} closed the connection: {_text(exc)}.") from None
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(f"The IMAP server {self.where} failed {' '.join(args[:2])}: {_text(exc)}.") from None
        if typ != "OK":
            raise MailboxError(f"The IMAP server {self.where} refused {' '.join(args[:2])}: {_text(data)}.")
        return typ, data


def _capabilities(imap: imaplib.IMAP4) -> set[str]:
    found = {c.upper() for c in imap.capabilities}
    typ, data = imap.capability()
    for line in data if typ == "OK" else []:
        if isinstance(line, bytes):
            found.update(line.decode("ascii", "replace").upper().split())
    return found


def _quote(folder: str) -> str:
    if not folder.isascii():
        raise InputError(f"The IMAP folder name {folder!r} must be plain ASCII (mailer does not encode others).")
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        value = b" ".join(v if isinstance(v, bytes) else str(v).encode() for v in value if v)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = " ".join(str(value).split()).rstrip(".")
    return text or "no reason given"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return _text(getattr(exc, "strerror", None) or exc)


def _quietly_logout(imap: imaplib.IMAP4) -> None:
    try:
        imap.logout()
    except Exception:
        try:
            imap.shutdown()
        except Exception:
            pass


def later_position(new: str, old: str | None) -> bool:
    """Is IMAP position `new` ("UIDVALIDITY:UID") past `old`? A changed UIDVALIDITY always is."""
    if not old:
        return True
    new_validity, _, new_uid = new.partition(":")
    old_validity, _, old_uid = old.partition(":")
    if new_validity != old_validity or not (new_uid.isdigit() and old_uid.isdigit()):
        return True
    return int(new_uid) > int(old_uid)


def parse_since(text: str) -> date:
    """--since DATE: YYYY-MM-DD."""
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%d").date()
    except ValueError:
        raise InputError(f"--since {text!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-11-01.") from None


def imap_source(ws: Workspace, environ: Mapping[str, str], *, since: date | None = None,
                move_to: str | None = None) -> ImapSource:
    """The IMAP folder of [inbox] in mailer.toml, with its password from the environment."""
    inbox = ws.config.inbox
    return ImapSource(
        inbox, ws.inbox_password(environ), since=since, move_to=move_to,
        timeout=ws.config.smtp.timeout, password_env=inbox.password_env or ws.config.smtp.password_env,
    )
