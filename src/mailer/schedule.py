"""Times people type ("2026-12-01 09:00", in the workspace's time zone) <-> stored UTC."""

from __future__ import annotations

import os
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .clock import Clock, iso, parse_iso
from .errors import ConfigError, InputError

_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")


def machine_timezone() -> tzinfo:
    """This machine's zone, with its daylight-saving rules when they can be found."""
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        try:
            target = os.path.realpath("/etc/localtime")
            if "zoneinfo/" in target:
                name = target.split("zoneinfo/", 1)[1]
        except OSError:
            name = ""
    if not name and Path("/etc/timezone").is_file():
        name = Path("/etc/timezone").read_text().strip()
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return datetime.now().astimezone().tzinfo or UTC


def workspace_timezone(name: str) -> tzinfo:
    """[sending] timezone, or the machine's when it is empty."""
    if not name:
        return machine_timezone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"[sending] timezone {name!r} is not a known time zone; use a name like \"America/New_York\"."
        ) from None


def parse_local_time(text: str, timezone: str, clock: Clock, *, allow_past: bool = False) -> str:
    """Read a wall-clock time in the workspace's zone; return it as stored (UTC ISO).

    A time that does not exist (skipped by a daylight-saving change) is refused; an
    ambiguous one (repeated when clocks go back) means its first occurrence.
    """
    tz = workspace_timezone(timezone)
    text = text.strip()
    try:
        datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        pass
    else:  # a date alone would silently mean midnight, which nobody means for a newsletter
        raise InputError(
            f"{text!r} is a date without a time; say when on that day.",
            hint=f'Write it like "{text} 09:00" (or "{text} 00:00" for midnight).',
        )
    for fmt in _FORMATS:
        try:
            naive = datetime.strptime(text, fmt)
            break
        except ValueError:
            continue
    else:
        raise InputError(f'Cannot read the time {text!r}; write it like "2026-12-01 09:00".')
    local = naive.replace(tzinfo=tz, fold=0)
    utc = local.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != naive:
        raise InputError(
            f"{text} does not exist in {tz}: the clocks skip it for daylight saving time; choose another time."
        )
    if utc < clock.now():
        if not allow_past:
            raise InputError(
                f"{text} ({tz}) is in the past.",
                hint="Give a later time, or add --now to send it at the next run.",
            )
        # --now: the next run sends it, however long ago the time given was.
        return iso(clock.now())
    return iso(utc)


def local_time_text(stored: str, timezone: str) -> str:
    """A stored UTC time as the workspace's wall-clock time: `2026-12-01 09:00 EST`."""
    dt = parse_iso(stored).astimezone(workspace_timezone(timezone))
    return dt.strftime("%Y-%m-%d %H:%M %Z").strip()


def shown_time(stored: str, timezone: str) -> str:
    """A stored time as people read it (local, with its zone); '' stays '', text that is not a
    time (an imported opt-in date we could not read) is shown as it is."""
    if not stored:
        return ""
    try:
        return local_time_text(stored, timezone)
    except ValueError:
        return stored
