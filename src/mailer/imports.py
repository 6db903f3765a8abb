"""CSV file -> validated rows -> store, as one stream and one transaction."""

from __future__ import annotations

import csv
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO

from .csvio import REJECT_COLUMNS, CsvFile, map_columns, neutralise, open_csv, sniff_binary
from .errors import InputError
from .files import atomic_writer
from .models import ImportSummary, Reject, Subscriber, Typo
from .store import Store
from .typos import suggest_address
from .validate import InvalidValue, RowDefaults, RowParser, normalise_email


def look_alike(sub: Subscriber, line: int, fix: bool) -> tuple[Subscriber, Typo | None]:
    """A subscriber whose domain looks like a slip of a common provider's: the Typo found, and
    (with fix) the subscriber with the provider's domain. Never changes anything without fix."""
    suggestion = suggest_address(sub.email)
    if suggestion is None:
        return sub, None
    if not fix:
        return sub, Typo(line, sub.email, suggestion)
    try:
        email, key, _ = normalise_email(suggestion)
    except InvalidValue:
        return sub, Typo(line, sub.email, suggestion)
    return replace(sub, email=email, email_key=key), Typo(line, sub.email, suggestion, fixed=True)


def one_row(fields: dict[str, str], defaults: RowDefaults) -> Subscriber:
    """One person typed on the command line, through exactly the rules of an imported row.

    InputError (exit 2) with the row's reason when it would have been rejected.
    """
    parse = RowParser(map_columns(list(fields)), defaults)
    record = parse(1, list(fields.values()))
    if isinstance(record, Reject):
        raise InputError(f"{record.value or fields.get('email', '')!r}: {record.reason}")
    return record


def records(csv_file: CsvFile, defaults: RowDefaults, notes: ImportSummary | None = None) -> Iterator[Subscriber | Reject]:
    """Validate every data row of an opened CSV file, lazily.

    Look-alike domains (and, with --fix-typos, their fixes) and rows without any consent
    fact are noted in `notes` (its typos and no_consent).
    """
    parse = RowParser(csv_file.columns, defaults)
    for line, cells in csv_file.rows():
        record = parse(line, cells)
        if notes is not None and isinstance(record, Subscriber):
            record, typo = look_alike(record, line, defaults.fix_typos)
            if typo is not None:
                notes.typos.append(typo)
            if not record.has_consent_facts:
                notes.no_consent += 1
        yield record


@contextmanager
def _rejects_writer(path: Path | None, header: tuple[str, ...]) -> Iterator:
    """Write rejects to a temporary file beside `path`, renamed into place only on success."""
    if path is None:
        yield None
        return
    with atomic_writer(path, encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow([neutralise(c) for c in (header or ("email",))] + list(REJECT_COLUMNS))

        def write(reject: Reject) -> None:
            row = list(reject.row)
            if header:
                row += [""] * (len(header) - len(row))
                row = row[: len(header)]
            writer.writerow([neutralise(c) for c in row] + [str(reject.line), reject.reason])

        yield write


def import_file(
    store: Store,
    secret: bytes,
    path: str | os.PathLike[str],
    defaults: RowDefaults,
    now: str,
    *,
    encoding: str | None = None,
    commit: bool = True,
    rejects_path: str | os.PathLike[str] | None = None,
    columns: dict[str, str] | None = None,
    shown_as: str | None = None,
) -> ImportSummary:
    """Import (commit=True) or analyse (commit=False) a subscriber CSV file.

    Either every row is stored or, if anything goes wrong part-way, nothing is.
    `columns` are columns a person chose by name ({"email": "Contact"}).
    """
    notes = ImportSummary()
    if rejects_path is not None and _same_file(path, rejects_path):
        raise InputError(
            f"--rejects {rejects_path} is the file being imported; it would be replaced by the rejected rows.",
            hint="Give the rejects file another name, e.g. --rejects rejects.csv.",
        )
    with open_csv(path, encoding=encoding, columns=columns) as csv_file:
        # Said before the import: nothing that can fail runs after its commit.
        detected = describe(csv_file, shown_as)
        header = csv_file.columns.header
        with _rejects_writer(Path(rejects_path) if rejects_path else None, header) as on_reject:
            summary = store.subscribers.import_rows(
                records(csv_file, defaults, notes), secret, now, commit=commit, on_reject=on_reject
            )
    summary.detected = detected
    summary.typos, summary.no_consent = notes.typos, notes.no_consent
    return summary


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).absolute() == Path(b).absolute()


@contextmanager
def seekable(path: str | os.PathLike, stdin: IO[bytes] | None = None) -> Iterator[Path]:
    """A path the CSV reader can read twice (detection, then rows).

    `-` (standard input), a pipe, a FIFO or `<(cat file)` is copied to a private temporary
    file first; a regular file is read where it is.
    """
    path = Path(path)
    if str(path) != "-":
        try:
            regular = stat.S_ISREG(os.stat(path).st_mode)
        except FileNotFoundError:
            raise InputError(f"There is no file {path}.") from None
        if regular or path.is_dir():
            yield path
            return
    name = "standard input" if str(path) == "-" else str(path)
    with tempfile.NamedTemporaryFile(prefix="mailer-input-", suffix=".csv") as tmp:
        if str(path) == "-":
            assert stdin is not None
            _spool(stdin, tmp, name)
        else:
            with open(path, "rb") as source:
                _spool(source, tmp, name)
        tmp.flush()
        yield Path(tmp.name)


MAX_SPOOLED = 2 << 30  # 2 GB: far beyond any practice's list, far below a full disk


def _spool(source: IO[bytes], target: IO[bytes], name: str) -> None:
    """Copy a stream that can be read only once, refusing what is not text (/dev/zero) and
    what never ends (/dev/urandom) before it fills the disk."""
    copied = 0
    first = True
    while chunk := source.read(1 << 20):
        if first:
            first = False
            what = sniff_binary(chunk)
            if what:
                raise InputError(f"{name} {what}, not CSV text.")
        copied += len(chunk)
        if copied > MAX_SPOOLED:
            raise InputError(f"{name} goes on past {MAX_SPOOLED >> 30} GB, which no subscriber list does; stopped reading it.")
        target.write(chunk)


def describe(csv_file: CsvFile, shown_as: str | None = None) -> str:
    """One line on what was detected, for humans: encoding, delimiter, columns."""
    names = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
    delim = names.get(csv_file.delimiter, repr(csv_file.delimiter))
    if csv_file.headerless:
        cols = "no header; addresses in column 1"
    else:
        cols = ", ".join(f"{k}={csv_file.columns.header[i]!r}" for k, i in csv_file.columns.indexes.items())
    return f"{shown_as or csv_file.path.name}: {csv_file.encoding}, {delim}-separated; {cols}"
