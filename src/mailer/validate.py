"""Pure validation: a CSV row (or a command-line value) -> Subscriber | Reject."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Sequence

from email_validator import EmailNotValidError, validate_email

from .csvio import ColumnMap
from .models import DEFAULT_LISTS, STATUSES, Reject, Subscriber

# C0, DEL, C1 controls and the Unicode line/paragraph separators: none may reach a header.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ANGLE = re.compile(r"^(?P<name>.*?)\s*<\s*(?P<addr>[^<>]*?)\s*>$", re.DOTALL)
_LIST_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")
_TAG_SPLIT = re.compile(r"\s*(?:,|;|:::)\s*")
# A name part of `Last, First`: letters, with spaces, dots, apostrophes or hyphens between.
_PLAIN_NAME = re.compile(r"[^\W\d_]+(?:[ .'\u2019-]+[^\W\d_]+)*\.?")
_WHITESPACE = " \t\u00a0\u200b\ufeff\u3000"
MAX_NAME = 100
MAX_TAG = 50
MAX_FIELD = 200
_US_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y %I:%M %p", "%m/%d/%Y", "%d.%m.%Y %H:%M", "%d.%m.%Y")


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


_resolver = None


def _dns_resolver():
    global _resolver
    if _resolver is None:
        from email_validator import caching_resolver

        _resolver = caching_resolver(timeout=10)
    return _resolver


def check_text(value: str, what: str, max_len: int = MAX_FIELD) -> str:
    """Strip a text field and refuse control characters (they could split a mail header)."""
    value = value.strip(_WHITESPACE + "\r\n")
    if _CONTROL.search(value):
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
    if _CONTROL.search(value):
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
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ip(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
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
    return parse_names(values, "list", _LIST_NAME)


def parse_tags(values: Sequence[str] | str) -> tuple[str, ...]:
    return parse_names(values, "tag")


def parse_row(cells: Sequence[str], columns: ColumnMap, line: int, defaults: RowDefaults) -> Subscriber | Reject:
    """Turn one CSV record into a Subscriber, or a Reject that says what is wrong."""
    raw_email = columns.get(cells, "email")
    try:
        width = len(columns.header)
        if width and len(cells) > width and any(c.strip() for c in cells[width:]):
            # An unquoted separator inside a value shifts every cell after it.
            raise InvalidValue(
                f"The row has {len(cells)} cells but the header has {width}; "
                "a value holding the separator must be in double quotes."
            )
        # Google Contacts joins addresses of one kind with " ::: "; the first is the main one.
        email, key, display = normalise_email(raw_email.split(" ::: ", 1)[0], defaults.check_dns)
        first = check_text(columns.get(cells, "first_name"), "first name", MAX_NAME)
        last = check_text(columns.get(cells, "last_name"), "last name", MAX_NAME)
        if not first and not last:
            full = check_text(columns.get(cells, "name") or display, "name", 2 * MAX_NAME)
            first, last = split_name(full)
            check_text(first, "first name", MAX_NAME)
            check_text(last, "last name", MAX_NAME)
        status, unsub_at, unsub_reason = "active", "", ""
        if columns.ours and "status" in columns:
            status = columns.get(cells, "status").strip().lower() or "active"
            if status not in STATUSES:
                raise InvalidValue(f"The status {status!r} is not one of {', '.join(STATUSES)}.")
        if columns.get(cells, "unsubscribed_at").strip() and not columns.ours:
            status = "unsubscribed"  # Mailchimp's unsubscribed export: keep them suppressed
        cleaned_at = columns.get(cells, "cleaned_at").strip()
        if cleaned_at:
            status = "bounced"  # Mailchimp's "cleaned" export: addresses that bounced
        if status != "active":
            unsub_at = columns.get(cells, "unsubscribed_at") or cleaned_at
            unsub_at = parse_time(check_text(unsub_at, "unsubscribe time"))
            unsub_reason = check_text(columns.get(cells, "unsubscribed_reason"), "unsubscribe reason")
            if unsub_reason.casefold() == "other":  # Mailchimp keeps the person's own words apart
                other = columns.get(cells, "unsubscribed_reason_other")
                unsub_reason = check_text(other, "unsubscribe reason") or unsub_reason
        if defaults.lists is not None:
            lists = defaults.lists
        elif "lists" in columns and columns.ours:
            lists = parse_lists(columns.get(cells, "lists"))
        else:
            lists = DEFAULT_LISTS
        tags = parse_tags(columns.get(cells, "tags")) if "tags" in columns else ()
        tags = tags + tuple(t for t in defaults.tags if t not in tags)
        source = defaults.source or check_text(columns.get(cells, "source"), "source") or defaults.default_source
        optin_time = parse_time(check_text(columns.get(cells, "optin_time"), "opt-in time"))
        optin_ip = parse_ip(check_text(columns.get(cells, "optin_ip"), "opt-in IP"))
        created = updated = ""
        if columns.ours:
            created = parse_time(check_text(columns.get(cells, "created_at"), "created time"))
            updated = parse_time(check_text(columns.get(cells, "updated_at"), "updated time"))
    except InvalidValue as exc:
        return Reject(line=line, value=raw_email, reason=str(exc), row=tuple(cells))
    return Subscriber(
        email=email,
        email_key=key,
        email_entered=raw_email.strip(_WHITESPACE),
        first_name=first,
        last_name=last,
        status=status,
        lists=tuple(sorted(lists)),
        tags=tags,
        source=source,
        optin_time=optin_time,
        optin_ip=optin_ip,
        created_at=created,
        updated_at=updated,
        unsubscribed_at=unsub_at,
        unsubscribed_reason=unsub_reason,
    )
