"""People, as the front desk meets them (and their consent records).

Each test is a few `mailer ...` commands and what they print, exit with and store.
"""

from __future__ import annotations

import csv
import io
import json
import re
from email import policy
from email.parser import BytesParser

from tests.conftest import REPO
from tests.test_send import sample_workspace, sending, set_config  # noqa: F401 (fixtures)

SPECIALS = REPO / "examples" / "december-specials.md"
NEWS = REPO / "examples" / "monthly-news.md"


def write(path, text: str):
    path.write_text(text, encoding="utf-8", newline="")
    return path


def links_for(mailer, email: str, content=SPECIALS) -> tuple[str, str]:
    """The mailto: and https: unsubscribe links of the message `email` would get."""
    eml = mailer("preview", content, "--to", email, "--format", "eml").stdout_bytes
    header = BytesParser(policy=policy.default).parsebytes(eml)["List-Unsubscribe"]
    mailto = re.search(r"<(mailto:[^>]+)>", header).group(1)
    web = re.search(r"<(https:[^>]+)>", header)
    return mailto, web.group(1) if web else ""


# ---- 7. the unsubscribe token as people paste it ------------------------------------------


def test_unsubscribe_takes_the_subject_the_mailto_link_or_the_https_link(mailer):
    set_config(mailer.home, "unsubscribe", url="https://closter-acupuncture.example/unsubscribe")
    for who in ("ann@example.com", "bo@example.com", "cy@example.com"):
        mailer("subscribers", "add", who, "--consent", "Yes to news and specials")
    mailto, _ = links_for(mailer, "ann@example.com")
    subject = "unsubscribe " + mailto.split("unsubscribe%20", 1)[1]  # the subject as the mail arrives
    _, web = links_for(mailer, "bo@example.com")
    other_mailto, _ = links_for(mailer, "cy@example.com")

    for pasted, who in ((subject, "ann"), (web, "bo"), (other_mailto, "cy")):
        result = mailer("unsubscribe", pasted)
        assert result.exit_code == 0, (pasted, result.stderr)
        assert f"{who}@example.com: unsubscribed" in result.stderr
    assert [s["status"] for s in mailer.json("subscribers", "list")] == ["unsubscribed"] * 3
    assert mailer("unsubscribe", "unsubscribe not-a-token").exit_code == 2


# ---- 8. an erased person can come back, and the hints say how ----------------------------


def test_an_erased_person_comes_back_only_with_a_new_consent(mailer):
    mailer("subscribers", "add", "gone@example.com", "--consent", "Yes to news")
    assert mailer("subscribers", "erase", "gone@example.com", "--yes").exit_code == 0

    added = mailer("subscribers", "add", "gone@example.com")
    assert added.exit_code == 2
    assert "gone@example.com was erased" in added.stderr and '--consent "what they agreed to"' in added.stderr
    resubscribed = mailer("subscribers", "resubscribe", "gone@example.com")
    assert resubscribed.exit_code == 2
    assert "was erased, so there is nothing to resubscribe" in resubscribed.stderr
    assert "mailer subscribers add gone@example.com --consent" in resubscribed.stderr

    back = mailer("subscribers", "add", "gone@example.com", "--consent", "Specials by email, signed at the desk",
                  "--source", "front desk", "--list", "specials")
    assert back.exit_code == 0 and "gone@example.com: back on the list (new consent recorded)" in back.stderr
    shown = mailer.json("subscribers", "show", "gone@example.com")
    assert (shown["status"], shown["lists"], shown["consent_method"]) == ("active", ["specials"], "front-desk")
    assert shown["consent_text"] == "Specials by email, signed at the desk"
    assert shown["optin_time"] == "2026-11-25T15:00:00Z"
    assert [h["kind"] for h in shown["history"]] == ["consent", "added"]  # nothing from before the erasure


def test_an_unsubscribed_person_is_told_both_ways_back(mailer):
    mailer("subscribers", "add", "kim@example.com")
    mailer("subscribers", "unsubscribe", "kim@example.com", "--reason", "too many emails")
    result = mailer("subscribers", "add", "kim@example.com")
    assert result.exit_code == 2
    assert "resubscribe kim@example.com" in result.stderr and "--consent" in result.stderr
    back = mailer("subscribers", "add", "kim@example.com", "--consent", "Asked again at the desk")
    assert back.exit_code == 0 and "back on the list" in back.stderr
    assert mailer.json("subscribers", "show", "kim@example.com")["status"] == "active"


# ---- 11. one list, not everything ---------------------------------------------------------


def test_unsubscribe_from_one_list_keeps_the_other_and_an_import_does_not_undo_it(mailer, tmp_path):
    people = write(tmp_path / "people.csv", "email,name\nann@example.com,Ann Lee\nbo@example.com,Bo Yu\n")
    mailer("import", people)

    left = mailer("subscribers", "unsubscribe", "ann@example.com", "--list", "specials")

    assert left.exit_code == 0
    assert "ann@example.com: left specials; still on news" in left.stderr
    assert [s["email"] for s in mailer.json("subscribers", "list", "--list", "specials")] == ["bo@example.com"]
    assert [s["email"] for s in mailer.json("subscribers", "list", "--list", "news")] == ["ann@example.com", "bo@example.com"]
    mailer("import", people)  # the same export again: Ann stays off specials
    ann = mailer.json("subscribers", "show", "ann@example.com")
    assert (ann["status"], ann["lists"], ann["left_lists"]) == ("active", ["news"], ["specials"])

    joined = mailer("subscribers", "resubscribe", "ann@example.com", "--list", "specials")
    assert joined.exit_code == 0 and "joined specials" in joined.stderr
    assert mailer.json("subscribers", "show", "ann@example.com")["lists"] == ["news", "specials"]
    mailer("subscribers", "unsubscribe", "ann@example.com", "--list", "news")
    assert mailer("subscribers", "add", "ann@example.com", "--list", "news").exit_code == 0
    assert mailer.json("subscribers", "show", "ann@example.com")["lists"] == ["specials", "news"]


def test_the_footer_link_still_unsubscribes_from_everything(mailer):
    mailer("subscribers", "add", "mary@example.com")
    mailer("subscribers", "unsubscribe", "mary@example.com", "--list", "specials")
    mailto, _ = links_for(mailer, "mary@example.com", NEWS)
    assert mailer("unsubscribe", mailto).exit_code == 0
    assert mailer.json("subscribers", "show", "mary@example.com")["status"] == "unsubscribed"


def test_a_list_unknown_to_the_person_is_said_plainly(mailer):
    mailer("subscribers", "add", "mo@example.com", "--list", "news")
    result = mailer("subscribers", "unsubscribe", "mo@example.com", "--list", "specials")
    assert result.exit_code == 0 and "was not on specials; still on news" in result.stderr
    assert mailer("subscribers", "unsubscribe", "mo@example.com", "--list", "not a list!").exit_code == 2


# ---- 12. choose the email column ---------------------------------------------------------


def test_import_with_a_chosen_email_and_name_column(mailer, tmp_path):
    f = write(tmp_path / "desk.csv", "Contact,Patient,Phone\nann@example.com,Ann Lee,555\nbo@example.com,\"Yu, Bo\",556\n")
    plain = mailer("import", f)
    assert plain.exit_code == 2 and '--email-column "Contact"' in plain.stderr

    result = mailer("import", f, "--email-column", "Contact", "--name-column", "Patient", "--json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 2
    bo = mailer.json("subscribers", "show", "bo@example.com")
    assert (bo["first_name"], bo["last_name"]) == ("Bo", "Yu")
    wrong = mailer("import", f, "--email-column", "E-mail")
    assert wrong.exit_code == 2
    assert "--email-column 'E-mail' is not a column of this file" in wrong.stderr and "'Contact'" in wrong.stderr


# ---- 13. look-alike domains ---------------------------------------------------------------


def test_look_alike_domains_are_listed_and_fixed_only_when_asked(mailer, tmp_path):
    f = write(tmp_path / "site.csv", "email\njane.doe@gmial.com\nbob@yahoo.con\nok@gmail.com\nsam@mail.com\n")

    result = mailer("import", f)

    assert result.exit_code == 0
    assert "Addresses that look mistyped" not in result.stdout  # plain output: no titles
    assert "jane.doe@gmial.com\tjane.doe@gmail.com?" in result.stdout
    assert "bob@yahoo.con\tbob@yahoo.com?" in result.stdout and "sam@mail.com" not in result.stdout
    assert "2 address(es) look like a slip" in result.stderr and "--fix-typos" in result.stderr
    assert mailer("subscribers", "show", "jane.doe@gmial.com").exit_code == 0  # taken as written

    other = mailer.home.parent / "other"
    from tests.conftest import Mailer

    fixed_ws = Mailer(other, mailer.clock)
    fixed_ws("init", "--example")
    doc = fixed_ws.json("import", f, "--fix-typos")
    assert doc["typos"] == [
        {"line": 2, "email": "jane.doe@gmial.com", "suggestion": "jane.doe@gmail.com", "fixed": True},
        {"line": 3, "email": "bob@yahoo.con", "suggestion": "bob@yahoo.com", "fixed": True},
    ]
    emails = [s["email"] for s in fixed_ws.json("subscribers", "list")]
    assert emails == ["jane.doe@gmail.com", "bob@yahoo.com", "ok@gmail.com", "sam@mail.com"]


def test_add_warns_about_a_look_alike_and_fix_typos_applies_it(mailer):
    result = mailer("subscribers", "add", "pat@hotmial.com")
    assert result.exit_code == 0
    assert "pat@hotmial.com: did you mean pat@hotmail.com?" in result.stderr
    fixed = mailer("subscribers", "add", "lee@outlok.com", "--fix-typos")
    assert "stored as lee@outlook.com" in fixed.stderr
    assert [s["email"] for s in mailer.json("subscribers", "list")] == ["pat@hotmial.com", "lee@outlook.com"]


# ---- 14 and consent: what happened to one person ---------------------------------------


def test_show_lists_deliveries_consent_and_list_changes_newest_first(sending):
    m = sending.m
    who = "maria.russo@example.org"
    assert sending.send(sending.content).exit_code == 0
    sending.clock.advance(3600)
    m("subscribers", "unsubscribe", who, "--list", "news", "--reason", "only wants specials")
    sending.clock.advance(3600)
    m("subscribers", "add", who, "--consent", "Specials by email", "--consent-version", "2")

    doc = m.json("subscribers", "show", who)

    kinds = [(h["kind"], h["list"], h["status"]) for h in doc["history"]]
    assert kinds == [("consent", "", ""), ("left", "news", ""), ("delivery", "specials", "sent"), ("added", "", "")]
    delivery = doc["history"][2]
    assert delivery["campaign"] == 1 and delivery["campaign_name"] == "december-specials"
    assert delivery["detail"].startswith("250 ") and delivery["time"] == "2026-11-25T15:00:00Z"
    assert doc["consent_text"] == "Specials by email" and doc["consent_version"] == "2"
    human = m("subscribers", "show", who)
    assert human.exit_code == 0
    lines = human.stdout.splitlines()
    assert "optin_time: 2026-11-25 12:00 EST" in lines  # local time with its zone, for people
    assert "created_at: 2026-11-25 10:00 EST" in lines
    history = lines[lines.index("time\twhat\tlist\tcampaign\tstatus\tdetail") + 1:]
    assert history[0].startswith("2026-11-25 12:00 EST\tconsent\t\t\t\tfront-desk version 2: Specials by email")
    assert history[2].startswith("2026-11-25 10:00 EST\tdelivery\tspecials\t1 december-specials\tsent\t250 ")


def test_consent_columns_are_imported_shown_and_exported(mailer, tmp_path):
    f = write(tmp_path / "form.csv",
              "email,signup date,ip,form url,user agent,consent text,consent version,consent method\n"
              "ann@example.com,2026-01-05 10:00,203.0.113.9,https://closter-acupuncture.example/#optin,"
              "Mozilla/5.0,\"Submit your e-mail address for future specials, offers, and news\",v1,double opt-in\n"
              "bo@example.com,,,,,,,\n")

    doc = mailer.json("import", f)

    assert doc["no_consent"] == 1
    ann = mailer.json("subscribers", "show", "ann@example.com")
    assert (ann["consent_method"], ann["consent_version"], ann["consent_user_agent"]) == ("double-opt-in", "v1", "Mozilla/5.0")
    assert ann["consent_url"] == "https://closter-acupuncture.example/#optin"
    assert ann["consent_text"] == "Submit your e-mail address for future specials, offers, and news"
    assert mailer.json("subscribers", "show", "bo@example.com")["consent_method"] == "import"
    rows = list(csv.DictReader(io.StringIO(mailer("export").stdout)))
    assert rows[0]["consent_method"] == "double-opt-in" and rows[0]["optin_time"] == "2026-01-05T10:00:00Z"
    assert rows[1]["consent_method"] == "import" and rows[1]["consent_text"] == ""
    human = mailer("import", write(tmp_path / "more.csv", "email\ncy@example.com\n"))
    assert "1 row(s) carry no consent fact" in human.stderr and "consent method 'import'" in human.stderr
    bad = mailer.json("import", write(tmp_path / "bad.csv", "email,consent method\ndi@example.com,by pigeon\n"))
    assert bad["invalid"] == 1 and "consent method 'by-pigeon'" in bad["rejects"][0]["reason"]


def test_check_counts_the_audience_without_any_consent_fact(mailer, tmp_path):
    mailer("import", write(tmp_path / "old.csv", "email\nann@example.com\nbo@example.com\n"))
    mailer("subscribers", "add", "cy@example.com", "--consent", "Yes to specials")

    doc = json.loads(mailer("check", SPECIALS, "--json").stdout)

    [consent] = [c for c in doc["checks"] if c["check"] == "consent"]
    assert consent["level"] == "warning"
    assert consent["message"].startswith("2 of the 3 people on the specials list have no consent record")


def test_dry_run_import_ends_saying_nothing_was_written(mailer, tmp_path):
    result = mailer("import", write(tmp_path / "a.csv", "email\nann@example.com\n"), "--dry-run")
    assert result.exit_code == 0
    assert result.stderr.rstrip().splitlines()[-1] == "Dry run: nothing was written."
    assert mailer.json("subscribers", "list") == []
