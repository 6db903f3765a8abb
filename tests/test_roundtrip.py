"""export -> import into an empty workspace -> export gives the same file, for any names."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.csvio import EXPORT_COLUMNS, export_row, write_csv
from mailer.imports import import_file
from mailer.models import Subscriber
from mailer.store import Store
from mailer.validate import InvalidValue, RowDefaults, check_text, parse_tags

SECRET = b"s" * 32

# Anything a person might type, including what spreadsheets treat as formulas;
# control characters are refused by import, so they are not generated.
name_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029"),
    max_size=25,
) | st.sampled_from(["=1+1", "+1 555", "-Bo", "@home", "'quoted'", "''=x", 'Say "hi", ok; yes', "Zoë Ñúñez", "李小龍", "🙂🌿", "=HYPERLINK(\"http://x\",\"y\")"])


def storable(value: str) -> str | None:
    try:
        return check_text(value, "name", 100)
    except InvalidValue:
        return None


people = st.lists(
    st.tuples(name_text, name_text, st.sampled_from(["active", "unsubscribed", "bounced"]), st.lists(name_text, max_size=3)),
    min_size=1,
    max_size=8,
)


def export_text(store: Store) -> str:
    out = io.StringIO()
    write_csv(out, EXPORT_COLUMNS, (export_row(s) for s in store.subscribers.stream()))
    return out.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=people)
def test_export_import_export_is_stable(tmp_path_factory, people):
    d = tmp_path_factory.mktemp("rt")
    with Store.open(d / "a.db") as a:
        with a.transaction():
            for i, (first, last, status, tags) in enumerate(people):
                first, last = storable(first), storable(last)
                try:
                    clean_tags = parse_tags(tags)
                except InvalidValue:
                    clean_tags = ()
                if first is None or last is None:
                    continue
                a.subscribers.merge(
                    Subscriber(
                        email=f"user{i}@example.com", email_key=f"user{i}@example.com", first_name=first,
                        last_name=last, status=status, lists=("news",), tags=clean_tags, source=first,
                        unsubscribed_reason=last if status != "active" else "",
                    ),
                    SECRET, f"2026-01-0{1 + i % 9}T10:00:00Z", check_erased=False,
                )
        first_export = export_text(a)
    path = d / "export.csv"
    path.write_text(first_export, encoding="utf-8", newline="")
    with Store.open(d / "b.db") as b:
        summary = import_file(b, SECRET, path, RowDefaults(), "2030-01-01T00:00:00Z")
        assert summary.invalid == 0, summary.rejects
        assert export_text(b) == first_export
