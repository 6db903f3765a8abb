"""Pure validation: a CSV row (or a command-line value) -> Subscriber | Reject."""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, TypedDict

import idna
from email_validator import EmailNotValidError, validate_email

from .clock import iso
from .csvio import ColumnMap, unneutralise
from .lifecycle import SubscriberStatus
from .models import CONSENT_METHODS, DEFAULT_LISTS, STATUSES, Reject, Subscriber
from .text import CONTROL, LIST_NAME

if TYPE_CHECKING:
    from dns.resolver import Resolver

_ANGLE = re.compile(r"^(?P<name>.*?)\s*<\s*(?P<addr>[^<>]*?)\s*>$", re.DOTALL)
_TAG_SPLIT = re.compile(r"\s*(?:,|;|:::)\s*")
# A name part of `Last, First`: letters, with spaces, dots, apostrophes or hyphens between.
_PLAIN_NAME = re.compile(r"[^\W\d_]+(?:[ .'\u2019-]+[^\W\d_]+)*\.?")
_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")
# Stray spaces are trimmed; control characters (tab, CR, LF...) are never trimmed, but refused.
_WHITESPACE = " \u00a0\u200b\ufeff\u3000"
MAX_NAME = 100
MAX_TAG = 50
MAX_FIELD = 200
_US_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y %I:%M %p", "%m/%d/%Y", "%d.%m.%Y %H:%M", "%d.%m.%Y")

# email-validator checks the domain of every address from scratch (IDNA, UTS-46: most of
# its time), while a list has a few dozen domains for 100,000s of addresses. That check is
# a pure function of its arguments, so it is memoised where validate_email looks it up;
# results are unchanged (tests/test_validate.py compares them with the original).
_email_validator_core = importlib.import_module("email_validator.validate_email")
if not hasattr(_email_validator_core.validate_email_domain_name, "cache_info"):
    # A name the module imports from .syntax and does not export: patched here on purpose.
    _email_validator_core.validate_email_domain_name = lru_cache(maxsize=4096)(  # type: ignore[attr-defined]
        _email_validator_core.validate_email_domain_name
    )


class InvalidValue(ValueError):
    """A value that cannot be accepted; str() is the reason, as a sentence."""


@dataclass(frozen=True)
class RowDefaults:
    """What an import adds to every row: the options of `mailer import`."""

    lists: tuple[str, ...] | None = None  # None: the file's own lists, else both news and specials
    tags: tuple[str, ...] = ()
    source: str | None = None  # --source overrides the file
    default_source: str = ""  # used when neither --source nor the file says
    check_dns: bool = False
    fix_typos: bool = False  # store gmail.com for gmial.com (--fix-typos); else only warn


_resolver: Resolver | None = None


def _dns_resolver() -> Resolver:
    global _resolver
    if _resolver is None:
        from email_validator import caching_resolver

        _resolver = caching_resolver(timeout=10)
    return _resolver


def check_text(value: str, what: str, max_len: int = MAX_FIELD) -> str:
    """Strip a text field and refuse control characters (they could split a mail header)."""
    value = value.strip(_WHITESPACE)
    if CONTROL.search(value):
        raise InvalidValue(f"The {what} contains a line break or another control character.")
    if len(value) > max_len:
        raise InvalidValue(f"The {what} is {len(value)} characters long; at most {max_len} are allowed.")
    return value


def normalise_email(raw: str, check_dns: bool = False) -> tuple[str, str, str]:
    """Clean and validate an address as people write it.

    Accepts `Jane Doe <jane@example.com>`, stray spaces and a `mailto:` prefix; returns
    (normalised address, case-insensitive key, display name found beside it).
    """
    value = raw.strip(_WHITESPACE)
    if CONTROL.search(value):
        raise InvalidValue("The email address contains a line break or another control character.")
    if not value:
        raise InvalidValue("The email address is empty.")
    display = ""
    match = _ANGLE.match(value)
    if match:
        display = match["name"].strip().strip('"').strip()
        value = match["addr"]
    if value[:7].lower() == "mailto:":
        value = value[7:].split("?", 1)[0].strip()
    if len(value) > 320:
        raise InvalidValue(f"The email address is {len(value)} characters long; at most 254 are allowed.")
    try:
        if check_dns:
            result = validate_email(value, check_deliverability=True, dns_resolver=_dns_resolver())
        else:
            result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidValue(str(exc)) from None
    normalised = result.normalized
    return normalised, normalised.lower(), display


@lru_cache(maxsize=1024)
def ascii_domain(domain: str) -> str:
    """A domain as SMTP and headers carry it: its IDNA 2008 A-label (`xn--bcher-kva.example`)."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidValue(f"The domain {domain!r} cannot be written in ASCII: {exc}.") from None


def split_name(full: str) -> tuple[str, str]:
    """`Jane Doe` -> (Jane, Doe); `Doe, Jane` -> (Jane, Doe); `Cher` -> (Cher, '').

    A comma means `Last, First` only between plain names, so other text (`=HYPERLINK("a","b")`)
    is kept whole as the first name.
    """
    full = " ".join(full.split())
    if "," in full:
        last, _, first = full.partition(",")
        last, first = last.strip(), first.strip()
        if _PLAIN_NAME.fullmatch(last) and _PLAIN_NAME.fullmatch(first):
            return first, last
    first, _, last = full.partition(" ")
    return first, last


@lru_cache(maxsize=4096)
def parse_time(text: str) -> str:
    """A timestamp as ISO 8601 UTC (`2026-01-31T09:00:00Z`); text we cannot read is kept as it is."""
    text = text.strip()
    if not text:
        return ""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        for fmt in _US_FORMATS:
            try:
                dt = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        else:
            return text
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # exports without a zone (Mailchimp's) are in UTC
    return iso(dt)


def parse_ip(text: str) -> str:
    """An IPv4 or IPv6 address in its usual form; '' for anything else (it is only a consent fact)."""
    text = text.strip()
    if not text:
        return ""
    if _IPV4.fullmatch(text):
        return text
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return ""


def parse_names(values: Sequence[str] | str, what: str, pattern: re.Pattern | None = None) -> tuple[str, ...]:
    """Split and clean list or tag names, keeping their first-seen order without repeats."""
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for value in values:
        for part in _TAG_SPLIT.split(value):
            part = part.strip().strip('"').strip()
            if not part or part.startswith("* "):  # Google's system labels: "* myContacts"
                continue
            part = check_text(part, what, MAX_TAG)
            if pattern is not None:
                part = part.lower()
                if not pattern.match(part):
                    raise InvalidValue(
                        f"The {what} {part!r} is not a valid name; use letters, digits, '-' and '_'."
                    )
            if part not in out:
                out.append(part)
    return tuple(out)


def parse_lists(values: Sequence[str] | str) -> tuple[str, ...]:
    return parse_names(values, "list", LIST_NAME)


def parse_tags(values: Sequence[str] | str) -> tuple[str, ...]:
    return parse_names(values, "tag")


class _Consent(TypedDict, total=False):
    """The consent record's fields of a Subscriber, as read from a row."""

    consent_method: str
    consent_text: str
    consent_version: str
    consent_url: str
    consent_user_agent: str


class RowParser:
    """Turns the records of one file into Subscribers or Rejects.

    Built once per file: which columns exist is decided here, so the per-row work
    touches only the fields the file has (imports of 100,000s of rows are bound by
    email-validator; this keeps our own share small).
    """

    def __init__(self, columns: ColumnMap, defaults: RowDefaults):
        self.columns = columns
        self.defaults = defaults
        idx = columns.indexes
        self.width = len(columns.header)
        self.neutralised = columns.neutralised
        self.ours = columns.ours
        self.i = {name: idx.get(name) for name in (
            "email", "email2", "first_name", "last_name", "name", "status", "lists", "tags", "source", "optin_time",
            "optin_ip", "created_at", "updated_at", "unsubscribed_at", "unsubscribed_reason",
            "unsubscribed_reason_other", "cleaned_at", "consent_method", "consent_text", "consent_version",
            "consent_url", "consent_user_agent",
        )}
        self.has_consent_columns = any(
            self.i[k] is not None for k in ("consent_method", "consent_text", "consent_version", "consent_url", "consent_user_agent")
        )
        self.has_status = self.ours and self.i["status"] is not None
        self.has_unsub = not self.ours and self.i["unsubscribed_at"] is not None
        self.has_clean = self.i["cleaned_at"] is not None
        if defaults.lists is not None:
            self.fixed_lists: tuple[str, ...] | None = tuple(sorted(defaults.lists))
        elif self.ours and self.i["lists"] is not None:
            self.fixed_lists = None
        else:
            self.fixed_lists = tuple(sorted(DEFAULT_LISTS))

    def get(self, cells: Sequence[str], name: str) -> str:
        i = self.i[name]
        if i is None or i >= len(cells):
            return ""
        value = cells[i]
        return unneutralise(value) if self.neutralised and value[:1] == "'" else value

    def text(self, cells: Sequence[str], name: str, what: str, max_len: int = MAX_FIELD) -> str:
        value = self.get(cells, name)
        return check_text(value, what, max_len) if value else ""

    def __call__(self, line: int, cells: Sequence[str]) -> Subscriber | Reject:
        get, text, d = self.get, self.text, self.defaults
        raw_email = get(cells, "email")
        try:
            if self.width and len(cells) > self.width and any(c.strip() for c in cells[self.width:]):
                # An unquoted separator inside a value shifts every cell after it.
                raise InvalidValue(
                    f"The row has {len(cells)} cells but the header has {self.width}; "
                    "a value holding the separator must be in double quotes."
                )
            if not raw_email.strip(_WHITESPACE) and self.i["email2"] is not None:
                raw_email = get(cells, "email2")  # Outlook/Google: only a second address given
            # Google Contacts joins addresses of one kind with " ::: "; the first is the main one.
            email, key, display = normalise_email(raw_email.split(" ::: ", 1)[0], d.check_dns)
            first = text(cells, "first_name", "first name", MAX_NAME)
            last = text(cells, "last_name", "last name", MAX_NAME)
            if not first and not last:
                full = text(cells, "name", "name", 2 * MAX_NAME) or check_text(display, "name", 2 * MAX_NAME)
                if full:
                    first, last = split_name(full)
                    check_text(first, "first name", MAX_NAME)
                    check_text(last, "last name", MAX_NAME)
            status, unsub_at, unsub_reason = SubscriberStatus.ACTIVE, "", ""
            if self.has_status:
                given = get(cells, "status").strip().lower() or SubscriberStatus.ACTIVE
                if given not in STATUSES:
                    raise InvalidValue(f"The status {given!r} is not one of {', '.join(STATUSES)}.")
                status = SubscriberStatus(given)
            if self.has_unsub and get(cells, "unsubscribed_at").strip():
                status = SubscriberStatus.UNSUBSCRIBED  # Mailchimp's unsubscribed export: keep them suppressed
            cleaned_at = get(cells, "cleaned_at").strip() if self.has_clean else ""
            if cleaned_at:
                status = SubscriberStatus.BOUNCED  # Mailchimp's "cleaned" export: addresses that bounced
            if status != SubscriberStatus.ACTIVE:
                unsub_at = get(cells, "unsubscribed_at") or cleaned_at
                unsub_at = parse_time(check_text(unsub_at, "unsubscribe time"))
                unsub_reason = text(cells, "unsubscribed_reason", "unsubscribe reason")
                if unsub_reason.casefold() == "other":  # Mailchimp keeps the person's own words apart
                    unsub_reason = text(cells, "unsubscribed_reason_other", "unsubscribe reason") or unsub_reason
            lists = self.fixed_lists
            if lists is None:
                lists = tuple(sorted(parse_lists(get(cells, "lists"))))
            tags: tuple[str, ...] = ()
            if self.i["tags"] is not None:
                raw_tags = get(cells, "tags")
                tags = parse_tags(raw_tags) if raw_tags else ()
            if d.tags:
                tags = tags + tuple(t for t in d.tags if t not in tags)
            source = d.source or text(cells, "source", "source") or d.default_source
            optin_time = parse_time(text(cells, "optin_time", "opt-in time"))
            optin_ip = parse_ip(text(cells, "optin_ip", "opt-in IP"))
            consent = self._consent(cells) if self.has_consent_columns else {}
            if not consent.get("consent_method") and not self.ours:  # a backup is restored as it was
                # How they agreed is not said: a web form's traces say form, anything else came by import.
                from_form = consent.get("consent_url") or consent.get("consent_user_agent")
                consent["consent_method"] = "form" if from_form else "import"
            created = updated = ""
            if self.ours:
                created = parse_time(text(cells, "created_at", "created time"))
                updated = parse_time(text(cells, "updated_at", "updated time"))
        except InvalidValue as exc:
            return Reject(line=line, value=raw_email, reason=str(exc), row=tuple(cells))
        return Subscriber(
            email=email,
            email_key=key,
            email_entered=raw_email.strip(_WHITESPACE),
            first_name=first,
            last_name=last,
            status=status,
            lists=lists,
            tags=tags,
            source=source,
            optin_time=optin_time,
            optin_ip=optin_ip,
            created_at=created,
            updated_at=updated,
            unsubscribed_at=unsub_at,
            unsubscribed_reason=unsub_reason,
            **consent,
        )

    def _consent(self, cells: Sequence[str]) -> _Consent:
        """The consent record's columns of a row (InvalidValue for a method we do not know)."""
        text = self.text
        method = text(cells, "consent_method", "consent method").lower().replace(" ", "-").replace("_", "-")
        if method and method not in CONSENT_METHODS:
            raise InvalidValue(f"The consent method {method!r} is not one of {', '.join(CONSENT_METHODS)}.")
        return {
            "consent_method": method,
            "consent_text": text(cells, "consent_text", "consent text", 2000),
            "consent_version": text(cells, "consent_version", "consent version"),
            "consent_url": text(cells, "consent_url", "consent form URL", 2000),
            "consent_user_agent": text(cells, "consent_user_agent", "user agent", 1000),
        }
