"""Reading real exports without options: encoding, delimiter, header names, line numbers."""

from __future__ import annotations

import importlib.util

import pytest

from mailer.csvio import detect_encoding, header_key, map_columns, open_csv, sniff_delimiter
from mailer.errors import InputError

from .conftest import DATA


def load_make_fixtures():
    spec = importlib.util.spec_from_file_location("make_fixtures", DATA / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixtures_are_exactly_what_make_fixtures_writes():
    for name, data in load_make_fixtures().build().items():
        assert (DATA / name).read_bytes() == data, f"{name} differs; run python tests/data/make_fixtures.py"


def columns_of(csv_file) -> dict[str, str]:
    """Which header each field was read from, e.g. {'email': 'Email Address'}."""
    return {k: csv_file.columns.header[i] for k, i in csv_file.columns.indexes.items()}


MAILCHIMP = {"email": "Email Address", "first_name": "First Name", "last_name": "Last Name",
             "optin_time": "OPTIN_TIME", "optin_ip": "OPTIN_IP", "tags": "TAGS"}

DETECTED = {
    # file: (encoding, delimiter, the columns read)
    "mailchimp_subscribed.csv": ("utf-8", ",", MAILCHIMP),
    "mailchimp_unsubscribed.csv": ("utf-8", ",", MAILCHIMP | {
        "unsubscribed_at": "UNSUB_TIME", "unsubscribed_reason": "UNSUB_REASON",
        "unsubscribed_reason_other": "UNSUB_REASON_OTHER"}),
    "mailchimp_cleaned.csv": ("utf-8", ",", MAILCHIMP | {"cleaned_at": "CLEAN_TIME"}),
    "google_contacts.csv": ("utf-8-sig", ",", {
        "email": "E-mail 1 - Value", "email2": "E-mail 2 - Value", "first_name": "First Name",
        "last_name": "Last Name", "tags": "Labels"}),
    "google_contacts_legacy.csv": ("utf-16", ",", {
        "email": "E-mail 1 - Value", "email2": "E-mail 2 - Value", "first_name": "Given Name",
        "last_name": "Family Name", "name": "Name",
        "tags": "Group Membership"}),
    "outlook_desktop.csv": ("cp1252", ",", {
        "email": "E-mail Address", "email2": "E-mail 2 Address", "first_name": "First Name", "last_name": "Last Name", "tags": "Categories"}),
    "outlook_com.csv": ("utf-8-sig", ",", {
        "email": "E-mail Address", "email2": "E-mail 2 Address", "first_name": "First Name", "last_name": "Last Name"}),
    "excel_utf8_semicolon.csv": ("utf-8-sig", ";", {
        "email": "Email", "first_name": "First name", "last_name": "Last name", "optin_time": "Signup date"}),
    "excel_unicode_text.txt": ("utf-16", "\t", {
        "email": "Email", "first_name": "First Name", "last_name": "Last Name"}),
    "excel_legacy_cp1252.csv": ("cp1252", ",", {
        "email": "Email", "first_name": "First Name", "last_name": "Last Name"}),
    "latin1_c1_byte.csv": ("latin-1", ",", {"email": "Email", "first_name": "First Name", "last_name": "Last Name"}),
    "website_optin.csv": ("utf-8", ",", {"email": "Email", "name": "Name", "optin_time": "Date", "optin_ip": "IP"}),
    "address_forms.csv": ("utf-8", ",", {"email": "Email", "name": "Name"}),
}


@pytest.mark.parametrize("name", DETECTED)
def test_each_export_is_recognised_without_options(name):
    encoding, delimiter, columns = DETECTED[name]
    with open_csv(DATA / name) as f:
        assert (f.encoding, f.delimiter, f.headerless) == (encoding, delimiter, False)
        assert columns_of(f) == columns
        assert not f.columns.ours and not f.columns.neutralised


def test_a_list_without_header_is_addresses_in_column_one():
    with open_csv(DATA / "no_header.txt") as f:
        assert f.headerless and f.columns.indexes == {"email": 0}
        rows = list(f.rows())
    assert rows[0] == (1, ["jane.doe@example.com"])
    assert [line for line, _ in rows] == [1, 2, 3, 4]


def starts(name: str) -> list[int]:
    with open_csv(DATA / name) as f:
        return [line for line, _ in f.rows()]


@pytest.mark.parametrize(
    "name, lines",
    [
        # Grace's postal address spans lines 2-4, Thomas's note 5-6
        ("google_contacts.csv", [2, 5, 7, 8, 9]),
        # José's note holds a CRLF: lines 2-3
        ("outlook_desktop.csv", [2, 4, 5, 6]),
        # Yuki's note holds an Alt+Enter line break: lines 4-5
        ("excel_unicode_text.txt", [2, 3, 4]),
        # Leo's notes span lines 10-11, so Nina is on 12
        ("address_forms.csv", [2, 3, 4, 5, 6, 7, 8, 9, 10, 12]),
        # CRLF inside Eve's name (3-4); a lone CR inside Ray's (5-6): editors show both as breaks
        ("control_chars.csv", [2, 3, 5, 7, 8, 9]),
        # the three ';;;;' rows Excel leaves below the data are not records
        ("excel_utf8_semicolon.csv", [2, 3, 4]),
    ],
)
def test_a_record_is_numbered_by_the_line_it_starts_on(name, lines):
    assert starts(name) == lines


def test_a_long_note_is_one_cell():
    with open_csv(DATA / "long_fields.csv") as f:
        rows = [cells for _, cells in f.rows()]
    assert len(rows[0][2]) == 2000 and len(rows[1][1]) == 2000


def test_tags_cells_are_read_as_written():
    with open_csv(DATA / "mailchimp_subscribed.csv") as f:
        cells = next(f.rows())[1]
    assert cells[f.columns.indexes["tags"]] == '"Patient","VIP"'


# -- encoding ---------------------------------------------------------------------------


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_recognised_by_its_zero_bytes(tmp_path, codec):
    path = write(tmp_path, "u16.csv", "Email\tName\r\nzoe@example.com\tZoë\r\n".encode(codec))
    assert detect_encoding(path) == codec
    with open_csv(path) as f:
        assert f.delimiter == "\t" and list(f.rows()) == [(2, ["zoe@example.com", "Zoë"])]


def test_a_nul_byte_in_a_cell_leaves_the_file_text(tmp_path):
    path = write(tmp_path, "nul.csv", b"Email,Name\nnul@example.com,Nu\x00ll\nok@example.com,Ok\n")
    assert detect_encoding(path) == "utf-8"
    with open_csv(path) as f:
        assert [cells for _, cells in f.rows()] == [["nul@example.com", "Nu\x00ll"], ["ok@example.com", "Ok"]]


def test_utf8_is_checked_beyond_the_sample(tmp_path):
    # 100 KB of ASCII, then one cp1252 byte: the whole file must be read as cp1252
    data = b"Email,Name\n" + b"a@example.com,Ann\n" * 6000 + b"z@example.com,Zo\xeb\n"
    path = write(tmp_path, "late.csv", data)
    assert detect_encoding(path) == "cp1252"
    with open_csv(path) as f:
        assert list(f.rows())[-1][1] == ["z@example.com", "Zoë"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("empty.csv", "is empty: there are no rows to read."),
        ("whitespace_only.csv", "is empty: there are no rows to read."),
        ("png_image.csv", "is a PNG image, not CSV text."),
        ("xlsx_workbook.csv", "is an Excel workbook or another zip file, not CSV."),
        ("no_email_column.csv", "has no email column: the header row has 'Name', 'Phone', 'City', 'Last visit'."),
    ],
)
def test_files_that_are_not_a_subscriber_csv_are_refused_on_open(name, message):
    with pytest.raises(InputError) as err:
        open_csv(DATA / name)
    assert str(err.value) == f"{DATA / name} {message}"


def test_random_binary_is_refused(tmp_path):
    data = bytes((i * 197 + 89) % 256 for i in range(4096))
    with pytest.raises(InputError, match="looks like a binary file, not CSV text"):
        open_csv(write(tmp_path, "blob.csv", data))


def test_a_header_without_rows_is_refused_when_read():
    with open_csv(DATA / "header_only.csv") as f, pytest.raises(InputError) as err:
        list(f.rows())
    assert "has a header row ('Email Address', 'First Name', 'Last Name'," in str(err.value)
    assert str(err.value).endswith("but no rows under it.")


def test_a_quote_that_never_closes_is_refused_at_its_line():
    with open_csv(DATA / "unbalanced_quote.csv") as f, pytest.raises(InputError) as err:
        list(f.rows())
    assert str(err.value) == (
        f"{DATA / 'unbalanced_quote.csv'}:3: a quoted value starts on this line and never closes, "
        "so the 2 lines after it would be read as part of it."
    )


def test_a_closed_multiline_value_at_the_end_is_fine(tmp_path):
    path = write(tmp_path, "end.csv", b'Email,Notes\na@example.com,"two\nlines"\n')
    with open_csv(path) as f:
        assert list(f.rows()) == [(2, ["a@example.com", "two\nlines"])]


# -- delimiter and header names ---------------------------------------------------------


@pytest.mark.parametrize(
    "sample, delimiter",
    [
        ("Email;Name;Notes\r\na@example.com;Doe, Jane;knee, back\r\n", ";"),
        ("Email,Name\na@example.com,\"Doe; Jane\"\n", ","),
        ("Email\tName\na@example.com\tJane\n", "\t"),
        ("Email|Name\na@example.com|Jane\n", "|"),
        ("a@example.com\nb@example.com\n", ","),
        # the last line of a sample may be cut short; it must not decide
        ("Email;Name\na@example.com;Jane\nb@exa", ";"),
    ],
)
def test_the_delimiter_is_sniffed(sample, delimiter):
    assert sniff_delimiter(sample) == delimiter


@pytest.mark.parametrize(
    "header, email_column",
    [
        (["E-mail 1 - Value"], "E-mail 1 - Value"),
        (["  EMAIL  "], "  EMAIL  "),
        (["e-mail"], "e-mail"),
        (["Name", "Work Email"], "Work Email"),
        (["\ufeffEmail Address"], "\ufeffEmail Address"),
        (["E-mail 2 Address", "E-mail Address"], "E-mail Address"),
    ],
)
def test_email_headers_are_compared_without_case_space_or_punctuation(header, email_column):
    columns = map_columns(header)
    assert columns.header[columns.indexes["email"]] == email_column


def test_header_key():
    assert header_key("E-mail 1 - Value") == "email1value"
    assert header_key("OPTIN_TIME") == "optintime"


def test_french_and_german_headers(tmp_path):
    from mailer.csvio import map_columns

    cols = map_columns(["Prénom", "Nom", "Courriel"])
    assert cols.indexes == {"first_name": 0, "last_name": 1, "email": 2}
    cols = map_columns(["Vorname", "Nachname", "E-Mail-Adresse"])
    assert cols.indexes == {"first_name": 0, "last_name": 1, "email": 2}
