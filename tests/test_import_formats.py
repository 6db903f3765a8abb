"""`mailer import` on what people really export: each fixture of tests/data, as a user sees it."""

from __future__ import annotations

import csv
import io
import json

import pytest

from mailer.csvio import FORMULA_TRIGGERS

from .conftest import DATA, REPO, Mailer

COUNTS = ("read", "added", "updated", "unchanged", "duplicates", "invalid", "suppressed")


def import_json(mailer, path, *options) -> tuple[dict, int]:
    result = mailer("import", path, "--json", *options)
    assert result.exit_code in (0, 1), (result.exit_code, result.stderr)
    return json.loads(result.stdout), result.exit_code


def counts(summary: dict) -> dict:
    return {k: summary[k] for k in COUNTS}


def expect(read=0, added=0, updated=0, unchanged=0, duplicates=0, invalid=0, suppressed=0) -> dict:
    return dict(read=read, added=added, updated=updated, unchanged=unchanged, duplicates=duplicates,
                invalid=invalid, suppressed=suppressed)


def people(mailer) -> dict[str, dict]:
    return {p["email"]: p for p in mailer.json("subscribers", "list")}


def exported(mailer, *options) -> str:
    result = mailer("export", *options)
    assert result.exit_code == 0, result.stderr
    return result.stdout


# -- every format: counts, names, status and tags as a user would check them -------------

FORMATS = {
    # file: (counts, {email: (first name, last name, status, tags)})
    "mailchimp_subscribed.csv": (expect(read=6, added=6), {
        "margaret.oconnor@example.com": ("Margaret", "O'Connor", "active", ["Patient", "VIP"]),
        "dong-hyun.park@example.org": ("Dong-hyun", "Park", "active", ["Patient"]),
        "zoe.laurent@example.net": ("Zoë", "Laurent", "active", ["Patient", "Migraine"]),
        "raj.patel@example.com": ("Raj", "Patel", "active", []),
        "ELLEN.BRENNAN@example.com": ("Ellen", "Brennan", "active", ["Back pain", "Patient"]),
        "samira.haddad@example.org": ("Samira", "Haddad", "active", ["Newsletter only"]),
    }),
    "mailchimp_unsubscribed.csv": (expect(read=3, added=3), {
        "harold.becker@example.com": ("Harold", "Becker", "unsubscribed", ["Patient"]),
        "lucia.ferreira@example.net": ("Lúcia", "Ferreira", "unsubscribed", []),
        "raj.patel@example.com": ("Raj", "Patel", "unsubscribed", []),
    }),
    "mailchimp_cleaned.csv": (expect(read=2, added=2), {
        "walter.nowak@example.com": ("Walter", "Nowak", "bounced", []),
        "gina.russo@example.org": ("Gina", "Russo", "bounced", ["Patient"]),
    }),
    # the phone-only contact has no address and is reported; Google's "* ..." labels are not tags
    "google_contacts.csv": (expect(read=5, added=4, invalid=1), {
        "grace.yoon@example.com": ("Grace", "Yoon", "active", ["Patients"]),
        "thomas.whitfield@example.com": ("Thomas", "Whitfield", "active", ["Patients", "VIP"]),
        "ana.souza@example.com": ("Ana", "Souza", "active", []),
        "renee.dubois@example.org": ("Renée", "Dubois", "active", ["Patients"]),
    }),
    "google_contacts_legacy.csv": (expect(read=3, added=3), {
        "helen.cho@example.com": ("Helen", "Cho", "active", ["Patients"]),
        "bjorn.olsen@example.net": ("Bjørn", "Olsen", "active", ["Patients", "Acupuncture"]),
        "marisol.vega@example.org": ("Marisol", "Vega", "active", []),
    }),
    # the Exchange (X.500) address is reported, not imported
    "outlook_desktop.csv": (expect(read=4, added=3, invalid=1), {
        "jose.nunez@example.com": ("José", "Núñez", "active", ["Patients", "VIP"]),
        "siobhan.obrien@example.org": ("Siobhán", "O’Brien", "active", ["Patients"]),
        "francois.lefevre@example.net": ("François", "Lefèvre", "active", []),
    }),
    "outlook_com.csv": (expect(read=3, added=3), {
        "lukasz.wisniewski@example.com": ("Łukasz", "Wiśniewski", "active", []),
        "chloe.martin@example.org": ("Chloé", "Martin", "active", []),
        "Mei.Chen@example.com": ("Mei", "Chen", "active", []),
    }),
    "excel_utf8_semicolon.csv": (expect(read=3, added=3), {
        "hans.mueller@example.com": ("Hans", "Müller", "active", []),
        "francoise.dupont@example.net": ("Françoise", "Dupont", "active", []),
        "soren.lund@example.org": ("Søren", "Lund", "active", []),
    }),
    "excel_unicode_text.txt": (expect(read=3, added=3), {
        "minjun.kim@example.com": ("민준", "김", "active", []),
        "eleni.papadopoulou@example.net": ("Ελένη", "Παπαδοπούλου", "active", []),
        "yuki.tanaka@example.org": ("由紀", "田中", "active", []),
    }),
    "excel_legacy_cp1252.csv": (expect(read=4, added=4), {
        "jose.garcia@example.com": ("José", "García", "active", []),
        "zoe.muller@example.net": ("Zoë", "Müller", "active", []),
        "soren.nielsen@example.org": ("Søren", "Nielsen", "active", []),
        "marco.dangelo@example.com": ("Marco", "D’Angelo", "active", []),
    }),
    # 0x8D in a note is harmless; in a first name it is a control character
    "latin1_c1_byte.csv": (expect(read=3, added=2, invalid=1), {
        "desiree.blanc@example.com": ("Désirée", "Blanc", "active", []),
        "ines.moreau@example.org": ("Inès", "Moreau", "active", []),
    }),
    "website_optin.csv": (expect(read=6, added=5, duplicates=1), {
        "jane.doe@example.com": ("Jane", "Doe", "active", []),
        "sooah.kim@example.org": ("Soo-ah", "Kim", "active", []),
        "luis.ramirez@example.net": ("Luis", "Alberto Ramírez", "active", []),
        "cher@example.com": ("Cher", "", "active", []),
        "PRIYA.SHARMA@example.com": ("priya", "sharma", "active", []),
    }),
    "no_header.txt": (expect(read=4, added=4), {
        "jane.doe@example.com": ("", "", "active", []),
        "carl.jung@example.org": ("", "", "active", []),
        "ruth.gold@example.net": ("", "", "active", []),
        "omar.haddad@example.com": ("Omar", "Haddad", "active", []),
    }),
    # JANE.DOE@EXAMPLE.COM and the punycode form of münchen.de are the same people again
    "address_forms.csv": (expect(read=10, added=8, duplicates=2), {
        "jane.doe@example.com": ("Jane", "Doe", "active", []),
        "carl.jung@example.org": ("Carl", "Jung", "active", []),
        "ruth.gold@example.net": ("Ruth", "Gold", "active", []),
        "josé@bücher.example": ("José", "Bücher", "active", []),
        "user@münchen.de": ("Max", "Mustermann", "active", []),
        "maeve.ohara@example.org": ("Maeve", "O'Hara", "active", []),
        "leo.marsh@example.com": ("Leo", "Marsh", "active", []),
        "Nina.Petrova@example.com": ("Nina", "Petrova", "active", []),
    }),
}


@pytest.mark.parametrize("name", FORMATS)
def test_each_export_imports_with_the_names_status_and_tags_it_holds(mailer, name):
    want_counts, want_people = FORMATS[name]
    summary, code = import_json(mailer, DATA / name)
    assert counts(summary) == want_counts
    assert code == (1 if want_counts["invalid"] else 0)
    got = {e: (p["first_name"], p["last_name"], p["status"], p["tags"]) for e, p in people(mailer).items()}
    assert got == want_people
    # importing the same file again changes nothing
    again, _ = import_json(mailer, DATA / name)
    assert again["added"] == again["updated"] == 0


def test_validate_says_what_it_detected(mailer):
    result = mailer("validate", DATA / "excel_unicode_text.txt")
    assert result.exit_code == 0, result.stderr
    assert "excel_unicode_text.txt: utf-16, tab-separated; email='Email'" in result.stderr
    result = mailer("validate", DATA / "outlook_desktop.csv")
    assert "outlook_desktop.csv: cp1252, comma-separated; email='E-mail Address'" in result.stderr


def test_the_bundled_sample_list(mailer):
    summary, code = import_json(mailer, REPO / "examples" / "patients.csv")
    assert code == 1
    assert counts(summary) == expect(read=50, added=46, duplicates=1, invalid=3)
    assert [(r["line"], r["value"]) for r in summary["rejects"]] == [
        (23, "maria.santos@example"), (27, "tom.bradley@@example.com"), (35, "")]
    assert [r["reason"] for r in summary["rejects"]] == [
        "The part after the @-sign is not valid. It should have a period.",
        "The part after the @-sign contains invalid characters: '@'.",
        "The email address is empty.",
    ]
    everyone = people(mailer)
    assert everyone["minji.lee@example.com"]["first_name"] == "Min-ji"
    assert everyone["joon.lim@한국.example"]["last_name"] == "Lim"
    assert everyone["jenny.park@example.com"]["optin_time"] == "2023-07-30T08:02:58Z"  # the first sign-up


# -- consent facts ----------------------------------------------------------------------


def test_mailchimp_keeps_optin_time_and_ip(mailer):
    import_json(mailer, DATA / "mailchimp_subscribed.csv")
    margaret = people(mailer)["margaret.oconnor@example.com"]
    assert (margaret["optin_time"], margaret["optin_ip"]) == ("2024-03-02T14:05:11Z", "203.0.113.24")
    assert people(mailer)["raj.patel@example.com"]["optin_time"] == ""  # Mailchimp had none


def test_the_website_export_gives_the_optin_time_and_ip(mailer):
    import_json(mailer, DATA / "website_optin.csv")
    everyone = people(mailer)
    assert (everyone["jane.doe@example.com"]["optin_time"], everyone["jane.doe@example.com"]["optin_ip"]) == (
        "2025-01-06T08:14:22Z", "198.51.100.23")
    assert everyone["sooah.kim@example.org"]["optin_ip"] == "2001:db8::1c"
    assert everyone["cher@example.com"]["optin_ip"] == ""


def test_excel_european_dates_are_read(mailer):
    import_json(mailer, DATA / "excel_utf8_semicolon.csv")
    assert people(mailer)["hans.mueller@example.com"]["optin_time"] == "2025-03-14T09:12:00Z"


# -- Mailchimp unsubscribed and cleaned: never active again ------------------------------


def test_mailchimp_unsubscribed_keep_their_time_and_reason(mailer):
    import_json(mailer, DATA / "mailchimp_unsubscribed.csv")
    everyone = people(mailer)
    harold = everyone["harold.becker@example.com"]
    assert (harold["unsubscribed_at"], harold["unsubscribed_reason"]) == (
        "2025-02-11T18:22:03Z", "I no longer want to receive these emails")
    # "Other": the person's own words are the reason
    assert everyone["lucia.ferreira@example.net"]["unsubscribed_reason"] == "Moved to Portland, OR"
    assert exported(mailer, "--status", "active").splitlines()[1:] == []


def test_an_unsubscribe_in_mailchimp_reaches_people_imported_before(mailer):
    import_json(mailer, DATA / "mailchimp_subscribed.csv")
    summary, _ = import_json(mailer, DATA / "mailchimp_unsubscribed.csv")
    assert counts(summary) == expect(read=3, added=2, updated=1)
    raj = people(mailer)["raj.patel@example.com"]
    assert (raj["status"], raj["unsubscribed_reason"]) == ("unsubscribed", "N/A (Unsubscribed by admin)")
    # the old subscribed export, imported again, does not bring him back
    summary, _ = import_json(mailer, DATA / "mailchimp_subscribed.csv")
    assert counts(summary) == expect(read=6, unchanged=5, suppressed=1)
    assert people(mailer)["raj.patel@example.com"]["status"] == "unsubscribed"


def test_mailchimp_cleaned_are_bounced_at_their_clean_time(mailer):
    import_json(mailer, DATA / "mailchimp_cleaned.csv")
    walter = people(mailer)["walter.nowak@example.com"]
    assert (walter["status"], walter["unsubscribed_at"]) == ("bounced", "2024-09-30T12:00:01Z")


# -- rows that are reported with their line ---------------------------------------------


def rejects(summary) -> list[tuple[int, str]]:
    return [(r["line"], r["reason"]) for r in summary["rejects"]]


def test_line_breaks_and_nul_bytes_are_rejected_with_their_line(mailer):
    summary, code = import_json(mailer, DATA / "control_chars.csv")
    assert code == 1
    assert counts(summary) == expect(read=6, added=2, invalid=4)
    assert rejects(summary) == [
        (3, "The first name contains a line break or another control character."),
        (5, "The last name contains a line break or another control character."),
        (7, "The first name contains a line break or another control character."),
        (8, "The email address contains a line break or another control character."),
    ]
    assert summary["rejects"][0]["value"] == "eve@example.com"
    assert set(people(mailer)) == {"ok.before@example.com", "ok.after@example.com"}


def test_the_human_summary_lists_each_rejected_row_by_line(mailer):
    result = mailer("import", DATA / "control_chars.csv")
    assert result.exit_code == 1
    assert "Bcc" not in result.stdout  # the line, the address and why; not the injected name
    assert "3\teve@example.com\tThe first name contains a line break" in result.stdout


def test_google_rows_without_address_are_reported_after_multiline_cells(mailer):
    summary, _ = import_json(mailer, DATA / "google_contacts.csv")
    assert rejects(summary) == [(8, "The email address is empty.")]


def test_an_exchange_address_from_outlook_is_reported(mailer):
    summary, _ = import_json(mailer, DATA / "outlook_desktop.csv")
    assert rejects(summary) == [(6, "An email address must have an @-sign.")]
    assert summary["rejects"][0]["value"].startswith("/o=ExchangeLabs/")


def test_a_control_byte_in_a_latin1_name_is_reported(mailer):
    summary, _ = import_json(mailer, DATA / "latin1_c1_byte.csv")
    assert rejects(summary) == [(4, "The first name contains a line break or another control character.")]


def test_a_2000_character_note_is_fine_but_a_2000_character_name_is_not(mailer):
    summary, code = import_json(mailer, DATA / "long_fields.csv")
    assert (code, counts(summary)) == (1, expect(read=3, added=2, invalid=1))
    assert rejects(summary) == [(3, "The name is 2000 characters long; at most 200 are allowed.")]
    assert people(mailer)["long.notes@example.com"]["first_name"] == "Nora"


def test_rows_with_too_few_cells_import_and_with_too_many_are_reported(mailer):
    summary, _ = import_json(mailer, DATA / "ragged_rows.csv")
    assert counts(summary) == expect(read=4, added=3, invalid=1)
    assert rejects(summary) == [
        (4, "The row has 5 cells but the header has 4; a value holding the separator must be in double quotes.")]
    everyone = people(mailer)
    assert (everyone["ann.short@example.com"]["first_name"], everyone["ann.short@example.com"]["last_name"]) == (
        "Ann", "")
    assert everyone["dina.fox@example.com"]["last_name"] == "Fox"  # empty extra cells are harmless


# -- files that cannot be imported: exit 2, one sentence, nothing changed -------------------

MEAN = {
    "empty.csv": "empty.csv is empty: there are no rows to read.",
    "whitespace_only.csv": "whitespace_only.csv is empty: there are no rows to read.",
    "png_image.csv": "png_image.csv is a PNG image, not CSV text.",
    "xlsx_workbook.csv": "xlsx_workbook.csv is an Excel workbook or another zip file, not CSV.",
    "header_only.csv": "header_only.csv has a header row ('Email Address', 'First Name', 'Last Name', 'Address', "
    "'Phone Number', 'MEMBER_RATING', 'OPTIN_TIME', 'OPTIN_IP', 'CONFIRM_TIME', 'CONFIRM_IP', 'LATITUDE', "
    "'LONGITUDE', ...) but no rows under it.",
    "no_email_column.csv": "no_email_column.csv has no email column: the header row has "
    "'Name', 'Phone', 'City', 'Last visit'.",
    "unbalanced_quote.csv": "unbalanced_quote.csv:3: a quoted value starts on this line and never closes, "
    "so the 2 lines after it would be read as part of it.",
}


@pytest.mark.parametrize("name", MEAN)
@pytest.mark.parametrize("command", [("import",), ("import", "--dry-run"), ("validate",)])
def test_a_file_that_cannot_be_imported_exits_2_with_one_sentence_and_changes_nothing(
    mailer, tmp_path, name, command
):
    import_json(mailer, DATA / "website_optin.csv")
    before = exported(mailer)
    out = tmp_path / "out"
    out.mkdir()
    result = mailer(*command, DATA / name, "--json", "--rejects", out / "rejects.csv")
    assert result.exit_code == 2
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {DATA}/{MEAN[name]}"]
    assert "Traceback" not in result.stderr
    assert exported(mailer) == before
    assert list(out.iterdir()) == []  # no rejects file, and no half-written temporary one


# -- spreadsheet formulas are data --------------------------------------------------------

FORMULAS = {
    "formula@example.com": ('=HYPERLINK("http://evil.example","click")', ""),
    "plus@example.com": ("+Anna", "Lee"),
    "minus@example.com": ("-Ben", "Ross"),
    "at@example.com": ("@carla", "Diaz"),
}


def test_formula_names_are_kept_as_text_and_neutralised_on_export(mailer, tmp_path, clock):
    summary, code = import_json(mailer, DATA / "formula_names.csv")
    assert (code, summary["added"]) == (0, 4)
    assert {e: (p["first_name"], p["last_name"]) for e, p in people(mailer).items()} == FORMULAS
    text = exported(mailer)
    cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
    assert "'=HYPERLINK(\"http://evil.example\",\"click\")" in cells
    assert {"'+Anna", "'-Ben", "'@carla"} <= set(cells)
    assert not [c for c in cells if c[:1] in FORMULA_TRIGGERS]  # a spreadsheet runs none of them
    # ... and a backup imported elsewhere gives back the names exactly
    backup = tmp_path / "backup.csv"
    assert mailer("export", "-o", backup).exit_code == 0
    other = Mailer(tmp_path / "other", clock)
    assert other("init", "--example").exit_code == 0
    assert other("import", backup).exit_code == 0
    assert {e: (p["first_name"], p["last_name"]) for e, p in people(other).items()} == FORMULAS
    assert exported(other) == text


# -- --rejects: a CSV that, once fixed, imports ---------------------------------------------


def read_rejects(path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    return rows[0], rows[1:]


def write_rejects(path, header, rows) -> None:
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        csv.writer(fh, lineterminator="\r\n").writerows([header, *rows])


def test_the_rejects_of_the_sample_list_can_be_fixed_and_imported(mailer, tmp_path):
    rejects_file = tmp_path / "rejects.csv"
    summary, _ = import_json(mailer, REPO / "examples" / "patients.csv", "--rejects", rejects_file)
    header, rows = read_rejects(rejects_file)
    assert header == ["Date", "Name", "Email", "IP", "reject_line", "reject_reason"]
    assert [(r[1], r[2], r[4]) for r in rows] == [
        ("Maria Santos", "maria.santos@example", "23"),
        ("Tom Bradley", "tom.bradley@@example.com", "27"),
        ("Patricia Walsh", "", "35"),
    ]
    fixes = {"Maria Santos": "maria.santos@example.com", "Tom Bradley": "tom.bradley@example.com",
             "Patricia Walsh": "patricia.walsh@example.org"}
    write_rejects(rejects_file, header, [[r[0], r[1], fixes[r[1]], *r[3:]] for r in rows])
    summary, code = import_json(mailer, rejects_file)
    assert (code, counts(summary)) == (0, expect(read=3, added=3))
    maria = people(mailer)["maria.santos@example.com"]
    assert (maria["first_name"], maria["optin_time"], maria["optin_ip"]) == (
        "Maria", "2024-03-14T12:59:34Z", "203.0.113.99")


def test_a_fixed_mailchimp_unsubscribe_stays_unsubscribed(mailer, tmp_path):
    broken = tmp_path / "unsubscribed.csv"
    original = (DATA / "mailchimp_unsubscribed.csv").read_bytes()
    broken.write_bytes(original.replace(b"harold.becker@example.com", b"harold.becker@example"))
    rejects_file = tmp_path / "rejects.csv"
    summary, _ = import_json(mailer, broken, "--rejects", rejects_file)
    assert counts(summary) == expect(read=3, added=2, invalid=1)
    header, rows = read_rejects(rejects_file)
    rows[0][0] = "harold.becker@example.com"
    write_rejects(rejects_file, header, rows)
    summary, _ = import_json(mailer, rejects_file)
    assert counts(summary) == expect(read=1, added=1)
    harold = people(mailer)["harold.becker@example.com"]
    assert (harold["status"], harold["unsubscribed_at"]) == ("unsubscribed", "2025-02-11T18:22:03Z")


def test_a_rejected_formula_name_comes_back_from_the_rejects_file_as_it_was(mailer, tmp_path):
    broken = tmp_path / "formulas.csv"
    broken.write_bytes((DATA / "formula_names.csv").read_bytes().replace(b"formula@example.com", b"formula@"))
    rejects_file = tmp_path / "rejects.csv"
    import_json(mailer, broken, "--rejects", rejects_file)
    header, rows = read_rejects(rejects_file)
    assert rows == [["formula@", "'=HYPERLINK(\"http://evil.example\",\"click\")", "2",
                     "There must be something after the @-sign."]]
    rows[0][0] = "formula@example.com"
    write_rejects(rejects_file, header, rows)
    summary, _ = import_json(mailer, rejects_file)
    assert summary["added"] == 1
    assert people(mailer)["formula@example.com"]["first_name"] == '=HYPERLINK("http://evil.example","click")'


def test_a_bidirectional_override_in_a_name_is_refused(mailer, tmp_path):
    f = tmp_path / "rtl.csv"
    f.write_text("email,first name\nann@example.com,Ann\u202egpj.exe\nbob@example.com,Bob\n", encoding="utf-8")
    result = mailer("import", f, "--json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 1 and doc["added"] == 1
    assert doc["rejects"][0]["line"] == 2 and "control character" in doc["rejects"][0]["reason"]
