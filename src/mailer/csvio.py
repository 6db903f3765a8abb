"""Read any real-world CSV export as rows; write CSV that spreadsheets cannot run.

Reading is a chain of generators: detect the encoding (BOM, UTF-16, UTF-8, cp1252),
sniff the delimiter, recognise the header names of the programs people export from,
then yield `(line, cells)` one record at a time, so memory stays flat.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    from _csv import Reader as CsvReader  # what csv.reader() returns: an iterator that counts lines

    from .models import Subscriber

SAMPLE_BYTES = 64 * 1024
CHUNK = 1 << 20
DELIMITERS = (",", ";", "\t", "|")
# Big enough for any honest cell (a long note), small enough to stop a runaway quote.
csv.field_size_limit(1 << 20)

# The columns of our own export, in order. A file carrying the first thirteen is a mailer
# backup (the consent columns came later: an older backup is still one).
EXPORT_COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "status",
    "lists",
    "tags",
    "source",
    "optin_time",
    "optin_ip",
    "created_at",
    "updated_at",
    "unsubscribed_at",
    "unsubscribed_reason",
    "consent_method",
    "consent_text",
    "consent_version",
    "consent_url",
    "consent_user_agent",
)
_BACKUP_COLUMNS = EXPORT_COLUMNS[:13]
REJECT_COLUMNS = ("reject_line", "reject_reason")

# Header aliases, compared after `header_key` (case, spaces and punctuation removed).
# Order matters inside a tuple: the first alias found wins.
ALIASES: dict[str, tuple[str, ...]] = {
    "email": (
        "email", "emailaddress", "email1value", "primaryemail", "mail",
        "emailaddresses", "subscriberemail", "contactemail", "e_mail",
        "emailadresse", "courriel", "adressecourriel", "correo", "correoelectrónico", "correoelectronico",
    ),
    # A second address, used when the first is empty (Outlook, Google).
    "email2": ("email2address", "email2value"),
    "first_name": ("firstname", "givenname", "first", "fname", "forename", "vorname", "prénom", "prenom", "nombre"),
    "last_name": ("lastname", "familyname", "surname", "last", "lname", "nachname", "nom", "apellido", "apellidos"),
    "name": ("name", "fullname", "displayname", "contactname", "patientname", "patient", "nomcomplet", "nombrecompleto"),
    "status": ("status",),
    "lists": ("lists",),
    "tags": ("tags", "tag", "labels", "groupmembership", "categories"),
    "source": ("source",),
    "optin_time": ("optintime", "signupdate", "signuptime", "subscribedat", "dateadded", "date"),
    "optin_ip": ("optinip", "signupip", "ipaddress", "ip"),
    "created_at": ("createdat",),
    "updated_at": ("updatedat",),
    "unsubscribed_at": ("unsubscribedat", "unsubtime"),
    "unsubscribed_reason": ("unsubscribedreason", "unsubreason"),
    "unsubscribed_reason_other": ("unsubreasonother",),
    "cleaned_at": ("cleantime",),
    "consent_method": ("consentmethod", "optinmethod", "signupmethod"),
    "consent_text": ("consenttext", "consent", "consentwording"),
    "consent_version": ("consentversion", "consenttextversion"),
    "consent_url": ("consenturl", "formurl", "signupurl", "signupform", "optinurl"),
    "consent_user_agent": ("consentuseragent", "useragent"),
}
# The fields a person may point at with --email-column and --name-column.
CHOOSABLE = {"email": "--email-column", "name": "--name-column"}

_NON_ALNUM = re.compile(r"[\W_]+", re.UNICODE)
_LOOKS_LIKE_EMAIL = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")
# cp1252 leaves these five bytes undefined; a file holding them is latin-1.
_CP1252_HOLES = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")
# Control bytes that text never holds (tab, line breaks and ESC aside). Compressed or
# binary data is about one tenth these; a CSV with a stray NUL in a cell is text.
_BINARY_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")
# Files people pick by mistake instead of the export.
_NOT_CSV = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
            (b"%PDF", "a PDF document"))
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_SEP_LINE = re.compile(r"sep=(.)\r?\n", re.IGNORECASE)


def header_key(name: str) -> str:
    """`E-mail 1 - Value` -> `email1value`: compare header names without case or punctuation."""
    return _NON_ALNUM.sub("", name.replace("\ufeff", "")).casefold()


@dataclass(frozen=True)
class ColumnMap:
    """Which column index holds which field; None where the file has no such column."""

    header: tuple[str, ...]
    indexes: dict[str, int] = field(default_factory=dict)
    ours: bool = False  # one of our own exports: its status, lists and times are honoured
    # We wrote it (an export, or a rejects file of any import): undo our formula neutralisation.
    # A rejects file keeps its source's columns, so a Mailchimp unsubscribe stays one.
    neutralised: bool = False

    def get(self, cells: Sequence[str], name: str) -> str:
        i = self.indexes.get(name)
        if i is None or i >= len(cells):
            return ""
        value = cells[i]
        return unneutralise(value) if self.neutralised else value

    def __contains__(self, name: str) -> bool:
        return name in self.indexes


def _chosen(header: Sequence[str], keys: list[str], field_name: str, name: str) -> int:
    """The index of the column a person named (--email-column "Contact"), or InputError."""
    for i, h in enumerate(header):
        if h.strip().casefold() == name.strip().casefold():
            return i
    if header_key(name) in keys:
        return keys.index(header_key(name))
    raise InputError(
        f"{CHOOSABLE[field_name]} {name!r} is not a column of this file: its header row has {_shown(header)}.",
        hint="Give the column's name exactly as the first row of the file writes it.",
    )


def map_columns(header: Sequence[str], chosen: dict[str, str] | None = None) -> ColumnMap:
    """Recognise the header names of Mailchimp, Google, Outlook, Excel and our own export.

    `chosen` names columns a person picked ({"email": "Contact", "name": "Patient"}); they
    win over the recognised ones.
    """
    keys = [header_key(h) for h in header]
    indexes: dict[str, int] = {}
    for field_name, aliases in ALIASES.items():
        for alias in aliases:
            if alias in keys:
                indexes[field_name] = keys.index(alias)
                break
    for field_name, name in (chosen or {}).items():
        indexes[field_name] = _chosen(header, keys, field_name, name)
        if field_name == "name":  # the chosen column is the whole name, not a first or last one
            indexes.pop("first_name", None)
            indexes.pop("last_name", None)
        if field_name == "email":
            indexes.pop("email2", None)
    if "email" not in indexes:
        # "E-mail 2 Address", "Work Email", "Email (personal)": any header naming an e-mail
        for i, k in enumerate(keys):
            if "email" in k or k.startswith("mail"):
                indexes["email"] = i
                break
    ours = {header_key(c) for c in _BACKUP_COLUMNS} <= set(keys)
    neutralised = ours or header_key(REJECT_COLUMNS[1]) in keys
    return ColumnMap(header=tuple(header), indexes=indexes, ours=ours, neutralised=neutralised)


def is_dangerous(cell: str) -> bool:
    """Would a spreadsheet run this cell as a formula (even behind leading apostrophes)?"""
    return cell.lstrip("'")[:1] in FORMULA_TRIGGERS and cell.lstrip("'") != ""


def neutralise(cell: str) -> str:
    """Prefix a formula-like cell with an apostrophe so spreadsheets show it as text."""
    return "'" + cell if is_dangerous(cell) else cell


def unneutralise(cell: str) -> str:
    """Undo `neutralise` exactly (only meaningful for files we wrote)."""
    if cell.startswith("'") and is_dangerous(cell[1:]):
        return cell[1:]
    return cell


# -- encoding ---------------------------------------------------------------------------


_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _utf8_scan(fh: IO[bytes]) -> tuple[int | None, bool]:
    """(line of the first byte that is not UTF-8 or None, whether any non-ASCII UTF-8 character was seen)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines, multibyte, bad = 1, False, None
    while chunk := fh.read(CHUNK):
        if not multibyte and _UTF8_MULTIBYTE.search(chunk):
            multibyte = True
        if bad is None:
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad = lines + chunk[: exc.start].count(b"\n")
        if bad is None:
            lines += chunk.count(b"\n")
        elif multibyte:
            break
    if bad is None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            bad = lines
    return bad, multibyte


def _has_cp1252_holes(fh: IO[bytes]) -> bool:
    while chunk := fh.read(CHUNK):
        if _CP1252_HOLES.search(chunk):
            return True
    return False


def _utf16_without_bom(head: bytes) -> str:
    """'utf-16-le' or 'utf-16-be' when every other byte is a zero (ASCII text in UTF-16), else ''."""
    if b"\x00" in head:
        even, odd = head[0::2], head[1::2]
        if odd.count(0) > len(odd) * 0.3 and even.count(0) < len(even) * 0.05:
            return "utf-16-le"
        if even.count(0) > len(even) * 0.3 and odd.count(0) < len(odd) * 0.05:
            return "utf-16-be"
    return ""


def sniff_binary(head: bytes) -> str:
    """What the first bytes of a file are when they are not text ('is a PDF document', 'looks
    like a binary file'), or '' for text in any encoding we read (UTF-16 included)."""
    if head.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _utf16_without_bom(head):
        return ""
    for magic, what in _NOT_CSV:
        if head.startswith(magic):
            return f"is {what}"
    if len(_BINARY_BYTES.findall(head)) * 20 > len(head):
        return "looks like a binary file"
    return ""


def detect_encoding(path: Path) -> str:
    """Name the codec of a CSV file: BOMs first, then UTF-16 by its zero bytes, then UTF-8, cp1252, latin-1."""
    with open(path, "rb") as fh:
        head = fh.read(SAMPLE_BYTES)
        if not head.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):
            raise InputError(f"{path} is empty: there are no rows to read.")
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        if head.startswith(b"PK\x03\x04"):
            raise InputError(
                f"{path} is an Excel workbook or another zip file, not CSV.",
                hint="In Excel choose File > Save As > CSV UTF-8, then import that file.",
            )
        if head.startswith(b"\xd0\xcf\x11\xe0"):
            raise InputError(
                f"{path} is an old Excel (.xls) workbook, not CSV.",
                hint="In Excel choose File > Save As > CSV UTF-8, then import that file.",
            )
        utf16 = _utf16_without_bom(head)
        if utf16:
            return utf16
        what = sniff_binary(head)
        if what:
            raise InputError(f"{path} {what}, not CSV text.")
        fh.seek(0)
        bad_line, utf8_seen = _utf8_scan(fh)
        if bad_line is None:
            return "utf-8"
        if b"\r" in head and b"\n" not in head:
            return "mac_roman"  # Excel for Mac's "CSV (Macintosh)": MacRoman, CR line ends
        if utf8_seen:
            # Most of it is UTF-8 and some lines are not (two exports pasted together):
            # reading it all as cp1252 would store "JosÃ©" for every UTF-8 name.
            raise InputError(
                f"{path}:{bad_line}: this line is not UTF-8 text, although other lines of the file are; "
                "reading it one way would garble the names written the other way.",
                hint="Open the file in a spreadsheet and save it again as CSV UTF-8 (or fix that line), then import it.",
            )
        fh.seek(0)
        return "latin-1" if _has_cp1252_holes(fh) else "cp1252"


# -- reading ----------------------------------------------------------------------------


def sniff_delimiter(sample: str) -> str:
    """Pick the delimiter that splits the first lines into the most consistent columns."""
    lines = sample.splitlines(keepends=True)
    if len(lines) > 1 and not sample.endswith(("\n", "\r")):
        lines = lines[:-1]  # the last line of a sample may be cut short
    text = "".join(lines[:50])
    best, best_score = ",", (0, 0, 0)
    for rank, delimiter in enumerate(DELIMITERS):
        try:
            rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        consistent = sum(1 for r in rows if len(r) == width)
        score = (consistent, width, -rank)
        if score > best_score:
            best, best_score = delimiter, score
    return best


@dataclass
class CsvFile:
    """An opened CSV export: what was detected, and its data rows as a stream."""

    path: Path
    encoding: str
    delimiter: str
    columns: ColumnMap
    headerless: bool
    _stream: IO[str]
    _reader: CsvReader
    _first: tuple[int, list[str]] | None
    _kept: list[str]  # the physical lines of the record being read (see `_tap`)

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """Yield (line number where the record starts, cells) for every non-blank record.

        Raises InputError at the end when there was no data row, or when the last record
        is a quoted value that never closes (it swallowed every line after it).
        """
        kept, found = self._kept, 0
        start, spanned = 0, ""  # the last record: where it starts, its text if it spans lines
        if self._first is not None:
            start, spanned = self._first[0], "".join(kept) if len(kept) > 1 else ""
            found += 1
            yield self._first
            self._first = None
        kept.clear()
        reader = self._reader
        line = reader.line_num
        try:
            for cells in reader:
                start, line = line + 1, reader.line_num
                spanned = "".join(kept) if len(kept) > 1 else ""
                kept.clear()
                if any(c.strip() for c in cells):
                    found += 1
                    yield start, cells
        except csv.Error as exc:
            raise InputError(f"{self.path}:{line + 1}: the CSV cannot be read: {exc}.") from None
        except UnicodeDecodeError:
            raise InputError(
                f"{self.path}:{line + 1}: a byte cannot be read as {self.encoding}.",
                hint="Try another --encoding, e.g. --encoding=latin-1 or --encoding=utf-16.",
            ) from None
        if spanned and _never_closes(spanned, self.delimiter):
            raise InputError(
                f"{self.path}:{start}: a quoted value starts on this line and never closes, "
                f"so the {line - start} lines after it would be read as part of it.",
                hint='Add the missing closing " on that line (or remove the stray one), then import again.',
            )
        if not found:
            raise InputError(f"{self.path} has a header row ({_shown(self.columns.header)}) but no rows under it.")

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> CsvFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tap(stream: IO[str], kept: list[str]) -> Iterator[str]:
    """The stream's lines, each also kept so a record can be looked at as written."""
    for line in stream:
        kept.append(line)
        yield line


def _never_closes(text: str, delimiter: str) -> bool:
    """Is this record (as written) a quoted value still open at the end of the file?"""
    # Read again with one more line: a closed record leaves that line as a record of its own.
    return list(csv.reader(io.StringIO(text + "\n\x00"), delimiter=delimiter))[-1] != ["\x00"]


def _shown(header: Sequence[str]) -> str:
    return ", ".join(repr(h) for h in header[:12]) + (", ..." if len(header) > 12 else "")


def open_csv(path: str | os.PathLike[str], encoding: str | None = None, columns: dict[str, str] | None = None) -> CsvFile:
    """Open a subscriber CSV: detect encoding and delimiter, find the header and the email column.

    `columns` are the columns a person chose by name (--email-column, --name-column).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a CSV file.")
    try:
        if encoding:
            try:
                codecs.lookup(encoding)
            except LookupError:
                raise InputError(f"Unknown encoding {encoding!r}; try utf-8, utf-16, cp1252 or latin-1.") from None
        else:
            encoding = detect_encoding(path)
        # errors="strict" only matters for an explicit --encoding: a detected one always decodes.
        stream = open(path, encoding=encoding, newline="", errors="strict")
    except FileNotFoundError:
        raise InputError(f"There is no file {path}.") from None
    except PermissionError:
        raise InputError(f"{path} cannot be read: permission denied.") from None
    try:
        return _open_stream(path, stream, encoding, columns)
    except BaseException:
        stream.close()
        raise


def _open_stream(path: Path, stream: IO[str], encoding: str, chosen: dict[str, str] | None = None) -> CsvFile:
    try:
        sample = stream.read(SAMPLE_BYTES)
    except UnicodeDecodeError:
        raise InputError(
            f"{path} cannot be read as {encoding}.",
            hint="Try another --encoding, e.g. --encoding=latin-1 or --encoding=utf-16.",
        ) from None
    if not sample.strip("\ufeff \t\r\n\x00"):
        raise InputError(f"{path} is empty: there are no rows to read.")
    stream.seek(0)
    hint = _SEP_LINE.match(sample.lstrip("\ufeff"))
    if hint:  # Excel's "sep=;" first line names the delimiter; it is not the header
        delimiter = hint.group(1)
        if delimiter in '"\r\n' or delimiter.isalnum() or delimiter == " ":
            raise InputError(
                f"{path}:1: the first line says the separator is {delimiter!r} (sep={delimiter}), which cannot separate cells.",
                hint="Remove that first line, or save the file again from the spreadsheet as CSV.",
            )
    else:
        delimiter = sniff_delimiter(sample)
    kept: list[str] = []
    reader = csv.reader(_tap(stream, kept), delimiter=delimiter)
    first: tuple[int, list[str]] | None = None
    try:
        for cells in reader:
            if hint and reader.line_num == 1:
                continue
            if any(c.strip() for c in cells):
                first = (reader.line_num, cells)
                break
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: the CSV cannot be read: {exc}.") from None
    if first is None:
        raise InputError(f"{path} is empty: there are no rows to read.")
    header = [c.replace("\ufeff", "").strip() for c in first[1]]
    columns = map_columns(header, chosen)
    if "email" in columns:
        return CsvFile(path, encoding, delimiter, columns, False, stream, reader, None, kept)
    # No header names an e-mail: a bare list of addresses, or a file we cannot use.
    for i, cell in enumerate(first[1]):
        if _LOOKS_LIKE_EMAIL.search(cell):
            columns = ColumnMap(header=(), indexes={"email": i})
            return CsvFile(path, encoding, delimiter, columns, True, stream, reader, first, kept)
    raise InputError(
        f"{path} has no email column: the header row has {_shown(header)}.",
        hint="Name the column holding the addresses: --email-column \"Contact\" (as the header row writes it).",
    )


def export_row(s: Subscriber) -> list[str]:
    """A Subscriber as a row of EXPORT_COLUMNS (lists and tags comma-joined)."""
    return [
        s.email, s.first_name, s.last_name, s.status, ",".join(s.lists), ",".join(s.tags), s.source,
        s.optin_time, s.optin_ip, s.created_at, s.updated_at, s.unsubscribed_at, s.unsubscribed_reason,
        s.consent_method, s.consent_text, s.consent_version, s.consent_url, s.consent_user_agent,
    ]


def write_csv(out: IO[str], header: Sequence[str], rows: Iterable[Sequence[str]]) -> int:
    """Write rows as CSV with every formula-like cell neutralised; returns the number of rows."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    n = 0
    for row in rows:
        writer.writerow([neutralise(c) for c in row])
        n += 1
    return n
