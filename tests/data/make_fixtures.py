"""Write the real-format CSV fixtures of tests/data, byte for byte as each program writes them.

Run `python tests/data/make_fixtures.py` to regenerate them; the generated files are
committed, and tests/test_csvio.py checks that they still match this script.

Each builder below says which program writes that format and how: its encoding, BOM,
line ending, delimiter and quoting rule. Every address is at a reserved or example
domain (example.com/.org/.net, *.example) or is one the issue names; no real people.
"""

from __future__ import annotations

import re
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).parent

# -- how programs quote a cell ----------------------------------------------------------


def php_fputcsv(cells: Sequence[str]) -> str:
    """Mailchimp (PHP fputcsv): quote a cell holding a comma, quote, space, tab or line break."""
    out = []
    for c in cells:
        if any(ch in c for ch in ',"\t\r\n '):
            c = '"' + c.replace('"', '""') + '"'
        out.append(c)
    return ",".join(out)


def minimal(cells: Sequence[str], sep: str = ",") -> str:
    """Excel, Google, Outlook.com: quote only a cell holding the separator, a quote or a line break."""
    out = []
    for c in cells:
        if any(ch in c for ch in (sep, '"', "\r", "\n")):
            c = '"' + c.replace('"', '""') + '"'
        out.append(c)
    return sep.join(out)


def quote_all(cells: Sequence[str]) -> str:
    """Outlook desktop: every cell quoted, empty ones too."""
    return ",".join('"' + c.replace('"', '""') + '"' for c in cells)


def lines(rows: Sequence[str], eol: str) -> str:
    return "".join(r + eol for r in rows)


# -- Mailchimp --------------------------------------------------------------------------
# Audience > Export audience gives a zip of three files: subscribed, unsubscribed and
# cleaned members. UTF-8 without BOM, LF, PHP quoting; TAGS cells list each tag in
# double quotes ("Patient","VIP"), which PHP then quotes again. Times are UTC.

MC_HEAD = ["Email Address", "First Name", "Last Name", "Address", "Phone Number", "MEMBER_RATING",
           "OPTIN_TIME", "OPTIN_IP", "CONFIRM_TIME", "CONFIRM_IP", "LATITUDE", "LONGITUDE", "GMTOFF",
           "DSTOFF", "TIMEZONE", "CC", "REGION"]
MC_TAIL = ["LEID", "EUID", "NOTES", "TAGS"]
MC_GEO = ["40.9734000", "-73.9615000", "-5", "-4", "America/New_York", "US", "NJ"]


def _mc_person(email, first, last, address, phone, rating, optin, optin_ip, confirm, confirm_ip):
    return [email, first, last, address, phone, rating, optin, optin_ip, confirm, confirm_ip, *MC_GEO]


def mailchimp_subscribed() -> bytes:
    head = MC_HEAD + ["LAST_CHANGED"] + MC_TAIL
    rows = [
        _mc_person("margaret.oconnor@example.com", "Margaret", "O'Connor", "12 Piermont Rd  Closter NJ 07624 US",
                   "(201) 555-0134", "4", "2024-03-02 14:05:11", "203.0.113.24", "2024-03-02 14:06:40",
                   "203.0.113.24")
        + ["2025-01-10 09:00:00", "112233401", "a1b2c3d4e5", "", '"Patient","VIP"'],
        _mc_person("dong-hyun.park@example.org", "Dong-hyun", "Park", "", "", "3", "2024-05-17 22:41:09",
                   "198.51.100.61", "2024-05-17 22:43:30", "198.51.100.61")
        + ["2024-05-17 22:43:30", "112233402", "b2c3d4e5f6", "", '"Patient"'],
        _mc_person("zoe.laurent@example.net", "Zoë", "Laurent", "", "(201) 555-0178", "5", "2024-06-01 11:00:00",
                   "2001:db8::2f", "2024-06-01 11:02:13", "2001:db8::2f")
        + ["2024-11-02 16:20:00", "112233403", "c3d4e5f6a7", "Prefers Tuesday mornings, not Mondays",
           '"Patient","Migraine"'],
        # added by the practice in Mailchimp itself: no opt-in time or IP, only a confirm time
        _mc_person("raj.patel@example.com", "Raj", "Patel", "", "", "2", "", "", "2023-11-20 10:00:00", "")
        + ["2023-11-20 10:00:00", "112233404", "d4e5f6a7b8", "", ""],
        _mc_person("ELLEN.BRENNAN@EXAMPLE.COM", "Ellen", "Brennan", "", "", "2", "2025-01-08 08:30:45",
                   "192.0.2.140", "2025-01-08 08:31:02", "192.0.2.140")
        + ["2025-01-08 08:31:02", "112233405", "e5f6a7b8c9", "", '"Back pain","Patient"'],
        _mc_person("samira.haddad@example.org", "Samira", "Haddad", "", "", "2", "2025-02-14 19:12:00",
                   "198.51.100.9", "2025-02-14 19:15:27", "198.51.100.9")
        + ["2025-02-14 19:15:27", "112233406", "f6a7b8c9d0", "", '"Newsletter only"'],
    ]
    return lines([php_fputcsv(head)] + [php_fputcsv(r) for r in rows], "\n").encode("utf-8")


def mailchimp_unsubscribed() -> bytes:
    head = MC_HEAD + ["UNSUB_TIME", "UNSUB_CAMPAIGN_TITLE", "UNSUB_CAMPAIGN_ID", "UNSUB_REASON",
                      "UNSUB_REASON_OTHER"] + MC_TAIL
    rows = [
        _mc_person("harold.becker@example.com", "Harold", "Becker", "", "", "1", "2023-04-12 13:00:00",
                   "203.0.113.77", "2023-04-12 13:01:40", "203.0.113.77")
        + ["2025-02-11 18:22:03", "February Specials: 20% off cupping", "8f3e2a1b9c",
           "I no longer want to receive these emails", "", "112233410", "0a1b2c3d4e", "", '"Patient"'],
        _mc_person("lucia.ferreira@example.net", "Lúcia", "Ferreira", "", "", "2", "2024-01-30 09:45:00",
                   "198.51.100.200", "2024-01-30 09:46:10", "198.51.100.200")
        + ["2025-04-03 07:45:59", "Spring news", "1c2d3e4f5a", "Other", "Moved to Portland, OR",
           "112233411", "1b2c3d4e5f", "", ""],
        # also in mailchimp_subscribed.csv: an earlier export had him subscribed
        _mc_person("raj.patel@example.com", "Raj", "Patel", "", "", "2", "", "", "2023-11-20 10:00:00", "")
        + ["2025-03-01 12:00:00", "", "", "N/A (Unsubscribed by admin)", "", "112233404", "d4e5f6a7b8", "", ""],
    ]
    return lines([php_fputcsv(head)] + [php_fputcsv(r) for r in rows], "\n").encode("utf-8")


def mailchimp_cleaned() -> bytes:
    head = MC_HEAD + ["CLEAN_TIME", "CLEAN_CAMPAIGN_TITLE", "CLEAN_CAMPAIGN_ID"] + MC_TAIL
    rows = [
        _mc_person("walter.nowak@example.com", "Walter", "Nowak", "", "", "1", "2022-10-02 10:10:10",
                   "192.0.2.33", "2022-10-02 10:11:00", "192.0.2.33")
        + ["2024-09-30 12:00:01", "September News", "7e8f9a0b1c", "112233420", "2c3d4e5f6a", "", ""],
        _mc_person("gina.russo@example.org", "Gina", "Russo", "", "", "1", "2023-02-20 15:30:00",
                   "203.0.113.5", "2023-02-20 15:31:00", "203.0.113.5")
        + ["2024-12-01 06:00:00", "Holiday Specials", "9a0b1c2d3e", "112233421", "3d4e5f6a7b", "", '"Patient"'],
    ]
    return lines([php_fputcsv(head)] + [php_fputcsv(r) for r in rows], "\n").encode("utf-8")


# -- Google Contacts --------------------------------------------------------------------
# contacts.google.com > Export > "Google CSV": UTF-8 with BOM, LF, minimal quoting.
# Labels and several values of one kind share a cell, joined by " ::: "; Google's own
# labels start with "* ". A multi-line postal address or note stays in one quoted cell.

GOOGLE_HEAD = ["First Name", "Middle Name", "Last Name", "Phonetic First Name", "Phonetic Middle Name",
               "Phonetic Last Name", "Name Prefix", "Name Suffix", "Nickname", "File As", "Organization Name",
               "Organization Title", "Organization Department", "Birthday", "Notes", "Photo", "Labels",
               "E-mail 1 - Label", "E-mail 1 - Value", "E-mail 2 - Label", "E-mail 2 - Value", "Phone 1 - Label",
               "Phone 1 - Value", "Address 1 - Label", "Address 1 - Formatted", "Address 1 - Street",
               "Address 1 - City", "Address 1 - PO Box", "Address 1 - Region", "Address 1 - Postal Code",
               "Address 1 - Country", "Address 1 - Extended Address"]


def _row(head: Sequence[str], **values: str) -> list[str]:
    """A row of `head` with the named cells filled (keys are header names with _ for spaces)."""
    cells = dict.fromkeys(head, "")
    for key, value in values.items():
        name = next(h for h in head if _ident(h) == key)
        cells[name] = value
    return [cells[h] for h in head]


def _ident(header: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", header).strip("_")


def google_contacts() -> bytes:
    h = GOOGLE_HEAD
    rows = [
        _row(h, First_Name="Grace", Last_Name="Yoon", File_As="Yoon, Grace", Labels="* myContacts ::: Patients",
             E_mail_1_Label="* Home", E_mail_1_Value="grace.yoon@example.com", Phone_1_Label="Mobile",
             Phone_1_Value="+1 201-555-0147", Address_1_Label="Home",
             Address_1_Formatted="5 Herbert Ave\nCloster, NJ 07624\nUS", Address_1_Street="5 Herbert Ave",
             Address_1_City="Closter", Address_1_Region="NJ", Address_1_Postal_Code="07624", Address_1_Country="US"),
        # two addresses under one label share a cell, as Google writes them
        _row(h, First_Name="Thomas", Middle_Name="J.", Last_Name="Whitfield",
             Notes="Referred by Dr. Alvarez.\nPrefers email over phone.", Labels="Patients ::: VIP ::: * myContacts",
             E_mail_1_Label="* Work", E_mail_1_Value="thomas.whitfield@example.com ::: tom.whitfield@example.org",
             E_mail_2_Label="Home", E_mail_2_Value="tw@example.net"),
        _row(h, First_Name="Ana", Last_Name="Souza", Labels="* starred ::: * myContacts",
             E_mail_1_Label="* ", E_mail_1_Value="ana.souza@example.com"),
        # a phone-only contact: every address book has some
        _row(h, First_Name="Closter Pharmacy", Labels="* myContacts", Phone_1_Label="Work",
             Phone_1_Value="(201) 555-0100"),
        _row(h, First_Name="Renée", Last_Name="Dubois", Labels="Patients ::: * myContacts",
             E_mail_1_Label="* Home", E_mail_1_Value="renee.dubois@example.org"),
    ]
    text = lines([minimal(h)] + [minimal(r) for r in rows], "\n")
    return b"\xef\xbb\xbf" + text.encode("utf-8")


GOOGLE_OLD_HEAD = ["Name", "Given Name", "Additional Name", "Family Name", "Yomi Name", "Given Name Yomi",
                   "Additional Name Yomi", "Family Name Yomi", "Name Prefix", "Name Suffix", "Initials", "Nickname",
                   "Short Name", "Maiden Name", "Birthday", "Gender", "Location", "Billing Information",
                   "Directory Server", "Mileage", "Occupation", "Hobby", "Sensitivity", "Priority", "Subject",
                   "Notes", "Language", "Photo", "Group Membership", "E-mail 1 - Type", "E-mail 1 - Value",
                   "E-mail 2 - Type", "E-mail 2 - Value", "Phone 1 - Type", "Phone 1 - Value"]


def google_contacts_legacy() -> bytes:
    """The older Gmail "Google CSV": UTF-16 little-endian with BOM, comma-separated, CRLF."""
    h = GOOGLE_OLD_HEAD
    rows = [
        _row(h, Name="Helen Cho", Given_Name="Helen", Family_Name="Cho", Group_Membership="* My Contacts ::: Patients",
             E_mail_1_Type="* Home", E_mail_1_Value="helen.cho@example.com", Phone_1_Type="Mobile",
             Phone_1_Value="201-555-0163"),
        _row(h, Name="Bjørn Olsen", Given_Name="Bjørn", Family_Name="Olsen",
             Group_Membership="* My Contacts ::: Patients ::: Acupuncture", E_mail_1_Type="* Other",
             E_mail_1_Value="bjorn.olsen@example.net", E_mail_2_Type="Work", E_mail_2_Value="bjorn@olsen.example"),
        _row(h, Name="Marisol Vega", Given_Name="Marisol", Family_Name="Vega", Group_Membership="* My Contacts",
             E_mail_1_Type="* Home", E_mail_1_Value="marisol.vega@example.org"),
    ]
    text = lines([minimal(h)] + [minimal(r) for r in rows], "\r\n")
    return "\ufeff".encode("utf-16-le") + text.encode("utf-16-le")


# -- Outlook ----------------------------------------------------------------------------

OUTLOOK_HEAD = ["Title", "First Name", "Middle Name", "Last Name", "Suffix", "Company", "Department", "Job Title",
                "Business Street", "Business Street 2", "Business Street 3", "Business City", "Business State",
                "Business Postal Code", "Business Country/Region", "Home Street", "Home Street 2", "Home Street 3",
                "Home City", "Home State", "Home Postal Code", "Home Country/Region", "Other Street",
                "Other Street 2", "Other Street 3", "Other City", "Other State", "Other Postal Code",
                "Other Country/Region", "Assistant's Phone", "Business Fax", "Business Phone", "Business Phone 2",
                "Callback", "Car Phone", "Company Main Phone", "Home Fax", "Home Phone", "Home Phone 2", "ISDN",
                "Mobile Phone", "Other Fax", "Other Phone", "Pager", "Primary Phone", "Radio Phone",
                "TTY/TDD Phone", "Telex", "Account", "Anniversary", "Assistant's Name", "Billing Information",
                "Birthday", "Business Address PO Box", "Categories", "Children", "Directory Server",
                "E-mail Address", "E-mail Type", "E-mail Display Name", "E-mail 2 Address", "E-mail 2 Type",
                "E-mail 2 Display Name", "E-mail 3 Address", "E-mail 3 Type", "E-mail 3 Display Name", "Gender",
                "Government ID Number", "Hobby", "Home Address PO Box", "Initials", "Internet Free Busy",
                "Keywords", "Language", "Location", "Manager's Name", "Mileage", "Notes", "Office Location",
                "Organizational ID Number", "Other Address PO Box", "Priority", "Private", "Profession",
                "Referred By", "Sensitivity", "Spouse", "User 1", "User 2", "User 3", "User 4", "Web Page"]
OUTLOOK_DEFAULTS = {"Anniversary": "0/0/00", "Birthday": "0/0/00", "Gender": "Unspecified", "Priority": "Normal",
                    "Private": "False", "Sensitivity": "Normal"}


def _outlook_row(**values: str) -> list[str]:
    row = _row(OUTLOOK_HEAD, **values)
    return [OUTLOOK_DEFAULTS.get(h, "") if not v else v for h, v in zip(OUTLOOK_HEAD, row)]


def outlook_desktop() -> bytes:
    """Outlook for Windows, File > Import/Export > Comma Separated Values: ANSI (cp1252), all quoted, CRLF."""
    rows = [
        _outlook_row(First_Name="José", Last_Name="Núñez", Home_City="Closter", Home_State="NJ",
                     Mobile_Phone="(201) 555-0111", Categories="Patients;VIP", E_mail_Address="jose.nunez@example.com",
                     E_mail_Type="SMTP", E_mail_Display_Name="José Núñez (jose.nunez@example.com)", Initials="J.N.",
                     Notes="Prefers afternoon appointments.\r\nAllergic to latex."),
        _outlook_row(First_Name="Siobhán", Last_Name="O’Brien", Categories="Patients",
                     E_mail_Address="siobhan.obrien@example.org", E_mail_Type="SMTP",
                     E_mail_Display_Name="Siobhán O’Brien (siobhan.obrien@example.org)", Initials="S.O."),
        _outlook_row(First_Name="François", Last_Name="Lefèvre", E_mail_Address="francois.lefevre@example.net",
                     E_mail_Type="SMTP", E_mail_Display_Name="François Lefèvre (francois.lefevre@example.net)",
                     E_mail_2_Address="f.lefevre@example.com", E_mail_2_Type="SMTP",
                     E_mail_2_Display_Name="François Lefèvre (f.lefevre@example.com)", Initials="F.L."),
        # a colleague from the practice's Exchange directory: Outlook writes an X.500 address, not SMTP
        _outlook_row(First_Name="Dana", Last_Name="Whitaker", Company="Closter Acupuncture",
                     E_mail_Address="/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
                                    "/cn=Recipients/cn=3f5a0c1e9b2d4e6f-dana.whita",
                     E_mail_Type="EX", E_mail_Display_Name="Dana Whitaker", Initials="D.W."),
    ]
    text = lines([quote_all(OUTLOOK_HEAD)] + [quote_all(r) for r in rows], "\r\n")
    return text.encode("cp1252")


OUTLOOK_COM_HEAD = ["First Name", "Middle Name", "Last Name", "Title", "Suffix", "Nickname", "Given Yomi",
                    "Surname Yomi", "E-mail Address", "E-mail 2 Address", "E-mail 3 Address", "Home Phone",
                    "Home Phone 2", "Business Phone", "Business Phone 2", "Mobile Phone", "Car Phone", "Other Phone",
                    "Primary Phone", "Pager", "Business Fax", "Home Fax", "Other Fax", "Company Main Phone",
                    "Callback", "Radio Phone", "Telex", "TTY/TDD Phone", "IMAddress", "Job Title", "Department",
                    "Company", "Office Location", "Manager's Name", "Assistant's Name", "Assistant's Phone",
                    "Company Yomi", "Business Street", "Business City", "Business State", "Business Postal Code",
                    "Business Country/Region", "Home Street", "Home City", "Home State", "Home Postal Code",
                    "Home Country/Region", "Other Street", "Other City", "Other State", "Other Postal Code",
                    "Other Country/Region", "Personal Web Page", "Spouse", "Schools", "Hobby", "Location",
                    "Web Page", "Birthday", "Anniversary", "Notes"]


def outlook_com() -> bytes:
    """Outlook.com (outlook.live.com/people > Manage > Export contacts): UTF-8 with BOM, CRLF, minimal quoting."""
    h = OUTLOOK_COM_HEAD
    rows = [
        _row(h, First_Name="Łukasz", Last_Name="Wiśniewski", E_mail_Address="lukasz.wisniewski@example.com",
             Mobile_Phone="+1 201 555 0190"),
        _row(h, First_Name="Chloé", Last_Name="Martin", E_mail_Address="chloe.martin@example.org",
             E_mail_2_Address="chloe@martin.example", Home_Street="30 Durie Ave", Home_City="Closter",
             Home_State="NJ", Home_Postal_Code="07624", Notes="Acupuncture for TMJ, started March"),
        _row(h, First_Name="Mei", Last_Name="Chen", E_mail_Address="Mei.Chen@Example.COM"),
    ]
    text = lines([minimal(h)] + [minimal(r) for r in rows], "\r\n")
    return b"\xef\xbb\xbf" + text.encode("utf-8")


# -- Excel ------------------------------------------------------------------------------


def excel_utf8_semicolon() -> bytes:
    """Excel "CSV UTF-8" on a European-locale Windows: BOM, ';' (the list separator), CRLF.

    Excel quotes only cells holding ';', '"' or a line break, and writes a row of empty
    cells (';;;;') for every formatted row below the data.
    """
    head = ["Email", "First name", "Last name", "Signup date", "Notes"]
    rows = [
        ["hans.mueller@example.com", "Hans", "Müller", "14.03.2025 09:12", "Knie; Rücken"],
        ["francoise.dupont@example.net", "Françoise", "Dupont", "02.04.2025 17:40", ""],
        ["soren.lund@example.org", "Søren", "Lund", "28.04.2025 08:05", "Nacken, Schulter"],
    ] + [[""] * 5] * 3
    text = lines([minimal(head, ";")] + [minimal(r, ";") for r in rows], "\r\n")
    return b"\xef\xbb\xbf" + text.encode("utf-8")


def excel_unicode_text() -> bytes:
    """Excel "Unicode Text (*.txt)": UTF-16 LE with BOM, tab-separated, CRLF.

    A line break typed in a cell (Alt+Enter) is a bare LF inside a quoted cell.
    """
    head = ["Email", "First Name", "Last Name", "Notes"]
    rows = [
        ["minjun.kim@example.com", "민준", "김", 'Referred by "Grace"'],
        ["eleni.papadopoulou@example.net", "Ελένη", "Παπαδοπούλου", ""],
        ["yuki.tanaka@example.org", "由紀", "田中", "Neck pain\nprefers Saturdays"],
    ]
    text = lines([minimal(head, "\t")] + [minimal(r, "\t") for r in rows], "\r\n")
    return "\ufeff".encode("utf-16-le") + text.encode("utf-16-le")


def excel_legacy_cp1252() -> bytes:
    """Excel "CSV (Comma delimited)" on US Windows: ANSI (cp1252), no BOM, CRLF.

    Word-style typography pasted into cells arrives as cp1252's 0x93/0x94 (curly quotes),
    0x92 (apostrophe) and 0x96 (en dash); none of them is an ASCII quote, so Excel does not
    quote those cells.
    """
    head = ["Email", "First Name", "Last Name", "Notes"]
    rows = [
        ["jose.garcia@example.com", "José", "García", "Prefers “quiet room” – no music"],
        ["zoe.muller@example.net", "Zoë", "Müller", ""],
        ["soren.nielsen@example.org", "Søren", "Nielsen", "Back pain, left side"],
        ["marco.dangelo@example.com", "Marco", "D’Angelo", "Plantar fasciitis – 6 sessions"],
    ]
    return lines([minimal(head)] + [minimal(r) for r in rows], "\r\n").encode("cp1252")


def latin1_c1_byte() -> bytes:
    """An ISO-8859-1 export (an old practice-management system) with byte 0x8D, which cp1252 leaves undefined.

    The stray byte sits in a notes cell on one row (nothing reads it) and in a first name on
    another (a control character there is rejected).
    """
    head = ["Email", "First Name", "Last Name", "Notes"]
    rows = [
        ["desiree.blanc@example.com", "Désirée", "Blanc", "Chart ref 44\x8d"],
        ["ines.moreau@example.org", "Inès", "Moreau", ""],
        ["marc.olivier@example.net", "Marc\x8d", "Olivier", ""],
    ]
    return lines([minimal(head)] + [minimal(r) for r in rows], "\n").encode("latin-1")


# -- the practice's website and hand-made lists -------------------------------------------


def website_optin() -> bytes:
    """The opt-in box's export from the practice website: UTF-8, LF, one full name per row."""
    head = ["Date", "Name", "Email", "IP"]
    rows = [
        ["2025-01-06 08:14:22", "Jane Doe", "jane.doe@example.com", "198.51.100.23"],
        ["2025-01-07 19:02:51", "Kim, Soo-ah", "sooah.kim@example.org", "2001:db8::1c"],
        ["2025-01-09 12:40:03", "Luis Alberto Ramírez", "luis.ramirez@example.net", "198.51.100.77"],
        ["2025-01-12 07:55:10", "Cher", "cher@example.com", ""],
        ["2025-01-15 21:13:45", "priya sharma", "PRIYA.SHARMA@EXAMPLE.COM", "203.0.113.9"],
        ["2025-01-20 10:00:00", "Jane Doe", "jane.doe@example.com", "198.51.100.23"],
    ]
    return lines([minimal(head)] + [minimal(r) for r in rows], "\n").encode("utf-8")


def no_header() -> bytes:
    """Addresses pasted one per line into a text file (no header), as copied from a mail client."""
    rows = ["jane.doe@example.com", "carl.jung@example.org", "ruth.gold@example.net",
            "Omar Haddad <omar.haddad@example.com>", ""]
    return "\n".join(rows).encode("utf-8")


def address_forms() -> bytes:
    """Addresses the way people type or paste them, in a hand-made UTF-8 file (LF)."""
    head = ["Email", "Name", "Notes"]
    rows = [
        ["Jane Doe <jane.doe@example.com>", "", ""],
        [" mailto:carl.jung@example.org ", "Carl Jung", ""],
        ["   ruth.gold@example.net   ", "  Ruth   Gold  ", ""],
        ["JANE.DOE@EXAMPLE.COM", "Jane Doe", "typed again at the front desk"],
        ["josé@bücher.example", "José Bücher", ""],
        ["user@münchen.de", "Max Mustermann", ""],
        ["user@xn--mnchen-3ya.de", "Max Mustermann", "the same address, in ASCII form"],
        ['"O\'Hara, Maeve" <maeve.ohara@example.org>', "", ""],
        ["leo.marsh@example.com", "Marsh, Leo", "Likes: cupping, moxa\nDislikes: needles in feet"],
        ["mailto:Nina.Petrova@Example.com?subject=Subscribe", "Nina Petrova", ""],
    ]
    return lines([minimal(head)] + [minimal(r) for r in rows], "\n").encode("utf-8")


# -- mean files -------------------------------------------------------------------------


def empty() -> bytes:
    return b""


def whitespace_only() -> bytes:
    return b"\r\n   \r\n\t\n\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_image() -> bytes:
    """A 1x1 PNG (someone picked the clinic logo instead of the list); zlib stored block, so bytes never vary."""
    raw = b"\x00\xff\xff\xff"  # filter byte + one white RGB pixel
    stored = b"\x78\x01" + b"\x01" + struct.pack("<HH", len(raw), len(raw) ^ 0xFFFF) + raw
    stored += struct.pack(">I", zlib.adler32(raw))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", stored) + _png_chunk(b"IEND", b"")


def xlsx_workbook() -> bytes:
    """An Excel workbook renamed to .csv: a zip (stored, fixed dates, so bytes never vary)."""
    parts = {
        "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="xml" ContentType="application/xml"/></Types>',
        "xl/workbook.xml": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        '<sheets><sheet name="Patients" sheetId="1"/></sheets></workbook>',
        "xl/worksheets/sheet1.xml": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        '<row r="1"><c r="A1" t="inlineStr"><is><t>Email</t></is></c></row>'
        '<row r="2"><c r="A2" t="inlineStr"><is><t>jane.doe@example.com</t></is></c></row>'
        "</sheetData></worksheet>",
    }
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, text in parts.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0)), text)
    return buf.getvalue()


def header_only() -> bytes:
    """Mailchimp's cleaned-members file when nobody bounced: the header and nothing else."""
    head = MC_HEAD + ["CLEAN_TIME", "CLEAN_CAMPAIGN_TITLE", "CLEAN_CAMPAIGN_ID"] + MC_TAIL
    return (php_fputcsv(head) + "\n").encode("utf-8")


LONG_NOTE = ("Neck and shoulder pain, weekly sessions. " * 50)[:2000]


def long_fields() -> bytes:
    """A 2,000-character note (kept: nothing reads it) and a 2,000-character name (rejected)."""
    head = ["Email", "Name", "Notes"]
    rows = [
        ["long.notes@example.com", "Nora Long", LONG_NOTE],
        ["long.name@example.com", "N" * 2000, ""],
        ["short@example.com", "Sam Short", ""],
    ]
    return lines([minimal(head)] + [minimal(r) for r in rows], "\n").encode("utf-8")


def no_email_column() -> bytes:
    """A patient list exported without the address column."""
    head = ["Name", "Phone", "City", "Last visit"]
    rows = [["Jane Doe", "(201) 555-0100", "Closter", "2025-03-01"], ["Bob Stone", "(201) 555-0101", "Demarest", ""]]
    return lines([minimal(head)] + [minimal(r) for r in rows], "\n").encode("utf-8")


def control_chars() -> bytes:
    """Values that would split or end a mail header: CR/LF inside a quoted name, a NUL in a cell."""
    head = ["Email", "First Name", "Last Name"]
    rows = [
        ["ok.before@example.com", "Olga", "Kay"],
        ["eve@example.com", "Eve\r\nBcc: everyone@example.net", "Hacker"],
        ["lone.cr@example.com", "Ray", "Carr\rReturn"],
        ["nul.name@example.com", "Nu\x00ll", "Byte"],
        ["nul\x00addr@example.com", "Ned", "Null"],
        ["ok.after@example.com", "Otto", "Kay"],
    ]
    return lines([minimal(head)] + [minimal(r) for r in rows], "\r\n").encode("utf-8")


def formula_names() -> bytes:
    """Names a spreadsheet would run as formulas; mailer must keep them as text and neutralise them on export."""
    head = ["Email", "Name"]
    rows = [
        ["formula@example.com", '=HYPERLINK("http://evil.example","click")'],
        ["plus@example.com", "+Anna Lee"],
        ["minus@example.com", "-Ben Ross"],
        ["at@example.com", "@carla Diaz"],
    ]
    return lines([minimal(head)] + [minimal(r) for r in rows], "\n").encode("utf-8")


def ragged_rows() -> bytes:
    """Rows with fewer and more cells than the header, as a hand-edited file has them."""
    head = ["Email", "First Name", "Last Name", "Phone"]
    rows = [
        "ann.short@example.com,Ann",  # trailing cells left out
        "bo.berg@example.com,Bo,Berg,(201) 555-0122",
        "carl.lind@example.com,Carl,Lind, Jr.,(201) 555-0199",  # an unquoted comma shifts the cells
        "dina.fox@example.com,Dina,Fox,,,",  # extra empty cells: harmless
    ]
    return lines([minimal(head)] + rows, "\n").encode("utf-8")


def unbalanced_quote() -> bytes:
    """A quote opened and never closed: every later row would vanish into one cell."""
    rows = [
        "Email,Name,Notes",
        "first@example.com,Fay First,",
        'second@example.com,Sid Second,"prefers mornings',
        "third@example.com,Tia Third,",
        "fourth@example.com,Flo Fourth,",
    ]
    return lines(rows, "\n").encode("utf-8")


FIXTURES: dict[str, Callable[[], bytes]] = {
    "mailchimp_subscribed.csv": mailchimp_subscribed,
    "mailchimp_unsubscribed.csv": mailchimp_unsubscribed,
    "mailchimp_cleaned.csv": mailchimp_cleaned,
    "google_contacts.csv": google_contacts,
    "google_contacts_legacy.csv": google_contacts_legacy,
    "outlook_desktop.csv": outlook_desktop,
    "outlook_com.csv": outlook_com,
    "excel_utf8_semicolon.csv": excel_utf8_semicolon,
    "excel_unicode_text.txt": excel_unicode_text,
    "excel_legacy_cp1252.csv": excel_legacy_cp1252,
    "latin1_c1_byte.csv": latin1_c1_byte,
    "website_optin.csv": website_optin,
    "no_header.txt": no_header,
    "address_forms.csv": address_forms,
    "empty.csv": empty,
    "whitespace_only.csv": whitespace_only,
    "png_image.csv": png_image,
    "xlsx_workbook.csv": xlsx_workbook,
    "header_only.csv": header_only,
    "long_fields.csv": long_fields,
    "no_email_column.csv": no_email_column,
    "control_chars.csv": control_chars,
    "formula_names.csv": formula_names,
    "ragged_rows.csv": ragged_rows,
    "unbalanced_quote.csv": unbalanced_quote,
}


def build() -> dict[str, bytes]:
    """Every fixture's file name and exact bytes."""
    return {name: make() for name, make in FIXTURES.items()}


def main(out: Path = HERE) -> None:
    for name, data in build().items():
        (out / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
